"""h2 keeps every stream it has seen in `H2Connection.streams` until its count of open
streams walks them and drops the closed ones. Ferryman's connection (`_H2`) runs that
walk only once closed streams may have piled up (server/h2_connection.py): this checks,
sans I/O with h2's own client, that they still never pile up past the bound."""

from __future__ import annotations

import h2.config
import h2.connection

from ferryman.server.h2_connection import _CONFIG, _H2, _PRUNE_SLACK, MAX_CONCURRENT_STREAMS


def _pair() -> tuple[h2.connection.H2Connection, _H2]:
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    server = _H2(config=_CONFIG)
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def _open(client: h2.connection.H2Connection, server: _H2) -> int:
    sid: int = client.get_next_available_stream_id()
    request = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"a"),
        (b":path", b"/"),
    ]
    client.send_headers(sid, request, end_stream=True)
    server.receive_data(client.data_to_send())
    return sid


def _answer(client: h2.connection.H2Connection, server: _H2, sid: int) -> None:
    server.send_headers(sid, [(b":status", b"204")], end_stream=True)
    client.receive_data(server.data_to_send())


def test_closed_streams_are_dropped_in_bulk_within_the_bound() -> None:
    """100 streams open at a time, the oldest answered as each new one comes."""
    client, server = _pair()
    bound = MAX_CONCURRENT_STREAMS + _PRUNE_SLACK + 1
    open_now = [_open(client, server) for _ in range(100)]
    most = least = len(server.streams)
    for _ in range(1000):
        _answer(client, server, open_now.pop(0))
        open_now.append(_open(client, server))
        most = max(most, len(server.streams))
        least = min(least, len(server.streams))
    assert most <= bound
    assert most == bound  # not walked for every new stream, as h2 would
    assert least <= 101  # walked now and then: h2 alone would hold all 1,100


def test_drop_closed_keeps_only_open_streams() -> None:
    client, server = _pair()
    sids = [_open(client, server) for _ in range(10)]
    for sid in sids[:7]:
        _answer(client, server, sid)
    server.drop_closed()
    assert sorted(server.streams) == sids[7:]
