# -*- test-case-name: tests.test_startup -*-
"""
The service's listeners (C{--store-endpoint}, C{--proxy-endpoint},
C{--admin-endpoint}), with failures an operator can act on.

Twisted reports an endpoint string it cannot parse, or a port another
program holds, as a traceback that ends in C{ValueError: invalid literal
for int()} or C{CannotListenError}, without saying which option was wrong.
L{checkEndpoint} runs while the options are parsed, so a bad string is a
usage error naming its option; L{ListeningService} turns a port that cannot
be bound at start-up into one logged line naming the option, and exits.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

#: The exit status when a listener cannot be opened (as for a usage error).
EXIT_CANNOT_LISTEN = 1


def checkEndpoint(reactor: Any, option: str, description: str) -> Any:
    """
    Parse an endpoint string the way the listener will.

    @param option: the option's name without dashes, for the message.
    @return: the server endpoint.
    @raise ValueError: naming C{--option} and the string, when Twisted
        cannot make an endpoint of it.
    """
    try:
        return serverFromString(reactor, description)
    except Exception as error:
        reason = str(error) or type(error).__name__
        raise ValueError(
            f"--{option}: not a usable endpoint: {description!r} ({reason}); "
            f"use e.g. tcp:8000, tcp:8000:interface=127.0.0.1 or "
            f"ssl:8443:privateKey=KEY:certKey=CERT")


class ListeningService(StreamServerEndpointService):
    """
    A listener that, when its port cannot be bound at start-up, logs one
    line naming its option and stops the process instead of raising a
    traceback through twistd.

    @ivar option: the option the endpoint came from, without dashes.
    """

    log = Logger()

    def __init__(self, option: str, description: str, endpoint: Any, factory: Any) -> None:
        super().__init__(endpoint, factory)
        self.option = option
        self.description = description
        # As strports.service: fail start-up instead of logging later.
        self._raiseSynchronously = True
        self.setName(option)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as error:
            reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
            self.log.critical(
                "--{option} {description}: cannot listen on port {port}: {reason} "
                "(another program, or another snapstore, has it: stop it or choose "
                "another port with --{option})",
                option=self.option, description=self.description, port=error.port,
                reason=reason)
            raise SystemExit(EXIT_CANNOT_LISTEN)


def listen(reactor: Any, option: str, description: str, factory: Any) -> ListeningService:
    """
    The service listening on C{description} (from C{--option}) with
    C{factory}; its name is C{option}.
    """
    return ListeningService(option, description, checkEndpoint(reactor, option, description),
                            factory)
