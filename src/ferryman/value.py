"""`Value`: equality, hash and repr by field, for the small read-only classes the
compiled request path makes per request (a cache rule set, a script's outcome, a map's
result).

Those would be frozen dataclasses, but mypyc compiles a dataclass's fields and leaves
its generated `__init__` a Python function, which then runs for every instance; a plain
slotted class with its own `__init__` is built natively. What the dataclass would have
given besides (==, hash, repr: tests and logs use them) comes from here, driven by the
class's `FIELDS`, which is also its `__slots__`.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Value"]


class Value:
    """Compares, hashes and prints as the tuple of the attributes `FIELDS` names, in
    that order; instances of different classes are never equal. Read-only by
    convention: nothing assigns to a field after `__init__`."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value) or type(other) is not type(self):
            return NotImplemented
        return self.values() == other.values()

    def __hash__(self) -> int:
        return hash(self.values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(self.FIELDS, self.values(), strict=True))
        return f"{type(self).__name__}({shown})"
