"""The voices resident on one synthesis replica: two LRUs, one for full voices (each its own GPT
and SoVITS: `max_voices_per_replica`) and one for adapter voices (a few MB each over the shared
backbone: `max_adapter_voices_per_replica` and `adapter_memory_mb`).

Serve's multiplexing routes a voice's requests to replicas that already hold it and keeps its own
LRU of voice keys; the voices themselves live here, so the two kinds are bounded apart and a
burst of adapter voices never evicts the expensive full ones.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class _LRU(Generic[V]):
    max_count: int
    max_bytes: float = float("inf")
    items: "OrderedDict[str, tuple[V, int]]" = field(default_factory=OrderedDict)
    nbytes: int = 0
    evictions: int = 0

    def get(self, key: str) -> V | None:
        hit = self.items.get(key)
        if hit is None:
            return None
        self.items.move_to_end(key)
        return hit[0]

    def put(self, key: str, value: V, nbytes: int) -> list[str]:
        if key in self.items:
            self.nbytes -= self.items.pop(key)[1]
        self.items[key] = (value, nbytes)
        self.nbytes += nbytes
        evicted = []
        # the newest entry always stays, even alone over the byte budget
        while len(self.items) > 1 and (len(self.items) > self.max_count or self.nbytes > self.max_bytes):
            old, (_, size) = self.items.popitem(last=False)
            self.nbytes -= size
            self.evictions += 1
            evicted.append(old)
        return evicted


class VoiceCache(Generic[V]):
    """Thread-safe: looked up on the event loop, filled from synthesis threads."""

    def __init__(self, max_full: int, max_adapter: int, adapter_bytes: float):
        self._full: _LRU[V] = _LRU(max_full)
        self._adapter: _LRU[V] = _LRU(max_adapter, adapter_bytes)
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            found = self._adapter.get(key)
            return found if found is not None else self._full.get(key)

    def put(self, key: str, voice: V, *, adapter: bool, nbytes: int = 0) -> list[str]:
        """Make `voice` resident; returns the keys evicted to make room."""
        with self._lock:
            return (self._adapter if adapter else self._full).put(key, voice, nbytes)

    def stats(self) -> dict:
        with self._lock:
            return {"full": list(self._full.items), "adapter": list(self._adapter.items),
                    "adapter_bytes": self._adapter.nbytes, "full_evictions": self._full.evictions,
                    "adapter_evictions": self._adapter.evictions}
