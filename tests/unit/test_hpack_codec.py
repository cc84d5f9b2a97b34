"""Ferryman's HPACK codec (http/hpack_codec.py): RFC 7541's own examples (Appendix C),
both directions against the hpack library's codec, every decoding error the codec
must raise as an hpack exception (h2 makes those connection errors), the encoder's
table-size rules, and the codec in h2's place on the server connection (sans I/O,
with h2's own client)."""

from __future__ import annotations

import random
from typing import TypeVar

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)

from ferryman.http import hpack_codec
from ferryman.http.hpack_codec import Decoder, Encoder, huffman_decode, huffman_encode
from ferryman.server.h2_connection import _CONFIG, _H2

Fields = list[tuple[bytes, bytes]]

# RFC 7541 C.3/C.4: three requests on one connection, without and with Huffman coding.
_REQUESTS: list[Fields] = [
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
        (b"cache-control", b"no-cache"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/index.html"),
        (b":authority", b"www.example.com"),
        (b"custom-key", b"custom-value"),
    ],
]
_C3 = [
    "828684410f7777772e6578616d706c652e636f6d",
    "828684be58086e6f2d6361636865",
    "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
]
_C4 = [
    "828684418cf1e3c2e5f23a6ba0ab90f4ff",
    "828684be5886a8eb10649cbf",
    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
]
# The dynamic table after each request, newest first, and its size.
_REQUEST_TABLES = [
    ([(b":authority", b"www.example.com")], 57),
    ([(b"cache-control", b"no-cache"), (b":authority", b"www.example.com")], 110),
    (
        [
            (b"custom-key", b"custom-value"),
            (b"cache-control", b"no-cache"),
            (b":authority", b"www.example.com"),
        ],
        164,
    ),
]

# RFC 7541 C.5/C.6: three responses with a 256-octet table (entries are evicted).
_DATE1 = b"Mon, 21 Oct 2013 20:13:21 GMT"
_DATE2 = b"Mon, 21 Oct 2013 20:13:22 GMT"
_LOCATION = b"https://www.example.com"
_COOKIE = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
_RESPONSES: list[Fields] = [
    [
        (b":status", b"302"),
        (b"cache-control", b"private"),
        (b"date", _DATE1),
        (b"location", _LOCATION),
    ],
    [
        (b":status", b"307"),
        (b"cache-control", b"private"),
        (b"date", _DATE1),
        (b"location", _LOCATION),
    ],
    [
        (b":status", b"200"),
        (b"cache-control", b"private"),
        (b"date", _DATE2),
        (b"location", _LOCATION),
        (b"content-encoding", b"gzip"),
        (b"set-cookie", _COOKIE),
    ],
]
_C5 = [
    "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a"
    "323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
    "4803333037c1c0bf",
    "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69"
    "707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d6178"
    "2d6167653d333630303b2076657273696f6e3d31",
]
_C6 = [
    "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29"
    "ad171863c78f0b97c8e9ae82ae43d3",
    "4883640effc1c0bf",
    "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7"
    "f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d50"
    "07",
]
_RESPONSE_TABLES = [
    (
        [
            (b"location", _LOCATION),
            (b"date", _DATE1),
            (b"cache-control", b"private"),
            (b":status", b"302"),
        ],
        222,
    ),
    (
        [
            (b":status", b"307"),
            (b"location", _LOCATION),
            (b"date", _DATE1),
            (b"cache-control", b"private"),
        ],
        222,
    ),
    (
        [
            (b"set-cookie", _COOKIE),
            (b"content-encoding", b"gzip"),
            (b"date", _DATE2),
        ],
        215,
    ),
]
# A dynamic table size update to 256 (6.3): the examples assume both ends agreed on it.
_TO_256 = bytes.fromhex("3fe101")


def _table(codec: Decoder | Encoder) -> tuple[Fields, int]:
    return list(reversed(codec.table.entries)), codec.table.size


@pytest.mark.parametrize("vectors", [_C3, _C4], ids=["C.3 plain", "C.4 Huffman"])
def test_the_decoder_reads_rfc_7541s_requests_and_keeps_its_table(vectors: list[str]) -> None:
    decoder = Decoder()
    for block, fields, table in zip(vectors, _REQUESTS, _REQUEST_TABLES, strict=True):
        assert decoder.decode(bytes.fromhex(block)) == fields
        assert _table(decoder) == table


@pytest.mark.parametrize("vectors", [_C5, _C6], ids=["C.5 plain", "C.6 Huffman"])
def test_the_decoder_reads_rfc_7541s_responses_evicting_from_a_small_table(
    vectors: list[str],
) -> None:
    decoder = Decoder()
    blocks = [_TO_256 + bytes.fromhex(vectors[0])] + [bytes.fromhex(v) for v in vectors[1:]]
    for block, fields, table in zip(blocks, _RESPONSES, _RESPONSE_TABLES, strict=True):
        assert decoder.decode(block) == fields
        assert _table(decoder) == table


def test_the_encoder_writes_rfc_7541s_responses_octet_for_octet() -> None:
    # Huffman-coded where that is shorter: C.6's octets, but for "307", which is three
    # octets either way and so goes plain, as in C.5. The size update first is the one
    # the examples leave implicit.
    encoder = Encoder()
    encoder.header_table_size = 256
    expected = [_TO_256 + bytes.fromhex(_C6[0]), bytes.fromhex(_C5[1]), bytes.fromhex(_C6[2])]
    for fields, block, table in zip(_RESPONSES, expected, _RESPONSE_TABLES, strict=True):
        assert encoder.encode(fields) == block
        assert _table(encoder) == table


def test_a_literal_goes_plain_when_huffman_coding_would_not_shorten_it() -> None:
    # Octets outside the printable range take 20-30 bits each in the Huffman code.
    value = bytes(range(0x80, 0x90))
    block = Encoder().encode([(b"x-raw", value)])
    assert block.endswith(b"\x10" + value)  # length 16, H bit clear, the octets as they are
    assert Decoder().decode(block) == [(b"x-raw", value)]


# ---- against the library's codec ----


def _random_blocks(seed: int, count: int) -> list[Fields]:
    rnd = random.Random(seed)
    names = [
        b":status",
        b"date",
        b"content-length",
        b"set-cookie",
        b"x-request-id",
        b"x-" + bytes(rnd.randrange(97, 123) for _ in range(8)),
    ]
    octets = [*range(0x20, 0x7F), 0x09, 0x80, 0xFF]

    def value() -> bytes:
        size = rnd.randint(0, rnd.choice([4, 40, 400]))
        return bytes(rnd.choice(octets) for _ in range(size))

    return [
        [
            (rnd.choice(names), value() if rnd.random() < 0.6 else b"1")
            for _ in range(rnd.randint(1, 10))
        ]
        for _ in range(count)
    ]


def test_what_the_encoder_writes_the_librarys_decoder_reads_back() -> None:
    encoder = Encoder()
    decoder = hpack.Decoder(max_header_list_size=1 << 30)
    sizes = random.Random(7)
    for fields in _random_blocks(1, 1500):
        if sizes.random() < 0.03:
            encoder.header_table_size = sizes.choice([0, 64, 1000, 4096, 65536])
        got = [(bytes(n), bytes(v)) for n, v in decoder.decode(encoder.encode(fields), raw=True)]
        assert got == fields
        # The encoder's table is the one the decoder built from what it was sent.
        assert list(decoder.header_table.dynamic_entries) == _table(encoder)[0]


def test_what_the_librarys_encoder_writes_the_decoder_reads_back() -> None:
    encoder = hpack.Encoder()
    decoder = Decoder(1 << 30)
    for fields in _random_blocks(2, 1500):
        assert decoder.decode(encoder.encode(fields)) == fields
        assert _table(decoder)[0] == list(encoder.header_table.dynamic_entries)


def test_the_encoder_is_never_longer_than_the_librarys() -> None:
    ours, theirs = Encoder(), hpack.Encoder()
    for fields in _random_blocks(3, 500):
        assert len(ours.encode(fields)) <= len(theirs.encode(fields))


@pytest.mark.parametrize("size", [0, 1, 7, 8, 31, 200])
def test_huffman_coding_round_trips_and_matches_the_librarys(size: int) -> None:
    rnd = random.Random(size)
    coder = hpack.huffman.HuffmanEncoder(
        hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
    )
    for _ in range(50):
        data = bytes(rnd.randrange(256) for _ in range(size))
        coded = huffman_encode(data)
        assert coded == coder.encode(data)
        assert huffman_decode(coded) == data


# ---- refused input: each an hpack exception, which h2 turns into a connection error ----


@pytest.mark.parametrize(
    ("block", "error", "why"),
    [
        (b"\x80", InvalidTableIndex, "index 0"),
        (b"\xbe", InvalidTableIndex, "index 62, with an empty dynamic table"),
        # A size update to 31 in six octets more than it needs: refused at the fifth.
        (b"\x3f\x80\x80\x80\x80\x80\x00", HPACKDecodingError, "an integer too long"),
        (b"\xff", HPACKDecodingError, "an integer cut short"),
        (b"\x40\x05ab", HPACKDecodingError, "a name shorter than its length"),
        (b"\x04", HPACKDecodingError, "a literal with no value"),
        (b"\x04\x03ab", HPACKDecodingError, "a value shorter than its length"),
        (b"\x82\x20", HPACKDecodingError, "a size update after a field"),
        (b"\x3f\xe2\x1f", InvalidTableSizeError, "a size update over the allowed 4096"),
        # 30 one-bits: EOS itself, which must never be decoded (5.2).
        (b"\x04\x84\xff\xff\xff\xfc", HPACKDecodingError, "EOS in a Huffman string"),
        # "a" (00011) then 11 bits of padding: more than 7 (5.2).
        (b"\x04\x82\x1f\xff", HPACKDecodingError, "Huffman padding over 7 bits"),
        # "a" then three zero bits: padding that is not EOS's ones.
        (b"\x04\x81\x18", HPACKDecodingError, "Huffman padding of zeros"),
    ],
)
def test_a_malformed_block_is_refused(block: bytes, error: type[Exception], why: str) -> None:
    with pytest.raises(error):
        Decoder().decode(block)


def test_a_list_over_the_limit_is_refused_as_oversized() -> None:
    # 32 + 10 + 3 each ("user-agent" is static index 58): two fit in 90, three do not.
    field = b"\x0f\x2b\x03abc"
    assert len(Decoder(90).decode(field * 2)) == 2
    with pytest.raises(OversizedHeaderListError):
        Decoder(90).decode(field * 3)


def test_a_table_left_over_a_lowered_limit_is_refused() -> None:
    decoder = Decoder()
    decoder.max_allowed_table_size = 100  # our SETTINGS lowered it, acknowledged
    with pytest.raises(InvalidTableSizeError):
        decoder.decode(b"\x82")  # the client's encoder did not shrink first
    assert decoder.decode(b"\x3f\x45\x82") == [(b":method", b"GET")]  # 100, then a field


# ---- the encoder's table ----


def test_table_size_changes_go_out_as_the_smallest_then_the_current() -> None:
    encoder = Encoder()
    encoder.encode([(b"x-a", b"1")])
    encoder.header_table_size = 0  # the client wants no table ...
    encoder.header_table_size = 4096  # ... and then a table again, before our next block
    block = encoder.encode([(b"x-a", b"1")])
    # 0, then 4096: the emptied table cannot be mistaken for the old one (4.2).
    assert block.startswith(b"\x20\x3f\xe1\x1f\x40")
    decoder = hpack.Decoder()
    decoder.decode(b"\x40\x03x-a\x011")
    assert decoder.decode(block, raw=True) == [(b"x-a", b"1")]


def test_a_client_offering_a_larger_table_does_not_grow_ours() -> None:
    encoder = Encoder()
    encoder.header_table_size = 65536
    assert encoder.header_table_size == hpack_codec.DEFAULT_TABLE_SIZE
    assert encoder.encode([(b":status", b"200")]) == b"\x88"  # no size update sent


def test_the_encoders_table_and_its_maps_stay_bounded() -> None:
    encoder = Encoder()
    decoder = Decoder(1 << 30)
    for i in range(5000):
        fields = [(b"x-id", b"%d" % i), (b"x-%d" % (i % 300), b"v" * (i % 90))]
        assert decoder.decode(encoder.encode(fields)) == fields
    table = encoder.table
    assert table.size <= hpack_codec.DEFAULT_TABLE_SIZE
    assert table.size == sum(len(n) + len(v) + 32 for n, v in table.entries)
    # Only entries still in the table are found: the maps forget what was evicted.
    assert set(table.full) == set(table.entries)
    assert set(table.names) == {name for name, _ in table.entries}


def test_a_field_larger_than_the_table_empties_it_and_both_ends_agree() -> None:
    encoder = Encoder()
    decoder = hpack.Decoder()
    big = [(b"x-big", b"v" * 5000)]
    assert decoder.decode(encoder.encode([(b"x-a", b"1")]), raw=True) == [(b"x-a", b"1")]
    assert decoder.decode(encoder.encode(big), raw=True) == big
    assert encoder.table.entries == [] and encoder.table.size == 0
    assert len(decoder.header_table.dynamic_entries) == 0


# ---- in h2's place on the server connection ----


def _client() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )


E = TypeVar("E", bound=h2.events.Event)


def _only(events: list[h2.events.Event], kind: type[E]) -> E:
    (event,) = [e for e in events if isinstance(e, kind)]
    return event


def test_the_server_connection_runs_this_codec_with_h2s_client() -> None:
    client, server = _client(), _H2(config=_CONFIG)
    assert isinstance(server.encoder, Encoder) and isinstance(server.decoder, Decoder)
    client.initiate_connection()
    # The client allows no table for our responses: every one must start with the update.
    client.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    for n in range(3):
        sid = client.get_next_available_stream_id()
        request = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"example.test"),
            (b":path", b"/item/%d?q=%d" % (n, n * 7)),
            (b"cookie", b"session=abc%d" % n),
        ]
        client.send_headers(sid, request, end_stream=True)
        received = _only(server.receive_data(client.data_to_send()), h2.events.RequestReceived)
        assert list(received.headers or []) == request
        response = [
            (b":status", b"200"),
            (b"cache-control", b"max-age=%d" % n),
            (b"x-n", b"%d" % n),
        ]
        server.send_headers(sid, response, end_stream=True)
        answered = _only(client.receive_data(server.data_to_send()), h2.events.ResponseReceived)
        assert list(answered.headers or []) == response
    assert server.encoder.header_table_size == 0
    assert server.encoder.table.entries == []
