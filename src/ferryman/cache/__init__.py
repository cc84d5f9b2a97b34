"""HTTP caching for a shared cache (RFC 9111): the pure rules (policy), the entry record,
the store interface and its memory, disk and tiered implementations. The proxy
integration (keys, locking, background updates) lives in its own modules and only
uses what is exported here and in cache/policy.py."""

from __future__ import annotations

from ferryman.cache.disk import DiskStore
from ferryman.cache.entry import EntryMeta
from ferryman.cache.memory import MemoryStore
from ferryman.cache.policy import CacheControl, Decision, RequestRules
from ferryman.cache.store import CachedEntry, EntryWriter, Store, StoreError
from ferryman.cache.tiered import TieredStore, open_store

__all__ = [
    "CacheControl",
    "CachedEntry",
    "Decision",
    "DiskStore",
    "EntryMeta",
    "EntryWriter",
    "MemoryStore",
    "RequestRules",
    "Store",
    "StoreError",
    "TieredStore",
    "open_store",
]
