"""Integration fixtures: real processes on loopback ports, stopped by PID at teardown."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # makes tests/support importable

from support.procs import EchoBackend, EchoFactory, ProxyProcess, start_echoes, start_proxy


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


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """A factory: `proxy(config_text, port)` starts `ferryman run -c` with that YAML and
    waits for the port; every proxy started is stopped (SIGTERM by PID) at teardown.
    Build the text with `support.procs.proxy_config`."""
    started: list[ProxyProcess] = []

    def start(config_text: str, port: int, args: Sequence[str] = ()) -> ProxyProcess:
        p = start_proxy(tmp_path / "proxy", config_text, port, args=args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
