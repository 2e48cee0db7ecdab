# -*- test-case-name: tests.test_rules -*-
"""
The values store-endpoint rules are given and return.

The forward proxy's verdicts (L{Allow}, L{Deny}, L{Abstain}) live in
L{snapstore.rules.verdicts}; this module adds what only the store endpoint
needs: the description of a device's request, a refusal that carries a
store error code, and cache policies.
"""

from __future__ import annotations

import json
from types import CoroutineType
from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from snapstore.rules.verdicts import Deny

#: Seconds in a day, for TTLs written in rules files.
DAY = 24 * 3600


@attrs.frozen
class StoreDeny(Deny):
    """
    Refuse a store API call the way the store would: the device gets
    C{code} with C{{"error-list":[{"code": errorCode, "message": reason}]}},
    which snapd shows to the user.

    @ivar errorCode: the store error code, e.g. C{device-limit-exceeded}
        or C{name-not-found}.
    """

    errorCode: str = "forbidden"


@attrs.frozen
class DeviceIdentity:
    """
    Who made a request, as docs/architecture.md ("Devices") counts devices.

    @ivar identity: C{brand/model/serial}, or C{address:<ip>} when the
        device sent no known session.
    @ivar model: C{brand/model} when known, else C{""}.
    @ivar address: the client's IP address.
    @ivar unknownSession: the request carried a device session the proxy
        does not know (so C{identity} is the address until the device
        opens a session through the proxy).
    @ivar groups: the names of the device groups it is a member of
        (L{snapstore.fleet.groups}), so a rule can say "deny classic snaps
        to group kiosks".
    """

    identity: str
    model: str = ""
    address: str = ""
    unknownSession: bool = False
    groups: tuple[str, ...] = ()

    @property
    def hasSerial(self) -> bool:
        return not self.identity.startswith("address:")


@attrs.frozen
class StoreRequest:
    """
    A device's call to the store endpoint, as rules see it.

    Built once per request by the store endpoint, so that rules need no
    HTTP objects and tests can make one in a line.

    @ivar method: e.g. C{b"POST"}.
    @ivar path: the request path, e.g. C{/v2/snaps/refresh}.
    @ivar query: the query arguments, name to list of values.
    @ivar headers: C{(name, value)} byte pairs, names lower-case.
    @ivar body: the request body (refresh and session calls), or C{b""}.
    @ivar device: the L{DeviceIdentity} of the caller.
    @ivar upstreamHeaders: the headers the proxy sends upstream for this
        call (a L{twisted.web.http_headers.Headers}), so that a rule asking
        upstream something on the device's behalf sends the same ones.
    @ivar blob: for downloads, the L{snapstore.state.records.BlobRecord}
        being fetched; else C{None}.
    @ivar parsedBody: the parse of C{body} the store endpoint shares with
        the upstream client (a L{snapstore.http.bodies.ParsedJSON}: its
        C{value()} parses once), or C{None}; L{json} parses once either
        way.
    """

    method: bytes
    path: str
    query: dict[str, list[str]] = attrs.field(factory=dict)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    device: DeviceIdentity = DeviceIdentity("address:unknown")
    upstreamHeaders: Any = None
    blob: Any = None
    parsedBody: Any = attrs.field(default=None, eq=False, repr=False)
    # json()'s own memo when no parse is shared (new with each evolve).
    _parsed: list[Any] = attrs.field(factory=list, init=False, eq=False, repr=False)

    def header(self, name: bytes) -> Optional[bytes]:
        """
        The first value of header C{name} (case-insensitive), or C{None}.
        """
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def arg(self, name: str) -> Optional[str]:
        """
        The first value of query argument C{name}, or C{None}.
        """
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def architecture(self) -> str:
        """
        The device's architecture: the C{architecture} argument, else the v2
        or v1 architecture header, else C{""}.
        """
        value = (self.arg("architecture")
                 or self.header(b"snap-device-architecture")
                 or self.header(b"x-ubuntu-architecture")
                 or b"")
        return value.decode("ascii", "replace") if isinstance(value, bytes) else value

    def json(self) -> Any:
        """
        The body parsed as JSON, or C{None} when it is not JSON.  It is
        parsed once and the same value is given to every caller (several
        rules, the inventory): read it, do not change it.
        """
        if not self._parsed:
            try:
                if self.parsedBody is not None:
                    value = self.parsedBody.value()
                else:
                    value = json.loads(self.body or b"null")
            except ValueError:
                value = None
            self._parsed.append(value)
        return self._parsed[0]


@attrs.frozen
class ResponseHead:
    """
    What upstream answered, as cache rules see it.

    @ivar kind: what the response is: C{"blob"}, C{"assertion"},
        C{"refresh"}, C{"info"}, C{"find"} or C{"other"}.
    @ivar code: the HTTP status.
    @ivar headers: C{(name, value)} byte pairs.
    @ivar assertionType: for assertions, the type (C{snap-revision},
        C{account-key}, ...).
    """

    kind: str
    code: int = 200
    headers: tuple[tuple[bytes, bytes], ...] = ()
    assertionType: str = ""


@attrs.frozen
class CachePolicy:
    """
    How to cache one response.

    @ivar cache: whether to keep it at all.
    @ivar ttl: seconds it may be served without asking upstream again;
        C{None} means forever (content addressed by digest).
    @ivar shared: whether one device's copy may be served to another.
    """

    cache: bool
    ttl: Optional[float] = None
    shared: bool = True


#: The policy for answers that must never be cached.
NO_CACHE = CachePolicy(cache=False, ttl=0, shared=False)


def pending(value: Any) -> bool:
    """
    Whether what a rule (or any step that may wait) returned must be
    awaited: a L{Deferred} or a coroutine.  Anything else is the answer
    itself, used as it is rather than wrapped in a fired L{Deferred}
    (C{maybeDeferred}) only to be unwrapped again, which cost a few
    microseconds per step of every request (issue 20).
    """
    return isinstance(value, Deferred) or type(value) is CoroutineType


async def settled(result: Any) -> Any:
    """
    What a rule's method (or any step that may wait) returned, waited for
    when it must be (L{pending}), raised when it is a L{Failure}: what
    C{await maybeDeferred(...)} gave, without the fired L{Deferred}.
    """
    if pending(result):
        return await result
    if isinstance(result, Failure):
        result.raiseException()
    return result


class RuleFailed(Exception):
    """
    A rule raised or answered nonsense; the request must be refused.

    @ivar ruleName: the rule's name.
    """

    def __init__(self, ruleName: str, why: str) -> None:
        super().__init__(f"rule {ruleName!r} failed: {why}")
        self.ruleName = ruleName

    def verdict(self) -> StoreDeny:
        """
        The refusal the device gets.
        """
        return StoreDeny(403, f"request refused: the proxy's rule {self.ruleName!r} failed",
                         errorCode="rule-failed")
