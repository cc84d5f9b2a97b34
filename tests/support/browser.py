"""Headless Chromium for integration tests, and a tiny PNG codec to check what it drew.

Generic on purpose (the forward-proxy test and the dashboard test both use it):
`run_chromium` starts Debian's /usr/bin/chromium with the flags a closed, root-run test
machine needs, bounded by a timeout, in its own session so that every helper process it
forks is stopped with it (by that session's id, never by name); `screenshot` renders one
URL into a PNG; `read_png` / `write_png` are a pure-Python PNG decoder and encoder
(8-bit greyscale, RGB, RGBA, non-interlaced: what Chromium writes and what a test page
needs), so no imaging library is needed to look at pixels.

Must not know about Ferryman: proxies, host mappings and the like come in as arguments.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BASE_FLAGS",
    "ChromiumRun",
    "Png",
    "chromium_path",
    "read_png",
    "run_chromium",
    "screenshot",
    "solid_png",
    "write_png",
]

# Chromium features off in every run (one --disable-features: a second would replace
# it). Background fetches of Google's hosts (network time, hints, translation, media
# router, certificate transparency lists), and the Local/Private Network Access checks
# that stop a test page on one loopback address from loading from another (headless
# Chromium has nobody to grant the permission).
_DISABLED_FEATURES = (
    "NetworkTimeServiceQuerying",
    "OptimizationHints",
    "MediaRouter",
    "DialMediaRouteProvider",
    "Translate",
    "AutofillServerCommunication",
    "CertificateTransparencyComponentUpdater",
    "LocalNetworkAccessChecks",
    "BlockInsecurePrivateNetworkRequests",
    "PrivateNetworkAccessSendPreflights",
    "PrivateNetworkAccessRespectPreflightResults",
)

# The flags a headless run on a machine without a network or a display needs: as root
# Chromium refuses to start sandboxed; without the background-networking flags it tries
# Google's hosts at every start (refused here, slowly; through a proxy under test they
# would fill its log); no GPU in a container; QUIC off so that nothing goes around an
# HTTP proxy over UDP.
BASE_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-component-extensions-with-background-pages",
    "--disable-breakpad",
    "--no-pings",
    "--no-service-autorun",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--password-store=basic",
    "--use-mock-keychain",
    f"--disable-features={','.join(_DISABLED_FEATURES)}",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--disable-dev-shm-usage",
)


def chromium_path() -> str:
    """Debian's Chromium (package `chromium`; scripts/install-system-deps.sh installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise FileNotFoundError("chromium is not installed (run scripts/install-system-deps.sh)")
    return found


@dataclass(frozen=True, slots=True)
class ChromiumRun:
    """What one Chromium run did: its exit status and everything it printed."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    seconds: float

    def __repr__(self) -> str:
        return f"ChromiumRun(rc={self.returncode} {self.seconds:.1f}s argv={self.argv!r})"


def run_chromium(
    args: Sequence[str],
    timeout: float = 60.0,
    *,
    user_data_dir: Path | None = None,
    base_flags: Sequence[str] = BASE_FLAGS,
) -> ChromiumRun:
    """Run Chromium with `base_flags`, a fresh profile and `args`; wait at most `timeout`.

    The profile is a new empty directory every run (`user_data_dir` when given, emptied
    first and kept afterwards for a failing test to read; else a temporary one). On
    timeout the whole session Chromium started is killed and TimeoutError carries its
    output (also in the file PROFILE.chromium.log beside the profile).
    """
    with tempfile.TemporaryDirectory(prefix="chromium-") as scratch:
        profile = Path(scratch) / "profile" if user_data_dir is None else user_data_dir
        shutil.rmtree(profile, ignore_errors=True)  # no cache or state from a last run
        profile.mkdir(parents=True)
        argv = (chromium_path(), *base_flags, f"--user-data-dir={profile}", *args)
        log_path = profile.parent / f"{profile.name}.chromium.log"
        started = time.monotonic()
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: its helpers are stopped with it
            )
            try:
                returncode = popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_session(popen)
                raise TimeoutError(
                    f"chromium ran longer than {timeout}s; output:\n{_read(log_path)}"
                ) from None
            finally:
                _kill_session(popen)  # helpers that outlive the browser process
        return ChromiumRun(argv, returncode, _read(log_path), time.monotonic() - started)


def _kill_session(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of the session this Chromium leads (its own pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def screenshot(
    url: str,
    out: Path,
    *,
    size: tuple[int, int] = (800, 600),
    args: Sequence[str] = (),
    timeout: float = 60.0,
    virtual_time_budget_ms: int = 5000,
) -> ChromiumRun:
    """Render `url` into the PNG `out` (`--screenshot`); raise if no PNG was written.

    `--virtual-time-budget` lets the page's scripts and sub-resources settle before the
    capture (virtual time only advances when the page is idle, so it waits for loads)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    run = run_chromium(
        [
            f"--screenshot={out}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={virtual_time_budget_ms}",
            *args,
            url,
        ],
        timeout,
        user_data_dir=out.parent / f"{out.stem}-profile",
    )
    if not out.exists():
        raise AssertionError(f"chromium wrote no screenshot ({run!r}); output:\n{run.output}")
    return run


# ---------------------------------------------------------------- PNG


@dataclass(frozen=True, slots=True)
class Png:
    """A decoded image: `rows[y]` is RGBA bytes, 4 per pixel."""

    width: int
    height: int
    rows: tuple[bytes, ...]

    def pixel(self, x: int, y: int) -> tuple[int, int, int, int]:
        row = self.rows[y]
        r, g, b, a = row[4 * x : 4 * x + 4]
        return (r, g, b, a)

    def rgb(self, x: int, y: int) -> tuple[int, int, int]:
        return self.pixel(x, y)[:3]

    def count(
        self,
        color: tuple[int, int, int],
        tolerance: int = 8,
        box: tuple[int, int, int, int] | None = None,
    ) -> int:
        """How many pixels (inside box=(x0, y0, x1, y1), exclusive ends) are within
        `tolerance` of `color` on every channel."""
        x0, y0, x1, y1 = box or (0, 0, self.width, self.height)
        n = 0
        for y in range(y0, y1):
            row = self.rows[y]
            for x in range(x0, x1):
                i = 4 * x
                if all(abs(row[i + c] - color[c]) <= tolerance for c in range(3)):
                    n += 1
        return n

    def __repr__(self) -> str:
        return f"Png({self.width}x{self.height})"


_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def read_png(path: Path) -> Png:
    """Decode an 8-bit, non-interlaced greyscale/RGB/RGBA PNG (ISO 15948) into RGBA."""
    data = path.read_bytes()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = len(_SIGNATURE), bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: no IHDR")
    width, height, depth, ctype, _comp, _filt, interlace = header
    if depth != 8 or ctype not in _CHANNELS or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, type {ctype}, {interlace=})")
    channels = _CHANNELS[ctype]
    raw = _unfilter(zlib.decompress(bytes(idat)), width, height, channels)
    return Png(width, height, tuple(_to_rgba(row, channels) for row in raw))


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> list[bytes]:
    """Undo the per-row filters (ISO 15948 section 9: None, Sub, Up, Average, Paeth)."""
    stride, rows = width * bpp, []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif ftype == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
            elif ftype != 0:
                raise ValueError(f"bad PNG filter type {ftype}")
        rows.append(bytes(line))
        prev = line
    return rows


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _to_rgba(row: bytes, channels: int) -> bytes:
    if channels == 4:
        return row
    if channels == 3:
        out = bytearray()
        for i in range(0, len(row), 3):
            out += row[i : i + 3] + b"\xff"
        return bytes(out)
    if channels == 2:
        return b"".join(bytes((g, g, g, a)) for g, a in zip(row[::2], row[1::2], strict=True))
    return b"".join(bytes((g, g, g, 255)) for g in row)


def write_png(width: int, height: int, rgba_rows: Sequence[bytes]) -> bytes:
    """Encode RGBA rows (4 bytes a pixel) as a PNG (filter None on every row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + row for row in rgba_rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        _SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one opaque colour: a test image whose pixels a screenshot can find."""
    row = bytes((*rgb, 255)) * width
    return write_png(width, height, [row] * height)
