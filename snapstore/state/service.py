# -*- test-case-name: tests.test_state -*-
"""
Running a state store as part of the twistd service tree.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from snapstore.state.errors import StateUnavailable


class StateService(Service):
    """
    Starts a state store (connecting and migrating) with the service tree
    and closes it on shutdown.

    L{MultiService} does not wait for a child's start, so users of the store
    must not assume it is ready: its calls fail with L{StateUnavailable}
    until it is, and L{whenReady} says when.

    @ivar store: the L{snapstore.interfaces.IStateStore}, which must also
        have a C{start()} method (both shipped back-ends do).
    """

    log = Logger()

    def __init__(self, store: Any) -> None:
        """
        @param store: see L{store}.
        """
        self.store = store

    def startService(self) -> None:
        """
        Start the store without waiting for it.
        """
        Service.startService(self)
        d = self.store.start()
        d.addErrback(self._startFailed)

    def _startFailed(self, failure: Any) -> None:
        """
        Log a store that could not start, which is not fatal to the
        service: calls needing state fail with L{StateUnavailable}.
        """
        failure.trap(StateUnavailable)
        # The back-end logged the cause; PostgreSQL keeps retrying.
        self.log.warn("State store not ready: {error}. Until it answers, calls that "
                      "need state this node never read (pins, the device limit, device "
                      "sessions) are refused with 503; retrying.",
                      error=failure.getErrorMessage())

    def whenReady(self) -> Deferred[None]:
        """
        @return: the store's L{whenReady}.
        """
        return self.store.whenReady()

    def stopService(self) -> Deferred[None]:
        """
        Close the store.

        @return: a Deferred firing when closed.
        """
        Service.stopService(self)
        return self.store.close()
