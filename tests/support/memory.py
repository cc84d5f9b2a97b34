"""Process memory as Linux reports it, for tests that bound a worker's memory while it
streams: child PIDs from /proc/<pid>/task/*/children, VmRSS from /proc/<pid>/status,
and a background sampler that keeps the peak. Read-only; never signals anything."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

__all__ = ["RssSampler", "child_pids", "rss_bytes", "wait_for_children"]


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (all its threads' children)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.extend(int(p) for p in text.split())
    return sorted(set(children))


def wait_for_children(pid: int, count: int = 1, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = child_pids(pid)
        if len(pids) >= count:
            return pids
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} has {len(pids)} children, wanted {count}")
        time.sleep(0.05)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of `pid` in bytes (VmRSS), or another size field of
    /proc/PID/status: `RssAnon` is the process's own memory, without the file pages it
    maps (the page cache's, shared and reclaimable)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise ValueError(f"no {field} for pid {pid}")


class RssSampler:
    """Samples the RSS of `pids` every `interval` seconds in a thread; `peak` is the
    largest value seen for any of them. Use as a context manager."""

    def __init__(self, pids: list[int], interval: float = 0.005) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def sample(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self.peak = max(self.peak, rss_bytes(pid))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
