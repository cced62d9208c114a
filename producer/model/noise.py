"""Counter-based randomness: every random number is a pure function of its keys.

A value for (seed, stream, device, time) is the same whether it is computed live, in a
backfill, after a restart or in a different chunk size; a stateful generator could not
promise that. The hash is splitmix64's finalizer, vectorized with numpy.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_PI = 2.0 * np.pi


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hashes(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """64-bit hashes of (seed, stream, *keys), broadcast over the key arrays."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(seed, dtype=np.uint64) ^ (np.uint64(stream) * _GOLDEN))
        for key in keys:
            k = np.asarray(key).astype(np.uint64)
            h = _mix(h ^ (k + _GOLDEN))
    return h


def uniform(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in (0, 1)."""
    h = hashes(seed, stream, *keys)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2**53)


def normal(seed: int, stream: int, *keys: np.ndarray | int) -> np.ndarray:
    """Standard normal floats (Box-Muller on the two 32-bit halves of one hash)."""
    h = hashes(seed, stream, *keys)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * (1.0 / 2**32)
    u2 = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) * (1.0 / 2**32)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)


def normal_pair(seed: int, stream: int, *keys: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normals from one hash (both halves of Box-Muller): half the
    hashing of two `normal` calls, for per-sample noise where hashing is most of the cost."""
    h = hashes(seed, stream, *keys)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * (1.0 / 2**32)
    angle = _TWO_PI * (((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) * (1.0 / 2**32))
    radius = np.sqrt(-2.0 * np.log(u1))
    return radius * np.cos(angle), radius * np.sin(angle)
