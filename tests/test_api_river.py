"""River on our stream: the live stream as a River dataset runs HalfSpaceTrees under River's
progressive evaluation unchanged, and a generated training set replays as the same pairs."""

from __future__ import annotations

import math

from river import anomaly, compose, evaluate, metrics, preprocessing

import streamsim


def detector() -> compose.Pipeline:
    return compose.Pipeline(
        preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(n_trees=10, height=6, seed=42)
    )


def test_river_progressive_evaluation_runs_on_the_live_stream():
    """A pipeline started from Python streams 1,500 samples (12 simulated minutes of two
    devices with dense anomalies, fast-forwarded)
    into River's progressive_val_score with HalfSpaceTrees: every sample scored, ROC AUC
    computed from the labels, the dataset's stream seen whole."""
    with streamsim.Pipeline(
        devices=2, rate=1, speed=300, seed=1, anomaly_rate=60, start="2025-08-04"
    ) as pipeline:
        dataset = streamsim.LiveDataset(pipeline.url, count=1500, timeout=60)
        assert (dataset.task, dataset.n_features, dataset.n_samples) == (
            "Binary classification",
            4,
            1500,
        )
        auc = metrics.ROCAUC()
        steps = list(evaluate.iter_progressive_val_score(dataset, detector(), auc, step=500))
        assert [s["Step"] for s in steps] == [500, 1000, 1500]
        assert 0.0 <= auc.get() <= 1.0 and not math.isnan(auc.get())
        assert dataset.last is not None and dataset.last.received == 1500
        assert dataset.last.gaps == []
        again = sum(y for _, y in dataset)  # each iteration a stream of its own
        assert again > 0 and dataset.last.received == 1500  # the labels reach y


def test_a_training_set_replays_as_the_pairs_the_stream_gives():
    """pairs(frame) of a generated set equals xy() of each row as a dict, a missing value left
    out of x; HalfSpaceTrees learning and scoring those pairs offline finds the spikes better
    than chance (x and y belong together)."""
    samples, _ = streamsim.generate(
        "20m", devices=2, seed=5, start="2025-08-04", anomaly_rate=30, anomaly_kinds="spike,dropout"
    )
    pairs = list(streamsim.pairs(samples))
    rows = samples.astype(object).where(samples.notna(), None).to_dict("records")
    assert pairs == [streamsim.xy(row) for row in rows]
    assert any(len(x) == 0 for x, _ in pairs)  # a dropout: no metric at all
    assert sum(y for _, y in pairs) == samples["anomaly"].notna().sum() > 0
    spikes, _ = streamsim.generate(
        "20m", devices=2, seed=5, start="2025-08-04", anomaly_rate=30, anomaly_kinds="spike"
    )
    auc = metrics.ROCAUC()
    evaluate.progressive_val_score(streamsim.pairs(spikes), detector(), auc)
    assert auc.get() > 0.6  # 0.67 with these seeds; a detector blind to y's meaning: 0.5
