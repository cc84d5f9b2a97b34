"""Side-by-side balancing: the same nginx.conf under real nginx and Ferryman, same backends.

Five echo backends (each answers `GET /` with its UUID, and ignores the query) sit
behind one `upstream app` whose method differs per test. Each conf is rendered twice,
run by nginx (`worker_processes 1`) and by `ferryman run -c` (which reads it as one
worker), and both get the same request sequence; which backend answered each request is
read from the body. Both keep upstream connections alive (`proxy_http_version 1.1`,
`keepalive`), so connection reuse cannot make one of them differ.

What must agree, per method:

- round-robin and weighted round-robin, and least_conn with one request at a time:
  the exact sequence of backends (nginx's smooth WRR is deterministic), hence the
  per-backend counts;
- least_conn under load: while /slow requests are held open, quick requests go only to
  the idle backends, the same set under both;
- ip_hash (with weights and a `down` peer): from client addresses in 48 different /24s
  (sockets bound to 127.{0,1,2}.X.Y), every /24 sticks to one backend, and the
  /24 -> backend mapping is nginx's;
- `hash $request_uri consistent`: the URI -> backend mapping of 300 keys is nginx's for at
  least 97% of them (exact ketama gives 100%), and marking one backend `down` moves only
  the keys that were on it, about 1/N of them, under both.
  Plain `hash` and a weighted ring are compared too (same arithmetic, same bar).

Without nginx the module is skipped (scripts/install-system-deps.sh installs it).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from support.nginx import find_nginx
from support.procs import EchoBackend, start_echoes
from support.sidebyside import PROXIES, BackendClient, SideBySide, start_side_by_side

NGINX = find_nginx()
ECHO_COUNT = 5

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (scripts/install-system-deps.sh)"
)

TEMPLATE = """\
worker_processes 1;
events { worker_connections 1024; }
http {
    {{nginx_only}}
    access_log off;
    upstream app {
        {{method}}
{{servers}}
        keepalive 32;
    }
    server {
        listen 127.0.0.1:{{port}};
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
"""


@dataclass(frozen=True, slots=True)
class Server:
    """One `server` line: which echo backend (by index), its weight, whether down."""

    echo: int
    weight: int = 1
    down: bool = False


def _servers(count: int, weights: Sequence[int] = ()) -> tuple[Server, ...]:
    return tuple(Server(i, weights[i] if weights else 1) for i in range(count))


class Backends:
    """The echo backends shared by every test of the module, named b0, b1, ..."""

    def __init__(self, echoes: list[EchoBackend]) -> None:
        self.echoes = echoes
        self.names = {e.uuid: f"b{i}" for i, e in enumerate(echoes)}

    def servers_block(self, servers: Sequence[Server]) -> str:
        lines = []
        for s in servers:
            params = f" weight={s.weight}" if s.weight != 1 else ""
            params += " down" if s.down else ""
            lines.append(f"        server {self.echoes[s.echo].address}{params};")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    logs = tmp_path_factory.mktemp("balancing-backends")
    echoes = start_echoes(logs, "127.0.0.1", [0] * ECHO_COUNT)
    try:
        yield Backends(echoes)
    finally:
        for echo in echoes:
            echo.stop()


class _Starter(Protocol):
    """The `side_by_side` fixture: start nginx and Ferryman on TEMPLATE."""

    def __call__(self, method: str, servers: Sequence[Server], name: str = ...) -> SideBySide: ...


@pytest.fixture
def side_by_side(backends: Backends, tmp_path: Path) -> Iterator[_Starter]:
    """A factory: start nginx and Ferryman on the template; both stopped at teardown."""
    started: list[SideBySide] = []

    def start(method: str, servers: Sequence[Server], name: str = "run") -> SideBySide:
        assert NGINX is not None
        values = {"method": method, "servers": backends.servers_block(servers)}
        pair = start_side_by_side(NGINX, tmp_path / name, TEMPLATE, values)
        started.append(pair)
        return pair

    yield start
    for pair in started:
        pair.stop()


def _sequence(port: int, names: dict[str, str], count: int) -> list[str]:
    with BackendClient(port, names) as client:
        return [client.which("/") for _ in range(count)]


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return (
                f"request {i}: nginx {x}, ferryman {y}; nginx {a[: i + 1]}, ferryman {b[: i + 1]}"
            )
    return "none"


# ------------------------------------------------------------ one request at a time


SEQUENTIAL_CASES = {
    # name: (method line, servers, requests). Counts not a multiple of the cycle, so a
    # different starting peer shows in the counts too.
    "round_robin": ("", _servers(5), 103),
    "weighted_5_1_1": ("", _servers(3, (5, 1, 1)), 100),
    "weighted_3_2_1": ("", _servers(3, (3, 2, 1)), 100),
    "weighted_with_down": (
        "",
        (Server(0, 2), Server(1, 3, down=True), Server(2), Server(3, 4)),
        100,
    ),
    "least_conn_3_2_1": ("least_conn;", _servers(3, (3, 2, 1)), 100),
    "least_conn_equal": ("least_conn;", _servers(5), 103),
}


@pytest.mark.parametrize("case", sorted(SEQUENTIAL_CASES))
def test_sequential_requests_follow_nginx_sequence(
    case: str, backends: Backends, side_by_side: _Starter
) -> None:
    """nginx's smooth weighted round-robin, request by request (least_conn with one
    request in flight at a time ties every peer and falls back to it)."""
    method, servers, count = SEQUENTIAL_CASES[case]
    pair = side_by_side(method, servers)
    seen = {proxy: _sequence(pair.ports[proxy], backends.names, count) for proxy in PROXIES}
    counts = {proxy: dict(sorted(Counter(seq).items())) for proxy, seq in seen.items()}
    print(f"\n{case}: {counts}")
    assert counts["ferryman"] == counts["nginx"], f"per-backend counts differ: {counts}"
    assert seen["ferryman"] == seen["nginx"], _first_difference(seen["nginx"], seen["ferryman"])


# ------------------------------------------------------------ least_conn under load

SLOW_MS = 900
HEAD_START = 0.3  # s for the slow requests to reach their backends
QUICK = 6


@dataclass(slots=True)
class _Round:
    busy: list[str]
    quick: list[str]
    quick_done: float
    slow_done: list[float]


def _least_conn_round(port: int, names: dict[str, str], slow: int) -> _Round:
    """`slow` held-open /slow requests on their own connections, then QUICK quick ones."""
    busy: list[str] = []
    slow_done: list[float] = []
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with BackendClient(port, names) as client:
                busy.append(client.which(f"/slow?ms={SLOW_MS}"))
                slow_done.append(time.monotonic())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(slow)]
    for t in threads:
        t.start()
    time.sleep(HEAD_START)
    with BackendClient(port, names) as client:
        quick = [client.which("/") for _ in range(QUICK)]
    quick_done = time.monotonic()
    for t in threads:
        t.join(timeout=10)
    assert not errors, errors
    assert len(busy) == slow, f"only {len(busy)} of {slow} slow requests answered"
    return _Round(busy, quick, quick_done, slow_done)


def test_least_conn_avoids_busy_peers_like_nginx(
    backends: Backends, side_by_side: _Starter
) -> None:
    pair = side_by_side("least_conn;", _servers(5))
    for slow in (2, 3):
        rounds = {p: _least_conn_round(pair.ports[p], backends.names, slow) for p in PROXIES}
        for proxy, r in rounds.items():
            print(f"\nleast_conn {slow} slow, {proxy}: busy {sorted(r.busy)}, quick {r.quick}")
            # The scenario is only meaningful if the slow ones were still in flight.
            assert min(r.slow_done) > r.quick_done, f"{proxy}: slow requests ended too early"
            assert len(set(r.busy)) == slow, f"{proxy}: slow requests shared a peer: {r.busy}"
            assert not set(r.quick) & set(r.busy), (
                f"{proxy}: quick requests went to busy peers: busy {r.busy}, quick {r.quick}"
            )
        ngx, fm = rounds["nginx"], rounds["ferryman"]
        assert set(fm.busy) == set(ngx.busy), f"busy peers: nginx {ngx.busy}, ferryman {fm.busy}"
        assert set(fm.quick) == set(ngx.quick), (
            f"peers of the quick requests: nginx {ngx.quick}, ferryman {fm.quick}"
        )


# ------------------------------------------------------------ ip_hash

# 48 client /24s, 127.Y.X.0/24 with Y in 0..2 and X spread over 0..255 (consecutive
# third octets would give consecutive hashes and hide arithmetic slips); every 127/8
# address is local on Linux, so a client socket can bind any of them.
SUBNETS = tuple(f"127.{i % 3}.{(i * 53 + 7) % 256}" for i in range(48))
HOSTS = (1, 77, 254)  # three clients in each /24
PER_CLIENT = 2
# Weights exercise the weight-slot walk, the down peer the rehash loop.
IP_HASH_SERVERS = (Server(0, 2), Server(1), Server(2, down=True), Server(3, 3), Server(4))


def _ip_hash_map(port: int, names: dict[str, str]) -> dict[str, set[str]]:
    """/24 (its first three octets) -> the backends that answered any client in it."""
    seen: dict[str, set[str]] = {}
    for subnet in SUBNETS:
        for host in HOSTS:
            with BackendClient(port, names, source=f"{subnet}.{host}") as client:
                for _ in range(PER_CLIENT):
                    seen.setdefault(subnet, set()).add(client.which("/"))
    return seen


def test_ip_hash_maps_each_24_like_nginx(backends: Backends, side_by_side: _Starter) -> None:
    pair = side_by_side("ip_hash;", IP_HASH_SERVERS)
    seen = {p: _ip_hash_map(pair.ports[p], backends.names) for p in PROXIES}
    for proxy, mapping in seen.items():
        split = {s: sorted(b) for s, b in mapping.items() if len(b) != 1}
        assert not split, f"{proxy}: a /24 went to several backends: {split}"
    ngx = {s: next(iter(b)) for s, b in seen["nginx"].items()}
    fm = {s: next(iter(b)) for s, b in seen["ferryman"].items()}
    agree = sum(ngx[s] == fm[s] for s in SUBNETS) / len(SUBNETS)
    dist = {
        p: dict(sorted(Counter(m.values()).items())) for p, m in (("nginx", ngx), ("ferryman", fm))
    }
    print(f"\nip_hash: {agree:.1%} of /24s agree; /24s per backend {dist}")
    wrong = {f"{s}.0/24": (ngx[s], fm[s]) for s in SUBNETS if ngx[s] != fm[s]}
    assert not wrong, f"/24 -> (nginx, ferryman) backend differs: {wrong}"


# ------------------------------------------------------------ hash $request_uri consistent

KEYS = [f"/?k={i}" for i in range(300)]
MIN_AGREEMENT = 0.97
DOWN = 1  # the backend marked down in the second run


def _hash_map(port: int, names: dict[str, str]) -> dict[str, str]:
    with BackendClient(port, names) as client:
        return {key: client.which(key) for key in KEYS}


def test_consistent_hash_maps_uris_like_nginx(backends: Backends, side_by_side: _Starter) -> None:
    method = "hash $request_uri consistent;"
    pair = side_by_side(method, _servers(5), name="all-up")
    full = {p: _hash_map(pair.ports[p], backends.names) for p in PROXIES}
    pair.stop()
    servers = tuple(Server(i, down=(i == DOWN)) for i in range(5))
    pair = side_by_side(method, servers, name="one-down")
    less = {p: _hash_map(pair.ports[p], backends.names) for p in PROXIES}

    agree_full = sum(full["nginx"][k] == full["ferryman"][k] for k in KEYS) / len(KEYS)
    agree_less = sum(less["nginx"][k] == less["ferryman"][k] for k in KEYS) / len(KEYS)
    moved = {p: [k for k in KEYS if full[p][k] != less[p][k]] for p in PROXIES}
    dist = {p: dict(sorted(Counter(full[p].values()).items())) for p in PROXIES}
    print(
        f"\nhash consistent: {agree_full:.1%} of keys agree (all up), {agree_less:.1%} "
        f"(b{DOWN} down); keys per backend {dist}; moved when b{DOWN} is down: "
        + ", ".join(f"{p} {len(m) / len(KEYS):.1%}" for p, m in moved.items())
    )
    differing = [
        (k, full["nginx"][k], full["ferryman"][k])
        for k in KEYS
        if full["nginx"][k] != full["ferryman"][k]
    ]
    assert agree_full >= MIN_AGREEMENT, (
        f"{agree_full:.1%} agree; (key, nginx, ferryman): {differing[:20]}"
    )
    assert agree_less >= MIN_AGREEMENT, f"{agree_less:.1%} agree with b{DOWN} down"
    for proxy in PROXIES:
        stray = [k for k in moved[proxy] if full[proxy][k] != f"b{DOWN}"]
        assert not stray, f"{proxy}: keys not on b{DOWN} moved: {stray[:20]}"
        assert all(less[proxy][k] != f"b{DOWN}" for k in KEYS), f"{proxy}: a key went to b{DOWN}"
        # So exactly b{DOWN}'s keys moved: its share of the ring, about 1/5 (the ring
        # depends on the backends' random ports, so only a loose bound).
        share = len(moved[proxy]) / len(KEYS)
        assert 0 < share <= 2 / 5, f"{proxy}: {share:.1%} of keys moved, expected about 20%"


HASH_MAPPING_CASES = {
    # Beyond the five methods of the issue: the same arithmetic with weights (ketama puts
    # 160 points per unit of weight) and plain `hash` (crc32 modulo the total weight).
    "consistent_weighted": ("hash $request_uri consistent;", _servers(5, (1, 1, 3, 2, 1))),
    "plain": ("hash $request_uri;", _servers(5, (1, 2, 1, 1, 1))),
}


@pytest.mark.parametrize("case", sorted(HASH_MAPPING_CASES))
def test_hash_variants_map_uris_like_nginx(
    case: str, backends: Backends, side_by_side: _Starter
) -> None:
    method, servers = HASH_MAPPING_CASES[case]
    pair = side_by_side(method, servers)
    seen = {p: _hash_map(pair.ports[p], backends.names) for p in PROXIES}
    agree = sum(seen["nginx"][k] == seen["ferryman"][k] for k in KEYS) / len(KEYS)
    dist = {p: dict(sorted(Counter(seen[p].values()).items())) for p in PROXIES}
    print(f"\nhash {case}: {agree:.1%} of keys agree; keys per backend {dist}")
    differing = [
        (k, seen["nginx"][k], seen["ferryman"][k])
        for k in KEYS
        if seen["nginx"][k] != seen["ferryman"][k]
    ]
    assert agree >= MIN_AGREEMENT, f"{agree:.1%} agree; (key, nginx, ferryman): {differing[:20]}"
