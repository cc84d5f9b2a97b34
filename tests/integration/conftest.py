"""Integration fixtures: real processes on loopback ports, stopped by PID at teardown."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # makes tests/support importable

from support.procs import EchoBackend, EchoFactory, start_echoes


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[EchoFactory]:
    """A factory: start `count` echo backends (`python -m ferryman.echo`) on `host`, on
    free ports or on the given `ports` (then `count` is ignored). Each backend has
    .host .port .uuid .pid .proc .address .url .stop(); all are stopped at teardown."""
    started: list[EchoBackend] = []

    def start(
        count: int = 1, *, host: str = "127.0.0.1", ports: Sequence[int] | None = None
    ) -> list[EchoBackend]:
        batch = start_echoes(tmp_path / "logs", host, list(ports) if ports else [0] * count)
        started.extend(batch)
        return batch

    yield start
    for backend in started:
        backend.stop()
