# -*- test-case-name: tests.test_policy -*-
"""
The TIME and DURATION arguments of the change-control verbs (design.md
section 9): RFC 3339 (C{2027-07-01T00:00:00Z}) or a duration from now, a
whole number with C{s}, C{m}, C{h} or C{d} (C{90s}, C{12h}, C{30d}).
"""

from __future__ import annotations

import datetime
import re

_DURATION = re.compile(r"\A([0-9]{1,9})([smhd])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TimeSpecError(ValueError):
    """
    A TIME or DURATION that is neither form; the message says what is
    accepted.
    """


def parseDuration(text: str) -> float:
    """
    @return: C{text} (e.g. C{12h}) in seconds, at least 1.
    @raise TimeSpecError: for anything else.
    """
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) < 1:
        raise TimeSpecError(f"{text!r} is not a duration: give a whole number >= 1 with "
                            "s, m, h or d (90s, 12h, 30d)")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def parseTime(text: str, now: float) -> float:
    """
    @param now: the POSIX time a duration counts from.
    @return: C{text} as POSIX time.
    @raise TimeSpecError: when C{text} is neither RFC 3339 with a time zone
        nor a duration.
    """
    if not isinstance(text, str):
        raise TimeSpecError(f"{text!r} is not a time")
    if _DURATION.match(text.strip()):
        return now + parseDuration(text)
    spelled = text.strip()
    if spelled.endswith(("Z", "z")):
        spelled = spelled[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(spelled)
    except ValueError:
        moment = None
    if moment is None or "T" not in spelled.upper() or moment.tzinfo is None:
        raise TimeSpecError(f"{text!r} is not a time: give RFC 3339 with a time zone "
                            "(2027-07-01T00:00:00Z) or a duration from now (90s, 12h, 30d)")
    return moment.timestamp()
