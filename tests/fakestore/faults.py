# -*- test-case-name: tests.test_fakestore -*-
"""
Failures the fake store can be told to produce, for hardening tests of the
proxy: broken CDN transfers and a misbehaving API.

Each fault is armed for a number of requests and used up as matching
requests arrive, so a test can say "the next download of hello 29 is cut
after 100 kB, the one after that succeeds" and check the proxy's retry.
"""

from dataclasses import dataclass

CDN_KINDS = ("reset", "short", "corrupt", "stall", "slow")
API_KINDS = ("status", "invalid-json", "stall", "gzip-bomb", "encoding")


@dataclass
class CDNFault:
    """
    A fault for one CDN download.

    @ivar kind: C{"reset"} (TCP reset after C{offset} body bytes),
        C{"short"} (clean close after C{offset} body bytes while the
        Content-Length promised more), C{"corrupt"} (the byte at absolute
        blob offset C{offset} is flipped: same length, wrong digest) or
        C{"stall"} (wait C{seconds} before sending the response headers,
        then answer normally) or C{"slow"} (wait C{seconds} before each
        64 KiB block: a slow uplink, so that a transfer is still under way
        when a test acts).
    @ivar offset: for reset/short, body bytes to send first (default half
        of the body); for corrupt, the absolute blob offset to flip
        (default the middle of the blob).
    """

    kind: str
    offset: int | None = None
    seconds: float = 0.0


@dataclass
class APIFault:
    """
    A fault for API requests whose path starts with C{pathPrefix} (and
    whose method is C{method}, if given).

    @ivar kind: C{"status"} (answer C{code} with a JSON error-list),
        C{"invalid-json"} (200 C{application/json} with a truncated body),
        C{"stall"} (wait C{seconds}, then answer normally),
        C{"gzip-bomb"} (200 C{application/json}, C{Content-Encoding: gzip},
        a body inflating to C{size} zero bytes) or C{"encoding"} (the normal
        answer, labelled C{Content-Encoding: <encoding>}).
    @ivar remaining: how many more matching requests it affects.
    @ivar headers: extra response headers for C{"status"} faults, e.g.
        C{WWW-Authenticate} or C{X-Oops-Id}, which a proxy must preserve.
    @ivar errorCode: the C{error-list} code of C{"status"} faults.
    """

    kind: str
    pathPrefix: str = "/"
    method: str | None = None
    code: int = 503
    seconds: float = 0.0
    remaining: int = 1
    headers: dict | None = None
    errorCode: str = "internal-error"
    size: int = 256 << 20
    encoding: str = "br"


class Faults:
    """
    The armed faults of one fake store.  Use through
    L{tests.fakestore.FakeStore.faults}.
    """

    def __init__(self, snapIdOf) -> None:
        self._snapIdOf = snapIdOf
        self._cdn: dict[tuple[str, int], list[CDNFault]] = {}
        self._api: list[APIFault] = []

    def failDownload(
        self,
        name: str,
        revision: int,
        kind: str,
        count: int = 1,
        offset: int | None = None,
        seconds: float = 0.0,
    ) -> None:
        """
        Make the next C{count} CDN GETs of the blob of C{name} revision
        C{revision} fail as C{kind} (see L{CDNFault}).
        """
        if kind not in CDN_KINDS:
            raise ValueError(f"unknown CDN fault {kind!r}; one of {CDN_KINDS}")
        key = (self._snapIdOf(name), revision)
        self._cdn.setdefault(key, []).extend(
            CDNFault(kind, offset, seconds) for _ in range(count)
        )

    def failDelta(self, name: str, source: int, target: int, kind: str, count: int = 1,
                  offset: int | None = None, seconds: float = 0.0) -> None:
        """
        Make the next C{count} CDN GETs of C{name}'s delta from C{source} to
        C{target} fail as C{kind} (see L{CDNFault}).
        """
        if kind not in CDN_KINDS:
            raise ValueError(f"unknown CDN fault {kind!r}; one of {CDN_KINDS}")
        key = (self._snapIdOf(name), (source, target))
        self._cdn.setdefault(key, []).extend(
            CDNFault(kind, offset, seconds) for _ in range(count)
        )

    def failAPI(
        self,
        kind: str,
        count: int = 1,
        pathPrefix: str = "/",
        method: str | None = None,
        code: int = 503,
        seconds: float = 0.0,
        headers: dict | None = None,
        errorCode: str = "internal-error",
        size: int = 256 << 20,
        encoding: str = "br",
    ) -> None:
        """
        Make the next C{count} API requests under C{pathPrefix} fail as
        C{kind} (see L{APIFault}).  Faults are used in the order armed.
        """
        if kind not in API_KINDS:
            raise ValueError(f"unknown API fault {kind!r}; one of {API_KINDS}")
        self._api.append(
            APIFault(kind, pathPrefix, method, code, seconds, count, headers, errorCode,
                     size, encoding)
        )

    def clear(self) -> None:
        """
        Disarm everything.
        """
        self._cdn.clear()
        del self._api[:]

    def pendingDownloadFaults(self, name: str, revision: int) -> int:
        return len(self._cdn.get((self._snapIdOf(name), revision), []))

    def takeDownloadFault(self, snapId: str, revision) -> CDNFault | None:
        """
        The next fault for a blob (C{revision} an int) or a delta
        (C{revision} the pair C{(source, target)}).
        """
        queue = self._cdn.get((snapId, revision))
        if not queue:
            return None
        return queue.pop(0)

    def takeAPIFault(self, method: str, path: str) -> APIFault | None:
        for fault in self._api:
            if path.startswith(fault.pathPrefix) and fault.method in (None, method):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._api.remove(fault)
                return fault
        return None
