"""Selection cost: microseconds per `pick` + `release`, per strategy, by group size.

    .venv/bin/python bench/selection.py                  # 6 and 1,000 peers
    .venv/bin/python bench/selection.py --peers 2,6,100 --seconds 0.5
    FERRYMAN_PURE=1 .venv/bin/python bench/selection.py  # the pure-Python sources

Each cell is the best of `--rounds` timed runs of about `--seconds` each, calling the
balancer directly (no group, no I/O), as the group does on a request's first attempt:
the whole primary tier as one tuple. The "1 tried" columns are a retry: a list without
the peer the request already used, which keyed strategies must check membership in.
Keys cycle over 1,024 request URIs (hash) or client addresses in 256 /24s (ip_hash);
least_time and peak_ewma get a jittered timing on every release. A benchmark, not a
test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence

from ferryman.balancing import Outcome, create_balancer
from ferryman.balancing.base import Balancer
from ferryman.config.schema import PeerSpec, UpstreamSpec
from ferryman.upstream.peer import PeerState

# (label, UpstreamSpec.balance, options)
STRATEGIES: list[tuple[str, str, dict[str, object]]] = [
    ("round_robin", "round_robin", {}),
    ("least_conn", "least_conn", {}),
    ("hash", "hash", {"hash_key": "$request_uri"}),
    ("hash consistent", "hash", {"hash_key": "$request_uri", "consistent": True}),
    ("ip_hash", "ip_hash", {}),
    ("random", "random", {}),
    ("random two", "random", {"random_two": True}),
    ("random two least_time", "random", {"random_two": True, "random_method": "least_time"}),
    ("least_time", "least_time", {}),
    ("peak_ewma", "peak_ewma", {}),
]

SUCCESS = Outcome.SUCCESS


def make(balance: str, options: dict[str, object], n: int) -> tuple[Balancer, list[PeerState]]:
    specs = tuple(
        PeerSpec(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 8080, weight=1 + i % 3)
        for i in range(n)
    )
    spec = UpstreamSpec(name="bench", servers=specs, balance=balance, **options)  # type: ignore[arg-type]
    peers = [PeerState(s, i) for i, s in enumerate(specs)]
    return create_balancer(balance, spec, peers), peers


def keys_for(balance: str) -> list[bytes]:
    rng = random.Random(1)
    if balance == "ip_hash":
        return [f"198.{rng.randrange(256)}.{rng.randrange(256)}.7".encode() for _ in range(1024)]
    if balance == "hash":
        return [f"/catalog/item/{rng.randrange(10**9)}?v=2".encode() for _ in range(1024)]
    return [b""]


def timed_run(
    balancer: Balancer, candidates: Sequence[PeerState], keys: list[bytes], iterations: int
) -> float:
    """Seconds for `iterations` pick+release pairs."""
    pick = balancer.pick
    release = balancer.release
    timings = [0.008 + 0.004 * (i % 7) / 7 for i in range(64)]
    nkeys = len(keys)
    start = time.perf_counter()
    for i in range(iterations):
        peer = pick(candidates, keys[i % nkeys])
        peer.last_header_time = timings[i & 63]
        release(peer, SUCCESS)
    return time.perf_counter() - start


def measure(run: Callable[[int], float], seconds: float, rounds: int) -> float:
    """Microseconds per call: calibrate the count to ~`seconds`, keep the best round."""
    iterations = 16
    while True:
        took = run(iterations)
        if took >= seconds / 4 or iterations >= 1 << 24:
            break
        iterations *= 4
    iterations = max(1, int(iterations * seconds / max(took, 1e-9)))
    best = min(run(iterations) for _ in range(rounds))
    return best / iterations * 1e6


def cell(
    balance: str, options: dict[str, object], n: int, tried: bool, seconds: float, rounds: int
) -> float:
    balancer, peers = make(balance, options, n)
    candidates: Sequence[PeerState] = [p for p in peers if p.index != 0] if tried else tuple(peers)
    keys = keys_for(balance)
    return measure(lambda k: timed_run(balancer, candidates, keys, k), seconds, rounds)


def implementation() -> str:
    module = sys.modules["ferryman.balancing.round_robin"]
    return "compiled (mypyc)" if (module.__file__ or "").endswith(".so") else "pure Python"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="6,1000", help="group sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=0.2, help="per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per cell (best)")
    parser.add_argument("--only", default="", help="strategies whose label contains this")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.peers.split(",")]
    columns = [(n, tried) for tried in (False, True) for n in sizes]
    heads = [f"{n} peers" + (", 1 tried" if tried else "") for n, tried in columns]
    print(
        f"Selection cost, us per pick+release ({implementation()}, Python {sys.version.split()[0]})"
    )
    print(f"{'strategy':<24}" + "".join(f"{h:>20}" for h in heads))
    for label, balance, options in STRATEGIES:
        if args.only not in label:
            continue
        row = [cell(balance, options, n, t, args.seconds, args.rounds) for n, t in columns]
        print(f"{label:<24}" + "".join(f"{us:>20.2f}" for us in row), flush=True)


if __name__ == "__main__":
    main()
