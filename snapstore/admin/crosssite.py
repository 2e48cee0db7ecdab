# -*- test-case-name: tests.test_admin_crosssite -*-
"""
Keeping web pages away from the admin API.

Without a token file every loopback client is trusted, and a browser on
the snapstore host is a loopback client: any page it shows can send a
form POST (C{text/plain} or C{application/x-www-form-urlencoded} bodies
need no CORS preflight) to C{http://127.0.0.1:8001/}, or rebind its own
DNS name to 127.0.0.1 and then read the answers as same-origin.  Three
checks, made before the API sees a request, close both doors:

 - C{Host} must name the endpoint itself: a loopback name or address, the
   address the request arrived on, this machine's host name, the host of
   C{--public-url}, or a name listed in C{--admin-hosts}.  A rebound name
   is none of these.
 - a request carrying C{Origin} must come from the endpoint's own origin
   (same scheme, host and port as its C{Host}); C{Origin: null} is
   foreign too.
 - a state-changing call (anything but C{GET}/C{HEAD}/C{OPTIONS}; a
   bodiless C{DELETE} aside) must say C{Content-Type: application/json},
   or C{application/x-tar} for a bundle import: types a page cannot send
   cross-site without a preflight, which this API never grants.

Refusals use the admin API's JSON error shape.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.parse
from typing import Any, Iterable, Optional

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from snapstore.admin.resource import AdminResource
from snapstore.http.headers import finishWith

#: Methods that change nothing, so need no content type.
SAFE_METHODS = frozenset([b"GET", b"HEAD", b"OPTIONS"])

#: The content type of every state-changing call but imports.
JSON_TYPE = "application/json"

#: Paths whose body is a bundle, and the type it must be sent as (what
#: C{snapstore import} sends).
BUNDLE_TYPE = "application/x-tar"
BUNDLE_PATHS = frozenset([b"/v1/import"])

#: Names that always mean this machine.
LOOPBACK_NAMES = frozenset(["localhost", "localhost.localdomain", "ip6-localhost",
                            "ip6-loopback"])


def splitHost(value: str) -> tuple[str, Optional[int]]:
    """
    Split a C{Host} header value (or an origin's authority) into a
    lower-case host without IPv6 brackets, and the port if it has one.

    @raise ValueError: for a value that is not a host.
    """
    parsed = urllib.parse.urlsplit("//" + value)
    host = parsed.hostname
    if not host or parsed.username is not None or parsed.path or parsed.query:
        raise ValueError(value)
    return host.lower().rstrip("."), parsed.port


def isLoopbackName(host: str) -> bool:
    """
    Whether C{host} is a loopback address or a name that always resolves
    to this machine (RFC 6761 reserves C{.localhost}).
    """
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def machineNames() -> set[str]:
    """
    This machine's own names: what an operator typing its name in a URL
    would send.
    """
    names = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower().rstrip("."))
    return names


class CrossSiteGuard(Resource):
    """
    Wraps the admin API's resource, answering requests a web page could
    have forged before the API sees them.

    @ivar wrapped: the admin API resource.
    @ivar names: the host names (lower case) accepted in C{Host} besides
        loopback names and the arrival address.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, wrapped: AdminResource, names: Iterable[str] = ()) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.names = frozenset(name.lower().rstrip(".") for name in names if name)

    @classmethod
    def fromSettings(cls, wrapped: AdminResource, settings: Any) -> "CrossSiteGuard":
        """
        The guard for the names an operator configured: C{--admin-hosts},
        C{--public-url}'s host, and this machine's host names.
        """
        names = set(machineNames())
        names.update(settings.adminHosts)
        publicURL = settings.publicUrl
        if publicURL:
            host = urllib.parse.urlsplit(str(publicURL)).hostname
            if host:
                names.add(host)
        return cls(wrapped, names)

    def render(self, request: Any) -> Any:
        refusal = self.refusal(request)
        if refusal is not None:
            status, code, message = refusal
            self.log.warn("admin request refused ({code}): {message}", code=code, message=message)
            body = json.dumps({"error": {"code": code, "message": message}},
                              indent=1, sort_keys=True).encode("utf-8") + b"\n"
            finishWith(request, status, b"application/json", body)
            return NOT_DONE_YET
        return self.wrapped.render(request)

    # -- the checks ----------------------------------------------------------

    def refusal(self, request: Any) -> Optional[tuple[int, str, str]]:
        """
        Why C{request} is refused, as C{(status, code, message)}, or
        C{None} when it may go on.
        """
        refused = self.originRefusal(request)
        if refused is not None:
            return refused
        if self._needsType(request):
            wanted = BUNDLE_TYPE if request.path in BUNDLE_PATHS else JSON_TYPE
            return self._typeRefusal(request, request.method, request.path, wanted)
        return None

    def importRefusal(self, request: Any) -> Optional[tuple[int, str, str]]:
        """
        L{refusal} for a bundle upload, asked from the request's head (by
        L{snapstore.admin.importgate}) before any body byte is spooled,
        when Twisted has not yet set the request's method and path.
        """
        return (self.originRefusal(request)
                or self._typeRefusal(request, b"POST", b"/v1/import", BUNDLE_TYPE))

    def _typeRefusal(self, request: Any, method: bytes, path: bytes,
                     wanted: str) -> Optional[tuple[int, str, str]]:
        types = request.requestHeaders.getRawHeaders(b"content-type") or []
        given = types[0].decode("latin-1") if len(types) == 1 else ""
        if given.split(";", 1)[0].strip().lower() != wanted:
            return (415, "unsupported-media-type",
                    f"{method.decode('latin-1')} {path.decode('latin-1')} "
                    f"needs Content-Type: {wanted}")
        return None

    def originRefusal(self, request: Any) -> Optional[tuple[int, str, str]]:
        """
        The Host and Origin part of L{refusal}: what a page in a browser or
        a rebound name would send.
        """
        hostHeader = request.requestHeaders.getRawHeaders(b"host") or []
        if len(hostHeader) > 1:
            return 400, "bad-host", "the request has more than one Host header"
        host = hostHeader[0].decode("latin-1") if hostHeader else None
        if host is not None and not self.hostAllowed(host, request):
            return (403, "forbidden-host",
                    f"the admin API does not answer for Host {host!r}: use a loopback "
                    f"name, its own address, or a name listed in --admin-hosts")
        origins = request.requestHeaders.getRawHeaders(b"origin") or []
        for origin in origins:
            if not self.sameOrigin(origin.decode("latin-1"), host, request):
                return (403, "cross-origin",
                        f"the admin API refuses requests from another origin "
                        f"({origin.decode('latin-1')!r})")
        return None

    def _needsType(self, request: Any) -> bool:
        """
        Whether C{request} must say its body's type: every state-changing
        call of the API, except a C{DELETE} without a body (a method no
        page can send cross-site without a preflight, and nothing to type).
        """
        if request.method in SAFE_METHODS:
            return False
        if request.method == b"DELETE" and not _hasBody(request):
            return False
        return self.wrapped.handles(request)

    def hostAllowed(self, value: str, request: Any) -> bool:
        try:
            host, _ = splitHost(value)
        except ValueError:
            return False
        if isLoopbackName(host) or host in self.names:
            return True
        arrived = getattr(request.getHost(), "host", None)
        return arrived is not None and _sameAddress(host, arrived)

    def sameOrigin(self, origin: str, host: Optional[str], request: Any) -> bool:
        """
        Whether C{origin} is the endpoint's own: the scheme it is served
        with and exactly the authority of the (already checked) C{Host}.
        """
        if host is None:
            return False
        parsed = urllib.parse.urlsplit(origin.strip())
        scheme = "https" if request.isSecure() else "http"
        if parsed.scheme.lower() != scheme or parsed.path not in ("", "/"):
            return False
        try:
            originHost, originPort = splitHost(parsed.netloc)
            wantedHost, wantedPort = splitHost(host)
        except ValueError:
            return False
        default = 443 if scheme == "https" else 80
        return (originHost == wantedHost
                and (originPort or default) == (wantedPort or default))


def _sameAddress(host: str, arrived: str) -> bool:
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(arrived)
    except ValueError:
        return False


def _hasBody(request: Any) -> bool:
    if request.requestHeaders.getRawHeaders(b"content-type"):
        return True
    content = getattr(request, "content", None)
    if content is None:
        return False
    position = content.tell()
    content.seek(0, 2)
    size = content.tell()
    content.seek(position)
    return size > 0
