"""Locks shared by processes, kept in a shared mapping: robust pthread mutexes of the C
library, through ctypes. The limit zones' tables (filters/zone.py) lock their groups
with them.

Why not fcntl byte-range locks (what the zones used first): each critical section costs
two system calls, lock and unlock, about 1.3 us each, and a request through limit_req
and limit_conn takes three (limit_conn counts in and out). An uncontended pthread mutex
is one atomic instruction in user space; the kernel is entered only when two workers
meet on one lock.

Robust (PTHREAD_MUTEX_ROBUST), as fcntl locks are: a process that dies holding one
(SIGKILL, the OOM killer) does not wedge the others. The kernel marks the mutex, the
next locker gets EOWNERDEAD, makes it consistent and goes on; what the dead process
was writing under it is at worst one entry's state half-updated, which for a rate or a
count is one wrong answer, not a wedge.

The per-request calls, lock and unlock, go through `_mutex_calls` (a C file of three
one-line wrappers, compiled by scripts/build-accel.sh beside the mypyc modules) when it
is built: a ctypes call costs about 140 ns, most of it converting the argument and
preparing libffi's frame, six times a request through limit_req and limit_conn. Without
the build the same calls go through ctypes, with the same results.

Where the C library lacks these functions (not glibc or musl), `MutexArray.create`
returns None and the caller locks with `FileLocks` (fcntl, one byte of the file per
index) instead: both are `GroupLocks`, so the caller's critical sections do not care.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
from collections.abc import Callable
from typing import Final, cast

__all__ = ["SLOT", "FileLocks", "GroupLocks", "MutexArray", "load_pthread"]

# Bytes per mutex: pthread_mutex_t is 40 on x86-64 glibc, 48 on some other ABIs; a
# cache line each also keeps two workers' locks off one line.
SLOT: Final = 64
_PTHREAD_PROCESS_SHARED: Final = 1
_PTHREAD_MUTEX_ROBUST: Final = 1


class _Pthread:
    """The C library's mutex functions: set-up through ctypes; lock, unlock and
    consistent (each takes a mutex's address and returns the C function's result)
    through `_mutex_calls` when `native` and it is built, else through ctypes too."""

    def __init__(self, lib: ctypes.CDLL, native: bool) -> None:
        def fn(name: str, *argtypes: type) -> ctypes._NamedFuncPointer:
            f = getattr(lib, name)
            f.argtypes = argtypes
            f.restype = ctypes.c_int
            return f  # type: ignore[no-any-return]

        ptr, num = ctypes.c_void_p, ctypes.c_int
        self.attr_init = fn("pthread_mutexattr_init", ptr)
        self.attr_setpshared = fn("pthread_mutexattr_setpshared", ptr, num)
        self.attr_setrobust = fn("pthread_mutexattr_setrobust", ptr, num)
        self.init = fn("pthread_mutex_init", ptr, ptr)
        self.lock: Callable[[int], int] = fn("pthread_mutex_lock", ptr)
        self.unlock: Callable[[int], int] = fn("pthread_mutex_unlock", ptr)
        self.consistent: Callable[[int], int] = fn("pthread_mutex_consistent", ptr)
        self.native = False
        if native:
            try:
                from ferryman.filters import _mutex_calls
            except ImportError:
                return
            self.lock = _mutex_calls.lock
            self.unlock = _mutex_calls.unlock
            self.consistent = _mutex_calls.consistent
            self.native = True


def load_pthread(native: bool = True) -> _Pthread | None:
    """The mutex functions (None where the C library has none); `native=False` makes
    every call through ctypes even where `_mutex_calls` is built (tests of both)."""
    try:
        # PyDLL, not CDLL: a call keeps the GIL instead of dropping and taking it back
        # around a lock held for a microsecond (the worker's other threads can wait).
        return _Pthread(ctypes.PyDLL(None), native)
    except (OSError, AttributeError):
        return None


_PTHREAD: Final = load_pthread()


class GroupLocks:
    """Locks numbered from 0, shared by every process that maps one file. An index
    beyond those a kind has shares a lock with a lower one."""

    __slots__ = ()

    def lock(self, index: int) -> None:
        raise NotImplementedError

    def unlock(self, index: int) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        """Lets go of the mapping or file (nothing to do by default)."""


class FileLocks(GroupLocks):
    """fcntl byte-range locks, one byte of the file per index: two system calls per
    critical section, but everywhere; the kernel drops a dead process's locks."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd  # owned by the caller, open as long as these locks are used

    def lock(self, index: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, index)

    def unlock(self, index: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, index)


class MutexArray(GroupLocks):
    """`count` mutexes at `offset` in a MAP_SHARED mapping; every process that maps the
    same file uses the same mutexes (their address may differ from process to
    process)."""

    __slots__ = (
        "_addresses",
        "_anchor",
        "_consistent",
        "_lock",
        "_unlock",
        "count",
        "native",
    )

    def __init__(self, mapping: mmap.mmap, offset: int, count: int, pthread: _Pthread) -> None:
        # Holds the mapping's buffer while the mutexes are in use: detach() lets it go.
        self._anchor: ctypes.Array[ctypes.c_char] | None = (
            ctypes.c_char * (count * SLOT)
        ).from_buffer(mapping, offset)
        base = ctypes.addressof(self._anchor)
        self.count = count
        # Each mutex's address as an int object made once: compiled, an int computed per
        # call is a machine word that becomes a new object for every call it is passed to.
        self._addresses: list[object] = [base + i * SLOT for i in range(count)]
        self._lock = cast(Callable[[object], int], pthread.lock)
        self._unlock = cast(Callable[[object], int], pthread.unlock)
        self._consistent = cast(Callable[[object], int], pthread.consistent)
        self.native = pthread.native

    @classmethod
    def create(
        cls, mapping: mmap.mmap, offset: int, count: int, pthread: _Pthread | None = _PTHREAD
    ) -> MutexArray | None:
        """Initialises `count` mutexes in fresh (zeroed) shared memory; None where the C
        library has no robust process-shared mutexes."""
        if pthread is None:
            return None
        attr = ctypes.create_string_buffer(64)  # pthread_mutexattr_t: 4 bytes on glibc
        if (
            pthread.attr_init(attr)
            or pthread.attr_setpshared(attr, _PTHREAD_PROCESS_SHARED)
            or pthread.attr_setrobust(attr, _PTHREAD_MUTEX_ROBUST)
        ):
            return None
        mutexes = cls(mapping, offset, count, pthread)
        for i in range(count):
            if pthread.init(mutexes._addresses[i], attr):
                mutexes.detach()
                return None
        return mutexes

    @classmethod
    def attach(
        cls, mapping: mmap.mmap, offset: int, count: int, pthread: _Pthread | None = _PTHREAD
    ) -> MutexArray:
        """The mutexes `create` made, in another mapping of the same file."""
        assert pthread is not None
        return cls(mapping, offset, count, pthread)

    def lock(self, index: int) -> None:
        """Locks mutex `index % count` (indexes beyond the array share its mutexes)."""
        address = self._addresses[index % self.count]
        rc = self._lock(address)
        if rc:
            if rc != errno.EOWNERDEAD:
                raise OSError(rc, "pthread_mutex_lock failed")
            # Its holder died: this process holds it now, and says it is usable again.
            self._consistent(address)

    def unlock(self, index: int) -> None:
        self._unlock(self._addresses[index % self.count])

    def detach(self) -> None:
        """Lets the mapping go (it cannot be closed while the mutexes point into it)."""
        self._anchor = None
        self._addresses = []  # a lock after this is an IndexError, not a stray pointer
