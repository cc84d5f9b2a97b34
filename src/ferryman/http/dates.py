"""HTTP dates (RFC 9110 5.6.7, IMF-fixdate) formatted without the email package: the
Date line is written every second by every worker, and importing email.utils only for
it cost each worker over 1 MiB of memory."""

from __future__ import annotations

import time
from typing import Final

__all__ = ["http_date"]

# IMF-fixdate's names are English whatever the locale (strftime's %a/%b are not).
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


def http_date(seconds: float) -> str:
    """`Sun, 06 Nov 1994 08:49:37 GMT` for `seconds` since the epoch."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d}"
        f" {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )
