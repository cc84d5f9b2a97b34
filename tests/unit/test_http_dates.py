"""http_date against the standard library's formatdate(usegmt=True), which it replaces
on the hot path."""

from __future__ import annotations

import email.utils
import random

from ferryman.http.dates import http_date


def test_matches_formatdate_across_days_months_and_leap_years() -> None:
    rng = random.Random(7)
    samples = [0, 784111777, 951782400, 1709164800, 4102444799]
    samples += [rng.randrange(0, 4_102_444_800) for _ in range(2000)]
    for seconds in samples:
        assert http_date(seconds) == email.utils.formatdate(seconds, usegmt=True), seconds


def test_rfc_example() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
