"""Delivery: what every consumer of the stream (logger, bridges, the broadcaster's resume)
needs to deliver each sample once, in order, or say exactly what it did not deliver, and why.

- intake.py: the face: batches in, rows to deliver in order and gap records out;
- seqs.py: the newest seq delivered per device (duplicates dropped, jumps found);
- refill.py: the producers' history asked for what was missed, and why the rest is missing;
- starts.py: devices first met mid-series (what came before them);
- refused.py: messages the bus refused, refilled or recorded;
- client.py: the one client of the producers' catch-up endpoints;
- protocol.py: the catch-up wire protocol (the producer's history server speaks it too);
- gaps.py: the one Gap, a gap record and the gaps-file format;
- reasons.py: the gap reasons, one word per fact, each explained.
"""
