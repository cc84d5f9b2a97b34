"""ChangeStamps: a small table of change stamps shared by every worker that opens one
disk cache directory, so that a worker's memory copies of disk entries stay coherent
without a stat per hit.

Owns the table file (`<path>/.stamps`, mapped MAP_SHARED: the page cache is the shared
memory, so workers, restarted workers and even separate Ferryman processes on the
directory see one table, with no set-up by the master before fork) and the stamping
rule. Knows nothing of entries, keys or HTTP: a slot is a number the disk store derives
from a key's hash.

The rule (the disk store follows it): whoever replaces or removes any file of a key
writes a new stamp into the key's slot *after* the change. A reader records the slot's
stamp *before* it checks the disk (stat, key file); while the slot still holds that
stamp, nothing of that key has changed since the check, so its memory copy and Vary
fields can be used with no system call. A stamp is 63 random bits, not a counter, so
two workers stamping at once cannot write back a value a reader already holds (a lost
increment could). nginx keeps the same knowledge in its shared keys zone.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import random
from typing import Final

__all__ = ["SLOTS", "ChangeStamps", "open_stamps", "slot_of"]

_log: Final = logging.getLogger(__name__)

# 8192 slots x 8 bytes = 64 KiB. Keys share slots (a change to one makes the others'
# memory copies be checked once more): harmless, and a bounded table.
SLOTS: Final = 8192
_SIZE: Final = SLOTS * 8
FILE_NAME: Final = ".stamps"


class ChangeStamps:
    """The shared stamp table of one cache directory (one instance per worker)."""

    __slots__ = ("_fd", "_map", "_rng", "_view", "path")

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILE_NAME)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Only ever grown, never shrunk: two workers sizing it at once agree.
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        # Aligned 8-byte loads and stores: one machine word each on 64-bit hosts.
        self._view = memoryview(self._map).cast("Q")
        # Seeded from the OS per instance (so per worker, as each opens its own after fork).
        self._rng = random.Random(os.urandom(16))

    def stamp(self, slot: int) -> int:
        """The slot's current stamp (record it before checking the disk)."""
        return int(self._view[slot])

    def bump(self, slot: int) -> None:
        """Mark the slot changed (call after the change is on disk)."""
        self._view[slot] = self._rng.getrandbits(63) | 1  # never 0, a fresh file's value

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._view.release()
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def __repr__(self) -> str:
        return f"ChangeStamps({self.path!r})"


def slot_of(key_hash: str) -> int:
    """The slot of a key, from its hex sha256 (cache/disk.py `_key_hash`)."""
    return int(key_hash[:8], 16) % SLOTS


def open_stamps(directory: str) -> ChangeStamps | None:
    """The directory's table, or None where it cannot be mapped (then every memory hit
    is checked against the disk, as before the table existed)."""
    try:
        return ChangeStamps(directory)
    except (OSError, ValueError) as exc:
        _log.warning(
            "cache %s: no shared change stamps (%s); memory hits stat the disk", directory, exc
        )
        return None
