# -*- test-case-name: tests.test_startup -*-
"""
Which rules directory applies when C{--rules-dir} is not given.

A service started without rules enforces no device limit and no pins, so
running without them must never happen by accident.  When neither the
system directory nor C{./rules.d} exists, the rule files shipped with
snapstore apply: the checkout's C{rules.d} (a source tree or an editable
install), or the copy C{pip install} puts under C{<prefix>/share/snapstore}
(setup.cfg's C{data_files}).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

#: The directory a system installation (the Debian package) uses.
SYSTEM_RULES = "/etc/snapstore/rules.d"
#: The directory a checkout or a working directory may hold.
LOCAL_RULES = "./rules.d"


def shippedRulesDirectory() -> Optional[str]:
    """
    The rule files shipped with this copy of snapstore, or C{None} when
    they cannot be found (an installation that left them out).
    """
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = [
        os.path.join(checkout, "rules.d"),
        os.path.join(sys.prefix, "share", "snapstore", "rules.d"),
    ]
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "20-device-limit.py")):
            return candidate
    return None


def defaultRulesDirectory() -> str:
    """
    The rules directory when none is configured: C{/etc/snapstore/rules.d}
    when it exists, else C{./rules.d} when it exists, else the shipped
    rules; C{./rules.d} (absent) when even those are missing.
    """
    for candidate in (SYSTEM_RULES, LOCAL_RULES):
        if os.path.isdir(candidate):
            return candidate
    return shippedRulesDirectory() or LOCAL_RULES


def isShipped(directory: str) -> bool:
    """
    Whether C{directory} is the shipped rules (for messages saying so).
    """
    shipped = shippedRulesDirectory()
    return shipped is not None and os.path.realpath(directory) == os.path.realpath(shipped)
