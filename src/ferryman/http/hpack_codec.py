"""HPACK (RFC 7541), the HTTP/2 header compression, for the server connection:
h2 runs it through `H2Connection.encoder` and `.decoder` (server/h2_connection.py).

Why not the hpack library's own codec: it spent about 12 us decoding a request of seven
fields that were all already in the table (h2load's, after the first), and 5 us
encoding a response head of five, per request, compiled or not, of the 71 us the server
connection spends on the whole request (bench/h2_inprocess.py): per field it makes a
memoryview slice, a HeaderTuple, two debug-log calls and a linear search of the dynamic
table. This codec is compiled with the hot path (_accel.py) and does none of those.

What stays the library's: the static table (Appendix A), the Huffman code (Appendix
B) and its decoding state machine, and the exceptions, which end the connection (an
oversized list with ENHANCE_YOUR_CALM, h2's mapping; the rest with COMPRESSION_ERROR,
server/h2_connection.py's). The unit tests check both directions against the library's
codec.

Where the two differ, and RFC 7541 lets either:
- a literal is Huffman-coded only when that is shorter (the library always codes it);
- a decoded field is a plain (name, value) tuple of bytes, also one sent never-indexed
  (the library marks those with its NeverIndexedHeaderTuple): nothing here forwards a
  request over HPACK, so there is no representation to keep (7.1.3);
- table size changes are sent as RFC 7541 4.2 asks, the smallest since the last block
  and then the current one, where the library sends every change;
- the encoder's table stays at 4,096 octets when a client offers more, so a client
  cannot make a connection hold more of our memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import (
    HUFFMAN_COMPLETE,
    HUFFMAN_EMIT_SYMBOL,
    HUFFMAN_FAIL,
    HUFFMAN_TABLE,
)
from hpack.table import HeaderTable

__all__ = ["DEFAULT_TABLE_SIZE", "Decoder", "Encoder", "huffman_decode", "huffman_encode"]

Field = tuple[bytes, bytes]

# RFC 9113 6.5.2: SETTINGS_HEADER_TABLE_SIZE's initial value, both directions.
DEFAULT_TABLE_SIZE: Final = 4096
# RFC 7541 4.1: an entry's size is its name and value plus this.
_ENTRY_OVERHEAD: Final = 32
# An integer may take five continuation octets (a shift up to 28 bits; the library's
# limit too): enough for any size or index here, few enough that a run of 0x80 octets
# is refused at once.
_MAX_INT_SHIFT: Final = 28

_STATIC: Final[tuple[Field, ...]] = HeaderTable.STATIC_TABLE
_STATIC_LEN: Final = len(_STATIC)


def _static_maps() -> tuple[dict[Field, int], dict[bytes, int]]:
    full: dict[Field, int] = {}
    names: dict[bytes, int] = {}
    for i, field in enumerate(_STATIC):
        full.setdefault(field, i + 1)
        names.setdefault(field[0], i + 1)
    return full, names


_STATIC_FULL, _STATIC_NAME = _static_maps()

# The Huffman state machine as three flat lists of ints (compiled code reads a list of
# ints without unboxing a tuple per nibble).
_NEXT: Final[list[int]] = [entry[0] for entry in HUFFMAN_TABLE]
_FLAGS: Final[list[int]] = [entry[1] for entry in HUFFMAN_TABLE]
_SYMBOL: Final[list[int]] = [entry[2] for entry in HUFFMAN_TABLE]
_CODES: Final[list[int]] = list(REQUEST_CODES)
_LENGTHS: Final[list[int]] = list(REQUEST_CODES_LENGTH)


def huffman_decode(data: bytes) -> bytes:
    out = bytearray()
    state = 0
    flags = HUFFMAN_COMPLETE  # an empty string is complete
    for byte in data:
        i = state * 16 + (byte >> 4)
        flags = _FLAGS[i]
        if flags & HUFFMAN_FAIL:
            raise HPACKDecodingError("Invalid Huffman string")
        if flags & HUFFMAN_EMIT_SYMBOL:
            out.append(_SYMBOL[i])
        i = _NEXT[i] * 16 + (byte & 0x0F)
        flags = _FLAGS[i]
        if flags & HUFFMAN_FAIL:
            raise HPACKDecodingError("Invalid Huffman string")
        if flags & HUFFMAN_EMIT_SYMBOL:
            out.append(_SYMBOL[i])
        state = _NEXT[i]
    if not flags & HUFFMAN_COMPLETE:
        raise HPACKDecodingError("Incomplete Huffman string")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    out = bytearray()
    acc = 0
    bits = 0
    for byte in data:
        length = _LENGTHS[byte]
        acc = (acc << length) | _CODES[byte]
        bits += length
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
        # At most 7 bits are left over, so the accumulator never grows past 37 bits.
        acc &= (1 << bits) - 1
    if bits:
        # Padded with the most significant bits of EOS: all ones (5.2).
        out.append(((acc << (8 - bits)) | (0xFF >> bits)) & 0xFF)
    return bytes(out)


def _huffman_size(data: bytes) -> int:
    bits = 0
    for byte in data:
        bits += _LENGTHS[byte]
    return (bits + 7) >> 3


def _entry_size(field: Field) -> int:
    """A field's size as a table entry (4.1) and in a header list (RFC 9113 6.5.2)."""
    return len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD


def _read_int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """The integer at `pos` with a `prefix`-bit prefix (5.1), and the position after it."""
    if pos >= len(data):
        raise HPACKDecodingError("Truncated header block")
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    end = len(data)
    while pos < end:
        octet = data[pos]
        pos += 1
        value += (octet & 0x7F) << shift
        if not octet & 0x80:
            return value, pos
        shift += 7
        if shift > _MAX_INT_SHIFT:
            raise HPACKDecodingError("HPACK integer representation is too long")
    raise HPACKDecodingError("Truncated header block")


def _read_string(data: bytes, pos: int) -> tuple[bytes, int]:
    """The string literal at `pos` (5.2), and the position after it."""
    if pos >= len(data):
        raise HPACKDecodingError("Truncated header block")
    huffman = data[pos] & 0x80
    length, pos = _read_int(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HPACKDecodingError("Truncated header block")
    raw = data[pos:end]
    return (huffman_decode(raw) if huffman else raw), end


def _put_int(out: bytearray, value: int, prefix: int, flags: int) -> None:
    mask = (1 << prefix) - 1
    if value < mask:
        out.append(flags | value)
        return
    out.append(flags | mask)
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_string(out: bytearray, data: bytes) -> None:
    if _huffman_size(data) < len(data):
        coded = huffman_encode(data)
        _put_int(out, len(coded), 7, 0x80)
        out += coded
    else:
        _put_int(out, len(data), 7, 0)
        out += data


class _Table:
    """The dynamic table (2.3.2, 4): the newest entry is index 62, the oldest is
    evicted first. `inserted` counts every entry ever added, so an entry's index follows
    from the count at its insertion (the encoder's maps keep that count)."""

    def __init__(self, max_size: int) -> None:
        self.entries: list[Field] = []  # oldest first
        self.size = 0
        self.max_size = max_size
        self.inserted = 0

    def get(self, index: int) -> Field:
        if index <= 0:
            raise InvalidTableIndex(f"Invalid table index {index}")
        if index <= _STATIC_LEN:
            return _STATIC[index - 1]
        entries = self.entries
        back = index - _STATIC_LEN
        if back > len(entries):
            raise InvalidTableIndex(f"Invalid table index {index}")
        return entries[len(entries) - back]

    def add(self, field: Field) -> None:
        size = _entry_size(field)
        if size > self.max_size:
            # 4.4: an entry larger than the table empties it and is not added.
            self.shrink(0)
            return
        self.entries.append(field)
        self.size += size
        self.inserted += 1
        self.added(field)
        self.shrink(self.max_size)

    def resize(self, max_size: int) -> None:
        self.max_size = max_size
        self.shrink(max_size)

    def shrink(self, limit: int) -> None:
        entries = self.entries
        while self.size > limit:
            field = entries.pop(0)
            self.size -= _entry_size(field)
            self.evicted(field, self.inserted - len(entries) - 1)

    def added(self, field: Field) -> None:
        pass

    def evicted(self, field: Field, serial: int) -> None:
        pass


class _SearchTable(_Table):
    """The encoder's table, with the newest insertion of each field and of each name,
    so a search is two dict lookups rather than a walk of the table."""

    def __init__(self, max_size: int) -> None:
        super().__init__(max_size)
        self.full: dict[Field, int] = {}
        self.names: dict[bytes, int] = {}

    def added(self, field: Field) -> None:
        serial = self.inserted - 1
        self.full[field] = serial
        self.names[field[0]] = serial

    def evicted(self, field: Field, serial: int) -> None:
        if self.full.get(field) == serial:
            del self.full[field]
        if self.names.get(field[0]) == serial:
            del self.names[field[0]]

    def find(self, field: Field) -> int:
        """The index of the field, else 0."""
        index = _STATIC_FULL.get(field, 0)
        if index:
            return index
        serial = self.full.get(field, -1)
        return _STATIC_LEN + self.inserted - serial if serial >= 0 else 0

    def find_name(self, name: bytes) -> int:
        """The index of an entry with this name, else 0."""
        index = _STATIC_NAME.get(name, 0)
        if index:
            return index
        serial = self.names.get(name, -1)
        return _STATIC_LEN + self.inserted - serial if serial >= 0 else 0


class Decoder:
    """The request side: header blocks in, (name, value) lists out. The two limits
    are h2's to set, from our SETTINGS once the client acknowledges them."""

    def __init__(self, max_header_list_size: int = 1 << 16) -> None:
        self.table = _Table(DEFAULT_TABLE_SIZE)
        # The decoded list's size (names, values and 32 a field, as 6.5.2 counts it)
        # over this is refused as OversizedHeaderListError (a decompression bomb).
        self.max_header_list_size = max_header_list_size
        # The table size the client's encoder may choose: our SETTINGS_HEADER_TABLE_SIZE.
        self.max_allowed_table_size = DEFAULT_TABLE_SIZE

    def decode(self, data: bytes, raw: bool = True) -> list[Field]:
        """`raw` is h2's argument; the fields are always bytes."""
        table = self.table
        fields: list[Field] = []
        listed = 0
        pos = 0
        end = len(data)
        while pos < end:
            first = data[pos]
            if first & 0x80:  # indexed (6.1)
                index, pos = _read_int(data, pos, 7)
                field = table.get(index)
            elif first & 0x40:  # literal, then indexed (6.2.1)
                field, pos = self._literal(data, pos, 6)
                table.add(field)
            elif first & 0x20:  # dynamic table size update (6.3)
                if fields:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                size, pos = _read_int(data, pos, 5)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                table.resize(size)
                continue
            else:  # literal, not indexed or never indexed (6.2.2, 6.2.3)
                field, pos = self._literal(data, pos, 4)
            fields.append(field)
            listed += _entry_size(field)
            if listed > self.max_header_list_size:
                raise OversizedHeaderListError(
                    f"A header list larger than {self.max_header_list_size} has been received"
                )
        # Our SETTINGS may have shrunk the table since the client's last size update.
        if table.max_size > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return fields

    def _literal(self, data: bytes, pos: int, prefix: int) -> tuple[Field, int]:
        index, pos = _read_int(data, pos, prefix)
        if index:
            name = self.table.get(index)[0]
        else:
            name, pos = _read_string(data, pos)
        value, pos = _read_string(data, pos)
        return (name, value), pos


class Encoder:
    """The response side: every field is indexed, as the library's encoder does; a
    field already in a table goes out as its index (one octet for most)."""

    def __init__(self) -> None:
        self.table = _SearchTable(DEFAULT_TABLE_SIZE)
        # The smallest size set since the last block, -1 when unchanged (4.2).
        self.smallest = -1

    @property
    def header_table_size(self) -> int:
        return self.table.max_size

    @header_table_size.setter
    def header_table_size(self, size: int) -> None:
        # h2 sets this from the client's SETTINGS_HEADER_TABLE_SIZE. Any size up to it is
        # ours to choose (4.2); above the default it would only grow every connection's
        # memory.
        size = min(size, DEFAULT_TABLE_SIZE)
        if size == self.table.max_size and self.smallest < 0:
            return
        self.smallest = size if self.smallest < 0 else min(self.smallest, size)
        self.table.resize(size)

    def encode(self, headers: Iterable[Field]) -> bytes:
        """A header block for `headers`; a literal is Huffman-coded when that is shorter."""
        out = bytearray()
        table = self.table
        if self.smallest >= 0:
            if self.smallest < table.max_size:
                _put_int(out, self.smallest, 5, 0x20)
            _put_int(out, table.max_size, 5, 0x20)
            self.smallest = -1
        for field in headers:
            index = table.find(field)
            if index:
                _put_int(out, index, 7, 0x80)
                continue
            name_index = table.find_name(field[0])
            _put_int(out, name_index, 6, 0x40)
            if not name_index:
                _put_string(out, field[0])
            _put_string(out, field[1])
            table.add(field)
        return bytes(out)
