# -*- test-case-name: tests.test_tap -*-
"""
twistd plugin entry: C{twistd snapstore}.  Kept to one line of substance
because twistd imports every module in twisted/plugins on each run.
"""

from twisted.application.service import ServiceMaker

snapstore = ServiceMaker(
    "snapstore",
    "snapstore.tap",
    "Caching proxy for the Snap Store (store API relay, blob cache, forward proxy)",
    "snapstore",
)
