"""A deterministic number in [0, 1) per key: data splits that do not move when data is added."""
from __future__ import annotations

import hashlib


def stable_fraction(key: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
