# -*- test-case-name: tests.test_offline -*-
"""
The outbound agent of an offline node: it refuses every request.

C{--offline} promises that nothing leaves the machine.  Rather than trusting
every part that might reach out (the relay, the download path, the rules,
the admin API's connection check) to remember the mode, the composition
root (C{snapstore.tap}) gives the upstream client this one (behind the
offline store, L{snapstore.offline.store.LocalStoreAgent}),
so a request that slips through fails at once with a message that says why,
instead of hanging on an unreachable network.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectError
from twisted.logger import Logger
from twisted.web.iweb import IAgent
from zope.interface import implementer


class OfflineRefused(ConnectError):
    """
    An outbound request was refused because the node is offline.
    """


@implementer(IAgent)
class RefusingAgent:
    """
    An L{IAgent} that opens no connection: every request fails with
    L{OfflineRefused}.

    @ivar refused: the URLs refused so far, for tests and logs.
    """

    log = Logger()

    def __init__(self) -> None:
        self.refused: list[bytes] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                bodyProducer: Any = None) -> Deferred[Any]:
        self.refused.append(uri)
        self.log.info("offline: refused {method} {uri}", method=method.decode("ascii", "replace"),
                      uri=uri.decode("ascii", "replace"))
        return fail(OfflineRefused(
            string=f"this snapstore runs with --offline and never connects out "
                   f"({uri.decode('ascii', 'replace')})"))
