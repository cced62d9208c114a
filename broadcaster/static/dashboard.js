"use strict";
// The live dashboard. Two views:
// - the fleet: every device with its current state (normal, the anomaly kind, the planned
//   event), a trace of one metric, its role and group; sortable and filterable, with a count
//   of devices in each state. Rows are drawn only where the list is scrolled to, so a fleet
//   of thousands costs what the screen shows. A click opens the device.
// - a device: four charts (uPlot) on the stream's own simulated UTC time, filled from the
//   window's start, anomalies shaded only on the metrics they alter, planned events as bars,
//   the scenario's planned events of the device listed.
// Data come from two WebSockets: the whole fleet (batched frames; resumed after the last seq
// of each device when it reconnects), and the device on view (its recent past from the
// producers' history, then live). Device ids are data: they are only ever set as text.

const TOKEN = new URLSearchParams(location.search).get("token");
const METRICS = ["cpu", "mem", "disk_io", "net"];
const UNITS = { cpu: "%", mem: "%", disk_io: "MB/s", net: "KB/s" };
const TRACE = 120;  // samples of each device kept for the fleet's traces
const KEEP = 1000;  // samples of the device on view: its charts' window
// Samples asked for per device when the fleet connection opens: enough for the traces, but
// at most HISTORY_BUDGET in all, which the broadcaster writes at once (past its buffer bound,
// 4 MiB by default, it would drop the page as too slow: 60 samples of 1,000 devices did).
const FLEET_HISTORY = 60;
const HISTORY_BUDGET = 10000;
const ROW = 26;  // px: a row of the fleet's table (dashboard.css)
const MAX_SINCE_CHARS = 6000;  // a longer query would not fit in the HTTP request line
const PERF_KEPT = 20000;  // measurements kept for a benchmark to read
const ALL_METRICS = 15;  // mask of an anomaly whose metrics are not known (an older log)

const collator = new Intl.Collator(undefined, { numeric: true });
const devices = new Map();  // id -> Device
const lastSeq = new Map();  // id -> last seq received on the fleet connection
let kindColors = {}, eventColors = {}, metricMasks = {};
let kinds = [], eventKinds = [];
let fleet = { devices: {}, anomaly_kinds: null, event_kinds: null, planned: [] };
let newestMs = null;  // the newest sample's timestamp (simulated time)
let lastArrival = null;
let dirty = true;

// What a test or a benchmark reads: the fleet connection's counts, what each view drew.
const state = window.dashboard = {
  samples: 0, connected: false, resumes: 0, gaps: [], jumps: 0, repeats: 0,
  view: null, device: null, scenario: null, counts: {}, frozen: false,
  shaded: [], shadedBy: {}, events: [], axis: [], axisLabel: "", deviceSamples: 0,
  legend: [], perf: { lags: [], arrivals: [], frames: [], work: [], render: [] },
};

function keep(list, value) {
  list.push(value);
  if (list.length > PERF_KEPT) list.splice(0, list.length - PERF_KEPT);
}

// Timestamps: "YYYY-MM-DD HH:MM:SS[.fff]" in UTC; the devices of a tick share one, so the
// last text parsed is remembered.
let stampText = null, stampMs = 0;
function stamp(text) {
  if (text !== stampText) { stampText = text; stampMs = Date.parse(text.replace(" ", "T") + "Z"); }
  return stampMs;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");
function utc(ms, withDate = true, millis = false) {
  const d = new Date(ms);
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const fraction = millis ? `.${pad(d.getUTCMilliseconds(), 3)}` : "";
  return withDate ? `${date} ${time}${fraction}` : `${time}${fraction}`;
}
function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${pad(Math.floor(s / 60) % 60)}m`;
}
function withToken(path) { return TOKEN ? `${path}?token=${encodeURIComponent(TOKEN)}` : path; }
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
function translucent(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${alpha})`;
}

// ---- what each device is doing -------------------------------------------------------

class Device {
  constructor(id) {
    this.id = id;
    this.ts = new Float64Array(TRACE);
    this.values = METRICS.map(() => new Float32Array(TRACE));
    this.kind = new Uint8Array(TRACE);  // 1 + index in `kinds` of the anomaly, 0: none
    this.mask = new Uint8Array(TRACE);  // metrics the anomaly alters
    this.head = 0; this.n = 0;
    this.last = null;  // the newest sample
    this.stateKey = "normal"; this.since = null;  // when (simulated ms) the state began
    this.what = "normal"; this.kindName = "normal"; this.stateRank = 0;
    this.idRank = 0; this.groupRank = 0;  // places in the orders by id and by group
    this.drawnSeq = null; this.drawnState = null;  // as the fleet view last drew it
  }

  push(sample, ms) {
    const i = this.head;
    this.ts[i] = ms;
    METRICS.forEach((m, k) => { this.values[k][i] = sample[m] === null ? NaN : sample[m]; });
    this.kind[i] = sample.anomaly ? kinds.indexOf(sample.anomaly) + 1 : 0;
    this.mask[i] = sample.anomaly ? (metricMasks[sample.anomaly_metrics] || ALL_METRICS) : 0;
    this.head = (i + 1) % TRACE; this.n = Math.min(this.n + 1, TRACE);
    this.last = sample;
    const key = stateOf(sample);
    if (key !== this.stateKey || this.since === null) {
      this.stateKey = key; this.since = ms;
      const { what, kind } = stateParts(key);
      this.what = what; this.kindName = kind;
      // anomalies first (in wire order of their kinds), then planned events, then normal
      this.stateRank = what === "anomaly" ? 1 + kinds.indexOf(kind)
        : what === "event" ? 100 + eventKinds.indexOf(kind) : 1000;
    }
  }

  // Samples per simulated second, from the timestamps of the trace.
  rate() {
    if (this.n < 2) return null;
    const first = this.ts[(this.head - this.n + TRACE) % TRACE], last = this.ts[(this.head - 1 + TRACE) % TRACE];
    return last > first ? (this.n - 1) * 1000 / (last - first) : null;
  }

  info() { return fleet.devices[this.id] || null; }
}

// A sample's state: its anomaly, else its planned event, else normal.
function altered(text) {  // "cpu|mem" as shown: "cpu, mem"; all four: "all metrics"
  if (!text) return "";
  return text.split("|").length === METRICS.length ? "all metrics" : text.replaceAll("|", ", ");
}

function stateOf(sample) {
  if (sample.anomaly) return `anomaly:${sample.anomaly}`;
  if (sample.event) return `event:${sample.event}`;
  return "normal";
}
function stateParts(key) {
  const [what, kind] = key.split(":");
  return { what, kind: kind || "normal" };
}

// Places of every device in the orders by id and by group (natural order: host-2 before
// host-10), worked out when a device or the fleet's description comes, not at every sort.
function rank() {
  const list = [...devices.values()].sort((a, b) => collator.compare(a.id, b.id));
  list.forEach((device, i) => { device.idRank = i; });
  const group = (d) => { const info = d.info(); return info ? info.group || "" : ""; };
  list.sort((a, b) => collator.compare(group(a), group(b)) || a.idRank - b.idRank);
  list.forEach((device, i) => { device.groupRank = i; });
}

function deviceOf(id) {
  let device = devices.get(id);
  if (!device) {
    device = new Device(id);
    devices.set(id, device);
    const option = document.createElement("option");
    option.value = option.textContent = id;
    picker.appendChild(option);
    if (!state.device) { state.device = id; picker.value = id; }
    fleetChanged = true;
  }
  return device;
}

// ---- the fleet connection -------------------------------------------------------------

// since= for everything after what we have: one bare seq for most devices, DEVICE:SEQ
// for the others; if too long, the lowest seq (the repeats are then dropped on arrival).
function resumeFrom(query, seqs) {
  const counts = new Map();
  for (const seq of seqs.values()) counts.set(seq, (counts.get(seq) || 0) + 1);
  let common = null;
  for (const [seq, n] of counts) if (common === null || n > counts.get(common)) common = seq;
  const exact = new URLSearchParams(query);
  exact.append("since", String(common));
  for (const [device, seq] of seqs) if (seq !== common) exact.append("since", `${device}:${seq}`);
  if (exact.toString().length - query.toString().length <= MAX_SINCE_CHARS) return [exact, false];
  query.append("since", String(Math.min(...seqs.values())));
  return [query, true];
}

function socketUrl(query) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  if (TOKEN) query.set("token", TOKEN);
  return `${scheme}://${location.host}/?${query}`;
}

function connect() {
  // labels=1: shade anomalies even where the stream is blind by default (--labels blind)
  let query = new URLSearchParams({ batch: "1", labels: "1" });
  let repeatsExpected = false;
  if (lastSeq.size) {
    [query, repeatsExpected] = resumeFrom(query, lastSeq);
    state.resumes += 1;
  } else {
    // Before the producers answer the fleet's size is not known: assume a large one.
    const known = Object.keys(fleet.devices || {}).length || 1000;
    const each = Math.floor(HISTORY_BUDGET / known);
    query.set("history", String(Math.max(1, Math.min(FLEET_HISTORY, each))));
  }
  const ws = new WebSocket(socketUrl(query));
  const status = document.getElementById("status");
  ws.onopen = () => { state.connected = true; status.textContent = "connected"; status.className = "connected"; };
  ws.onclose = () => {
    state.connected = false; status.textContent = "disconnected — retrying"; status.className = "disconnected";
    setTimeout(connect, 1000);
  };
  ws.onmessage = (event) => {
    const started = performance.now();
    const data = JSON.parse(event.data);
    if (data && data.gap) {  // what a resume or the live stream cannot give: named, then the rest follows
      state.gaps.push(...data.gap.ranges);
      for (const gap of data.gap.ranges) {  // the next sample of the device follows the gap
        if (gap.device !== null && gap.to_seq !== null && lastSeq.has(gap.device)) {
          lastSeq.set(gap.device, Math.max(lastSeq.get(gap.device), gap.to_seq));
        }
      }
      status.textContent = `connected (${state.gaps.length} gap(s) named by the server)`;
      return;
    }
    if (!Array.isArray(data)) return;  // an error or a confirmation
    let newest = null;
    for (const sample of data) {
      const previous = lastSeq.get(sample.device);
      if (previous !== undefined && sample.seq <= previous) {
        if (!repeatsExpected) state.repeats += 1;
        continue;
      }
      if (previous !== undefined && sample.seq !== previous + 1) state.jumps += 1;
      lastSeq.set(sample.device, sample.seq);
      const ms = stamp(sample.timestamp);
      deviceOf(sample.device).push(sample, ms);
      if (newest === null || ms > newest) newest = ms;
      state.samples += 1;
    }
    if (newest !== null) {
      if (newestMs === null || newest > newestMs) newestMs = newest;
      keep(state.perf.arrivals, Date.now() - newest);
      lastArrival = Date.now();
      dirty = true;
    }
    keep(state.perf.work, performance.now() - started);
  };
}

// ---- the device on view: its own connection ------------------------------------------

class Series {
  constructor(id) {
    this.id = id;
    this.x = []; this.y = METRICS.map(() => []);
    this.kind = []; this.ids = []; this.mask = []; this.event = [];
    this.seq = -1;
  }

  push(sample) {
    if (sample.seq <= this.seq) return false;  // the history and the live stream overlap
    this.seq = sample.seq;
    this.x.push(stamp(sample.timestamp) / 1000);
    METRICS.forEach((m, k) => this.y[k].push(sample[m]));
    this.kind.push(sample.anomaly); this.ids.push(sample.anomaly_id);
    this.mask.push(sample.anomaly ? (metricMasks[sample.anomaly_metrics] || ALL_METRICS) : 0);
    this.event.push(sample.event);
    return true;
  }

  trim() {
    const extra = this.x.length - KEEP;
    if (extra <= 0) return;
    for (const list of [this.x, ...this.y, this.kind, this.ids, this.mask, this.event]) list.splice(0, extra);
  }

  // The span of each anomaly (its samples by anomaly_id, joined across the samples inside
  // it that it happened to leave unchanged, as the windows file joins them), or of each run
  // of consecutive samples in one planned event: {from, to, kind, mask}.
  runs(key) {
    const events = key === "event";
    const list = events ? this.event : this.ids;
    const out = [];
    for (let i = 0; i < list.length; i++) {
      if (!list[i]) continue;
      const last = out[out.length - 1];
      if (last && last.id === list[i] && (!events || last.to === i - 1)) { last.to = i; continue; }
      out.push({ id: list[i], from: i, to: i, kind: key === "event" ? list[i] : this.kind[i], mask: this.mask[i] });
    }
    return out;
  }
}

let series = null, deviceSocket = null, deviceDirty = false;

function openDevice(id) {
  if (deviceSocket) { deviceSocket.onclose = null; deviceSocket.close(); deviceSocket = null; }
  series = new Series(id);
  state.deviceSamples = 0;
  streamDevice(series);
  deviceDirty = true;
}

function streamDevice(target) {
  const query = new URLSearchParams({ batch: "1", labels: "1", devices: target.id });
  const known = target.seq >= 0 ? target.seq : lastSeq.get(target.id);
  if (known !== undefined) {
    // The window's worth before what we have, from the producers' history, then live.
    query.append("since", `${target.id}:${target.seq >= 0 ? target.seq : Math.max(-1, known - KEEP)}`);
  } else {
    query.set("history", String(KEEP));
  }
  const ws = new WebSocket(socketUrl(query));
  deviceSocket = ws;
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (!Array.isArray(data) || series !== target) return;
    for (const sample of data) if (target.push(sample)) state.deviceSamples += 1;
    target.trim();
    deviceDirty = true;
  };
  ws.onclose = () => {
    if (series === target) setTimeout(() => { if (series === target) streamDevice(target); }, 1000);
  };
}

// ---- the fleet view -------------------------------------------------------------------

const rowsBox = document.getElementById("rows");
const spacer = document.getElementById("spacer");
const pool = [];  // row elements, reused as the list scrolls
let fleetChanged = true;
let filter = { state: "all", text: "", group: "" };
let order = "state";
let traced = "cpu";

function rowElement() {
  const row = el("div", "row");
  const cells = {};
  for (const name of ["device", "group", "state", "since", "trace", "value"]) {
    cells[name] = row.appendChild(el("span", `c-${name}`));
  }
  cells.chip = cells.state.appendChild(el("span", "chip"));
  cells.canvas = cells.trace.appendChild(document.createElement("canvas"));
  row.cells = cells;
  row.shown = {};  // the texts it shows, to write the DOM only where they change
  row.addEventListener("click", () => { location.hash = `device=${encodeURIComponent(row.dataset.device)}`; });
  rowsBox.appendChild(row);
  return row;
}

function matches(device) {
  if (filter.state === "anomalous" && device.what !== "anomaly") return false;
  if (filter.state === "normal" && device.what !== "normal") return false;
  if (filter.state.includes(":") && device.stateKey !== filter.state) return false;
  if (!filter.group && !filter.text) return true;
  const info = device.info();
  if (filter.group) {  // "group:web" or "role:db"
    const [what, name] = [filter.group.slice(0, filter.group.indexOf(":")), filter.group.slice(filter.group.indexOf(":") + 1)];
    if (!info || info[what] !== name) return false;
  }
  if (filter.text) {
    const text = `${device.id} ${info ? `${info.role} ${info.group}` : ""} ${device.kindName}`;
    if (!text.toLowerCase().includes(filter.text)) return false;
  }
  return true;
}

const ORDERS = {
  device: (a, b) => a.idRank - b.idRank,
  group: (a, b) => a.groupRank - b.groupRank,
  state: (a, b) => a.stateRank - b.stateRank || a.idRank - b.idRank,
  since: (a, b) => (a.since ?? 0) - (b.since ?? 0) || a.idRank - b.idRank,
  value: (a, b) => b.sortValue - a.sortValue || a.idRank - b.idRank,
};
function sorted(list) {
  if (order === "value") {
    for (const d of list) {
      const v = d.last ? d.last[traced] : null;
      d.sortValue = v === null || v === undefined ? -Infinity : v;
    }
  }
  return list.sort(ORDERS[order]);
}

function colorOf(key) {
  const { what, kind } = stateParts(key);
  if (what === "anomaly") return kindColors[kind] || "#888888";
  if (what === "event") return eventColors[kind] || "#888888";
  return null;
}

function reorder() {  // the list asked for changed: sort and filter now, held or not
  visibleList = [];
  dirty = true;
}

function renderCounts() {
  const counts = { all: 0, anomalous: 0, normal: 0 };
  for (const device of devices.values()) {
    counts.all += 1;
    if (device.what === "anomaly") counts.anomalous += 1;
    counts[device.stateKey] = (counts[device.stateKey] || 0) + 1;  // "normal" among them
  }
  state.counts = counts;
  const box = document.getElementById("counts");
  const chips = [["all", "all"], ["normal", "normal"], ["anomalous", "anomalous"]];
  for (const kind of possibleKinds()) chips.push([`anomaly:${kind}`, kind]);
  for (const kind of possibleEvents()) chips.push([`event:${kind}`, kind]);
  if (box.dataset.keys !== chips.map((c) => c[0]).join()) {  // the set of states changed
    box.textContent = "";
    for (const [key, label] of chips) {
      const button = el("button");
      button.dataset.state = key;
      const color = colorOf(key);
      if (color) {
        const swatch = button.appendChild(el("span", key.startsWith("event:") ? "swatch bar" : "swatch"));
        swatch.style.background = color;
      }
      button.appendChild(el("span", "", label));
      button.appendChild(el("b"));
      button.onclick = () => { filter.state = filter.state === key ? "all" : key; reorder(); };
      box.appendChild(button);
    }
    box.dataset.keys = chips.map((c) => c[0]).join();
  }
  for (const button of box.children) {
    button.querySelector("b").textContent = String(counts[button.dataset.state] || 0);
    button.classList.toggle("active", filter.state === button.dataset.state);
  }
  document.getElementById("fleet-size").textContent = `(${counts.all})`;
}

let visibleList = [];
let ranked = 0;  // devices when the orders were last worked out
function renderFleet() {
  if (ranked !== devices.size || fleetChanged) { rank(); ranked = devices.size; }
  renderCounts();
  for (const device of devices.values()) {  // what this drawing shows, for a test to compare
    device.drawnSeq = device.last ? device.last.seq : null;
    device.drawnState = device.stateKey;
  }
  // While the pointer is on the list its rows keep their places (a row would otherwise move
  // away under a click); their contents stay live.
  if (!state.frozen || visibleList.length === 0) visibleList = sorted([...devices.values()].filter(matches));
  document.getElementById("shown").textContent = `${visibleList.length} of ${devices.size} shown`;
  spacer.style.height = `${visibleList.length * ROW}px`;
  const first = Math.max(0, Math.floor(rowsBox.scrollTop / ROW) - 2);
  const count = Math.ceil(rowsBox.clientHeight / ROW) + 4;
  const shown = visibleList.slice(first, first + count);
  while (pool.length < shown.length) pool.push(rowElement());
  pool.forEach((row, i) => {
    const device = shown[i];
    if (!device) { row.hidden = true; return; }
    row.hidden = false;
    row.style.top = `${(first + i) * ROW}px`;
    fillRow(row, device);
  });
}

function setText(row, name, text) {  // DOM writes only where the text changed
  if (row.shown[name] !== text) { row.shown[name] = text; row.cells[name].textContent = text; }
}

function fillRow(row, device) {
  const cells = row.cells, info = device.info();
  if (row.shown.device !== device.id) {
    row.dataset.device = device.id;
    setText(row, "device", device.id);
  }
  row.dataset.seq = String(device.drawnSeq);
  setText(row, "group", info ? (info.group === info.role ? info.role : `${info.group} / ${info.role}`) : "–");
  const label = device.what === "anomaly" && device.last.anomaly_metrics
    ? `${device.kindName} (${altered(device.last.anomaly_metrics)})` : device.kindName;
  if (row.shown.state !== device.stateKey || row.shown.chip !== label) {
    row.shown.state = device.stateKey;
    row.dataset.state = device.stateKey;
    const color = colorOf(device.stateKey);
    cells.chip.className = `chip ${device.what}`;
    cells.chip.style.borderLeftColor = color || "transparent";
    cells.chip.style.background = color ? translucent(color, 0.25) : "transparent";
    setText(row, "chip", label);
  }
  setText(row, "since", device.since !== null && newestMs !== null ? span(newestMs - device.since) : "");
  const value = device.last ? device.last[traced] : null;
  setText(row, "value", value === null || value === undefined ? "–" : `${value} ${UNITS[traced]}`);
  drawTrace(cells.canvas, device);
}

function drawTrace(canvas, device) {
  const ratio = window.devicePixelRatio || 1, w = 170, h = 22;
  if (canvas.width !== w * ratio) { canvas.width = w * ratio; canvas.height = h * ratio; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const n = device.n;
  if (n < 1) return;
  const k = METRICS.indexOf(traced), bit = 1 << k;
  const at = (j) => (device.head - n + j + TRACE) % TRACE;
  const t0 = device.ts[at(0)], t1 = device.ts[at(n - 1)];
  const values = device.values[k];
  let lo = Infinity, hi = -Infinity;
  for (let j = 0; j < n; j++) { const v = values[at(j)]; if (v === v) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
  if (traced === "cpu" || traced === "mem") { lo = 0; hi = 100; }
  if (!(hi > lo)) { hi = lo + 1; }
  const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * (w - 2) + 1 : w - 1);
  const y = (v) => h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
  const step = n > 1 ? (w - 2) / (n - 1) : 2;
  for (let j = 0; j < n;) {  // runs of samples whose anomaly alters this metric, shaded
    const i = at(j), code = device.mask[i] & bit ? device.kind[i] : 0;
    let end = j + 1;
    while (end < n && (device.mask[at(end)] & bit ? device.kind[at(end)] : 0) === code) end += 1;
    if (code) {
      ctx.fillStyle = translucent(kindColors[kinds[code - 1]] || "#888888", 0.45);
      const x0 = x(device.ts[i]) - step / 2;
      ctx.fillRect(x0, 0, Math.max(x(device.ts[at(end - 1)]) + step / 2 - x0, 1.5), h);
    }
    j = end;
  }
  ctx.strokeStyle = "#222"; ctx.lineWidth = 1; ctx.beginPath();
  let pen = false;
  for (let j = 0; j < n; j++) {
    const i = at(j), v = values[i];
    if (v !== v) { pen = false; continue; }  // no value (a dropout): a break in the line
    if (pen) ctx.lineTo(x(device.ts[i]), y(v)); else ctx.moveTo(x(device.ts[i]), y(v));
    pen = true;
  }
  ctx.stroke();
}

// ---- the device view ------------------------------------------------------------------

const charts = {};  // metric -> uPlot
const picker = document.getElementById("device");
picker.onchange = () => { location.hash = `device=${encodeURIComponent(picker.value)}`; };

function axisTimes(u, splits) {
  const range = (u.scales.x.max - u.scales.x.min) || 1;
  const labels = splits.map((s) => (s === null ? null : utc(s * 1000, false, range < 10)));
  if (u === charts.cpu) state.axis = labels.filter((l) => l !== null);
  return labels;
}

function bandsPlugin(metric) {
  const bit = 1 << METRICS.indexOf(metric);
  return {
    hooks: {
      drawClear: [(u) => {
        if (!series || !series.x.length) return;
        const ctx = u.ctx, { left, top, width, height } = u.bbox;
        const ratio = window.devicePixelRatio || 1;
        const gap = series.x.length > 1 ? (series.x[series.x.length - 1] - series.x[0]) / (series.x.length - 1) : 1;
        const pos = (i, side) => u.valToPos(series.x[i] + side * gap / 2, "x", true);
        ctx.save();
        ctx.beginPath(); ctx.rect(left, top, width, height); ctx.clip();
        ctx.font = `${10 * ratio}px system-ui`;
        ctx.textAlign = "left";  // uPlot leaves its axes' alignment on the context
        ctx.textBaseline = "alphabetic";
        const drawn = [];
        for (const run of series.runs("anomaly")) {
          if (!(run.mask & bit)) continue;  // this anomaly leaves this metric alone
          const color = kindColors[run.kind] || "#888888";
          const x0 = pos(run.from, -1), x1 = Math.max(pos(run.to, 1), x0 + 2 * ratio);
          ctx.fillStyle = translucent(color, 0.3);
          ctx.fillRect(x0, top, x1 - x0, height);
          ctx.fillStyle = color;
          ctx.fillRect(x0, top, x1 - x0, 4 * ratio);  // a solid ribbon: the colour, readable
          const text = Math.max(x0, left) + 2 * ratio;
          if (x1 - text > ctx.measureText(run.kind).width) {  // named where it fits
            ctx.fillStyle = "#222";
            ctx.fillText(run.kind, text, top + 14 * ratio);
          }
          drawn.push(run.kind);
        }
        const planned = series.runs("event");
        for (const run of planned) {
          const color = eventColors[run.kind] || "#888888";
          const x0 = pos(run.from, -1), x1 = Math.max(pos(run.to, 1), x0 + 2 * ratio);
          ctx.fillStyle = color;
          ctx.fillRect(x0, top + height - 6 * ratio, x1 - x0, 6 * ratio);
          const text = Math.max(x0, left) + 2 * ratio;
          if (x1 - text > ctx.measureText(run.kind).width) {
            ctx.fillStyle = "#222";
            ctx.fillText(run.kind, text, top + height - 9 * ratio);
          }
        }
        ctx.restore();
        state.shadedBy[metric] = drawn;
        if (metric === "cpu") state.events = planned.map((r) => r.kind);
      }],
    },
  };
}

function makeCharts() {
  const box = document.getElementById("charts");
  const width = Math.max(300, (box.clientWidth || document.body.clientWidth - 40) - 2);
  for (const metric of METRICS) {
    const holder = box.appendChild(el("div", "chart"));
    holder.appendChild(el("h2", "", `${metric} ${UNITS[metric]}`));
    const fixed = metric === "cpu" || metric === "mem";
    charts[metric] = new uPlot({
      width, height: 150,
      legend: { show: false },
      cursor: { sync: { key: "device" }, drag: { x: false, y: false } },
      scales: { x: { time: true }, y: fixed ? { range: [0, 100] } : { auto: true } },
      series: [{}, { label: metric, stroke: "#222", width: 1, spanGaps: false, points: { show: false } }],
      axes: [
        { values: axisTimes, space: 90, size: 30 },
        { size: 50 },
      ],
      plugins: [bandsPlugin(metric)],
    }, [[], []], holder);
    charts[metric].root.dataset.metric = metric;
  }
  // As wide as their box, whatever changes it (the window, a scroll bar appearing).
  new ResizeObserver(() => {
    const w = Math.max(300, box.clientWidth - 2);
    for (const chart of Object.values(charts)) {
      if (chart.width !== w) chart.setSize({ width: w, height: 150 });
    }
  }).observe(box);
}

function renderDevice() {
  if (!series) return;
  const id = series.id, device = devices.get(id);
  if (!Object.keys(charts).length) makeCharts();
  state.device = id;
  if (picker.value !== id) picker.value = id;
  for (const [k, metric] of METRICS.entries()) {
    const chart = charts[metric];
    chart.setData([series.x, series.y[k]]);
  }
  const runs = series.runs("anomaly");
  state.shaded = [...new Set(runs.map((r) => r.kind))];
  const first = series.x[0], last = series.x[series.x.length - 1];
  state.axisLabel = first === undefined ? "" : `time axis: the stream's simulated time, UTC, ${utc(first * 1000)} – ${utc(last * 1000, false)}`;
  document.getElementById("axis-caption").textContent = state.axisLabel;
  renderDeviceInfo(device);
}

function renderDeviceInfo(device) {
  const box = document.getElementById("device-info");
  box.textContent = "";
  const id = series.id, info = fleet.devices[id];
  const add = (label, value) => {
    const part = box.appendChild(el("span", "", `${label} `));
    part.appendChild(el("b", "", value));
    box.appendChild(document.createTextNode("   "));
  };
  if (info) add("role", info.group && info.group !== info.role ? `${info.role}, group ${info.group}` : info.role);
  if (device) {
    const { what, kind } = stateParts(device.stateKey);
    const metrics = what === "anomaly" && device.last.anomaly_metrics ? ` (${altered(device.last.anomaly_metrics)})` : "";
    add("state", `${kind}${metrics}, for ${span((newestMs ?? device.since) - device.since)}`);
    const rate = device.rate();
    add("device rate", rate === null ? "–" : `${rate.toFixed(1)} samples/s (simulated)`);
  }
  if (fleet.rate) add("configured", `${fleet.rate} Hz per device${fleet.speed && fleet.speed !== 1 ? `, ×${fleet.speed} speed` : ""}`);
  renderPlanned(id);
}

function renderPlanned(id) {
  const box = document.getElementById("planned");
  const mine = (fleet.planned || []).filter((p) => p.device === id);
  box.textContent = "";
  if (!mine.length) return;
  box.appendChild(el("h2", "", "the scenario's planned events for this device"));
  const table = box.appendChild(el("table"));
  const head = table.appendChild(el("tr"));
  for (const title of ["event", "from (UTC)", "to", ""]) head.appendChild(el("th", "", title));
  for (const p of mine) {
    const row = table.appendChild(el("tr"));
    const swatch = el("span", "swatch bar"); swatch.style.background = eventColors[p.kind] || "#888";
    const name = el("td"); name.append(swatch, ` ${p.kind}`); row.appendChild(name);
    row.appendChild(el("td", "", utc(p.start_ms)));
    row.appendChild(el("td", "", utc(p.end_ms, false)));
    let when = "";
    if (newestMs !== null) {
      if (newestMs < p.start_ms) when = `in ${span(p.start_ms - newestMs)}`;
      else if (newestMs < p.end_ms) when = "now";
      else when = `${span(newestMs - p.end_ms)} ago`;
    }
    row.appendChild(el("td", "", when));
  }
}

// The kinds this stream can hold: what the producers say theirs can make, and whatever
// arrives (an anomaly injected with ctl, a replayed file's labels).
function possibleKinds() {
  const seen = new Set();
  for (const device of devices.values()) {
    const { what, kind } = stateParts(device.stateKey);
    if (what === "anomaly") seen.add(kind);
  }
  if (series) for (const kind of series.kind) if (kind) seen.add(kind);
  for (const kind of fleet.anomaly_kinds || []) seen.add(kind);
  return kinds.filter((k) => seen.has(k));
}
function possibleEvents() {
  const seen = new Set(fleet.event_kinds || []);
  for (const device of devices.values()) {
    const { what, kind } = stateParts(device.stateKey);
    if (what === "event") seen.add(kind);
  }
  if (series) for (const kind of series.event) if (kind) seen.add(kind);
  return eventKinds.filter((k) => seen.has(k));
}

function renderLegend() {
  const box = document.getElementById("legend");
  const anomalies = possibleKinds(), planned = possibleEvents();
  const key = [...anomalies, "|", ...planned].join();
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.textContent = "";
  for (const kind of anomalies) {
    const item = box.appendChild(el("span"));
    const swatch = item.appendChild(el("span", "swatch")); swatch.style.background = kindColors[kind];
    item.appendChild(el("span", "", kind));
  }
  for (const kind of planned) {
    const item = box.appendChild(el("span"));
    const swatch = item.appendChild(el("span", "swatch bar")); swatch.style.background = eventColors[kind];
    item.appendChild(el("span", "", kind));
  }
  state.legend = [...anomalies, ...planned];
}

// ---- header, views, the drawing loop --------------------------------------------------

function renderHeader() {
  document.getElementById("simtime").textContent = newestMs === null ? "–"
    : `${utc(newestMs, true, true)} UTC${fleet.speed && fleet.speed !== 1 ? ` (×${fleet.speed})` : ""}`;
  let total = 0, known = 0;
  for (const device of devices.values()) { const r = device.rate(); if (r !== null) { total += r; known += 1; } }
  document.getElementById("fleet-rate").textContent = known
    ? `${total.toFixed(total < 100 ? 1 : 0)} samples/s (simulated) from ${devices.size} device(s)` : "–";
  document.getElementById("age").textContent =
    lastArrival === null ? "–" : `${((Date.now() - lastArrival) / 1000).toFixed(1)} s`;
}

function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  let view = null, id = null;
  if (hash.startsWith("device=")) { view = "device"; id = hash.slice(7); }
  else if (hash === "device") { view = "device"; id = state.device; }
  else if (hash === "fleet") view = "fleet";
  else if (devices.size) view = devices.size > 1 || (fleet.devices && Object.keys(fleet.devices).length > 1) ? "fleet" : "device";
  if (view === "device" && !id) id = state.device;
  if (view === "device" && id && (!series || series.id !== id)) openDevice(id);
  if (view !== state.view) {
    state.view = view;
    document.getElementById("fleet-view").hidden = view !== "fleet";
    document.getElementById("device-view").hidden = view !== "device";
    document.getElementById("to-fleet").classList.toggle("active", view === "fleet");
    document.getElementById("to-device").classList.toggle("active", view === "device");
    if (view !== "device" && deviceSocket) {  // nobody looks: no second stream
      deviceSocket.onclose = null; deviceSocket.close(); deviceSocket = null; series = null;
    }
  }
  if (view === "device" && id) state.device = id;
  dirty = true;
}
window.addEventListener("hashchange", route);
document.getElementById("to-device").onclick = (event) => {
  event.preventDefault();
  if (state.device) location.hash = `device=${encodeURIComponent(state.device)}`;
};

let lastFrame = performance.now(), lastRender = 0, scrolled = false;
function frame(now) {
  requestAnimationFrame(frame);
  keep(state.perf.frames, now - lastFrame);
  lastFrame = now;
  if (state.view === null && devices.size) route();
  if (!dirty && !deviceDirty && !fleetChanged) return;
  // The fleet's table at most ten times a second (the eye reads no faster), the charts at
  // most thirty: a fast stream costs the page what it shows, not what arrives.
  if (now - lastRender < (state.view === "fleet" ? 100 : 33) && !scrolled) return;
  scrolled = false;
  lastRender = now;
  const started = performance.now();
  if (state.view === "fleet") renderFleet();
  if (state.view === "device" && (deviceDirty || dirty)) { renderLegend(); renderDevice(); }
  if (state.view !== "fleet" && (dirty || fleetChanged)) renderCounts();
  dirty = deviceDirty = fleetChanged = false;
  keep(state.perf.render, performance.now() - started);
  if (newestMs !== null) keep(state.perf.lags, Date.now() - newestMs);
}

// For a test: the colour at the top of a chart (an anomaly's ribbon) at time `seconds`.
state.ribbon = (metric, seconds) => {
  const chart = charts[metric];
  if (!chart) return null;
  const x = Math.round(chart.valToPos(seconds, "x", true)), y = Math.round(chart.bbox.top + 2);
  return Array.from(chart.ctx.getImageData(x, y, 1, 1).data);
};
state.window = () => (series && series.x.length ? [series.x[0], series.x[series.x.length - 1]] : null);

// For a test: what the fleet view drew of every device (its seq and state), and the rows.
state.fleetSnapshot = () => {
  const drawn = {};
  for (const device of devices.values()) drawn[device.id] = [device.drawnSeq, device.drawnState];
  return drawn;
};

function setUp(schema) {
  kinds = schema.anomaly_kinds; eventKinds = schema.event_kinds || [];
  kindColors = schema.colors.anomaly; eventColors = schema.colors.event;
  // "cpu|mem" -> its bit mask: the list is every set of metrics, by mask
  (schema.anomaly_metrics || []).forEach((text, i) => { metricMasks[text] = i + 1; });
  if (schema.scenario) {
    state.scenario = schema.scenario;
    document.getElementById("scenario").textContent = `scenario: ${schema.scenario}`;
  }
  const select = document.getElementById("trace-metric");
  for (const metric of METRICS) select.appendChild(el("option", "", metric)).value = metric;
  select.onchange = () => { traced = select.value; reorder(); };
  document.getElementById("sort").onchange = (e) => { order = e.target.value; reorder(); };
  for (const head of document.querySelectorAll("#table-head [data-sort]")) {
    head.onclick = () => { order = head.dataset.sort; document.getElementById("sort").value = order; reorder(); };
  }
  document.getElementById("search").oninput = (e) => { filter.text = e.target.value.trim().toLowerCase(); reorder(); };
  document.getElementById("group").onchange = (e) => { filter.group = e.target.value; reorder(); };
  rowsBox.addEventListener("scroll", () => { dirty = true; scrolled = true; });
  rowsBox.addEventListener("pointerenter", () => { state.frozen = true; });
  rowsBox.addEventListener("pointerleave", () => { state.frozen = false; dirty = true; });
}

function askFleet() {
  return fetch(withToken("fleet.json")).then((r) => r.json()).then((info) => {
    fleet = info;
    if (info.scenario && !state.scenario) {
      state.scenario = info.scenario;
      document.getElementById("scenario").textContent = `scenario: ${info.scenario}`;
    }
    // The filter by role, and by scenario group where groups are not simply the roles.
    const described = Object.values(info.devices || {});
    const names = (key) => [...new Set(described.map((d) => d[key]).filter(Boolean))].sort(collator.compare);
    const roles = names("role"), groups = names("group");
    const choices = roles.map((r) => `role:${r}`);
    if (groups.join() !== roles.join()) choices.push(...groups.map((g) => `group:${g}`));
    const select = document.getElementById("group");
    if (select.dataset.choices !== choices.join()) {
      select.dataset.choices = choices.join();
      select.length = 1;
      for (const choice of choices) {
        const [what, name] = [choice.slice(0, choice.indexOf(":")), choice.slice(choice.indexOf(":") + 1)];
        select.appendChild(el("option", "", `${what} ${name}`)).value = choice;
      }
    }
    fleetChanged = true;
    // every few seconds until the producers answered, then now and then (a ctl rate change)
    setTimeout(askFleet, info.answered && info.answered === info.producers ? 30000 : 2000);
  }).catch(() => setTimeout(askFleet, 2000));
}

fetch(withToken("schema.json")).then((r) => r.json()).then(async (schema) => {
  setUp(schema);
  await askFleet();  // the fleet's size first: it sets how much history to ask for
  connect();
  if (location.hash) route();
  requestAnimationFrame(frame);
  setInterval(() => { renderHeader(); if (state.view === "device" && series) renderDeviceInfo(devices.get(series.id)); }, 250);
});
