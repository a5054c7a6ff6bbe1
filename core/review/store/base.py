"""Constants, the error type and the time format shared by every store module.

Times are stored as fixed-width UTC ISO-8601 strings (:func:`iso`) on both
databases, so they sort as times, compare as strings and read the same in
the dashboard, the CLI and exports whichever database holds them.
"""
from __future__ import annotations

import datetime as _dt
from typing import Callable

from core.errors import DetectorError

#: Seconds a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 30.0
#: Default lease on a claimed item and default undo window (both configurable).
DEFAULT_LEASE_SECONDS = 600.0
DEFAULT_UNDO_WINDOW_SECONDS = 600.0

TIERS = ("real", "review", "fake")
LABELS = ("real", "fake", "unsure")

Clock = Callable[[], _dt.datetime]


class StoreError(DetectorError):
    """A review-store request that cannot be honoured (message is for analysts)."""

    code = "store_error"


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def iso(moment: _dt.datetime) -> str:
    """Fixed-width UTC ISO-8601 (``2026-01-02T03:04:05.000006Z``) so strings sort as times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | _dt.datetime | _dt.date | None, *, what: str = "time") -> str | None:
    """Normalise a user-supplied time (ISO string, date or datetime; naive = UTC) to :func:`iso`."""
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        return iso(value)
    if isinstance(value, _dt.date):
        return iso(_dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc))
    try:
        parsed = _dt.datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise StoreError(f"Not a valid {what}: {value!r} (use ISO-8601, e.g. 2026-01-31 or 2026-01-31T12:00:00Z)") from None
    return iso(parsed)


def from_iso(value: str) -> _dt.datetime:
    """The aware UTC datetime of a stored time string (the inverse of :func:`iso`), e.g. a lease expiry."""
    return _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
