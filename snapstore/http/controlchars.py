# -*- test-case-name: tests.test_controlchars -*-
"""
Control characters: refused in requests, escaped on the way to a person.

A CR, NUL or escape sequence in a request target or header value is never
needed by snapd or a browser, and it is how requests are split at a front
proxy, how log lines are forged, and how a terminal showing the C{snapstore}
command's tables is taken over.  The listeners refuse them
(L{requestControls}); text that reaches logs or the command's output from
elsewhere (a device's serial, a snap's name in a body) goes through
L{escapeControls}.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

#: Bytes no request line or header value may carry: C0 controls except
#: horizontal tab, and DEL.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: Characters escaped in text for logs and terminals: C0 controls (tab
#: included: it breaks columns), DEL and C1 controls.
_CONTROL_TEXT = re.compile("[\x00-\x1f\x7f-\x9f]")

#: The same, sparing newline and tab, for output that is made of lines.
_CONTROL_TEXT_INLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def requestControls(target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> Optional[str]:
    """
    Why a request head must be refused for its control characters, or
    C{None}: a control byte (or a space) in the target, or a control byte
    in a header name or value (tab allowed in values).
    """
    if _CONTROL_BYTES.search(target) or b" " in target or b"\t" in target:
        return "control character in the request target"
    for name, value in headers:
        if _CONTROL_BYTES.search(name) or b"\t" in name:
            return "control character in a header name"
        if _CONTROL_BYTES.search(value):
            return f"control character in the {name.decode('latin-1')} header"
    return None


def escapeControls(text: str, keepLines: bool = False) -> str:
    """
    C{text} with each control character written as C{\\xNN}, so that one
    value stays on one line and cannot move a terminal's cursor.

    @param keepLines: spare newlines and tabs (for output made of lines
        whose values were escaped already).
    """
    pattern = _CONTROL_TEXT_INLINE if keepLines else _CONTROL_TEXT
    if pattern.search(text) is None:
        return text  # the common case, four times per access line (issue 20)
    return pattern.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return "\\x%02x" % ord(match.group())
