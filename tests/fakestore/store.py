# -*- test-case-name: tests.test_fakestore -*-
"""
L{FakeStore}: the fake upstream Snap Store that proxy tests run against.
"""

import hashlib
import hmac
import itertools
import os

from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from tests.fakestore.api import CODINGS, APIResource
from tests.fakestore.assertions import Assertions
from tests.fakestore.blobs import deltaBlob, deltaFileName
from tests.fakestore.catalogue import Catalogue, UnknownSnap
from tests.fakestore.cdn import CDNResource
from tests.fakestore.faults import Faults
from tests.fakestore.recording import RecordingSite, TrackingFactory

# Sent as Snap-Store-Version on every API answer; >= 55 so that snapd sends
# "held" information (store-api.md 3.1).
STORE_VERSION = 60


class DeviceSession:
    """
    A device session the fake store granted.

    @ivar headers: the headers of the device-session-request assertion.
    @ivar brandId: its C{brand-id}.
    @ivar model: its C{model}.
    @ivar serial: its C{serial}.
    @ivar nonce: its C{nonce}.
    @ivar macaroon: the session macaroon handed back.
    @ivar body: the whole JSON request (serial and model assertions too).
    """

    def __init__(self, headers: dict, macaroon: str, body: dict) -> None:
        self.headers = headers
        self.brandId = headers.get("brand-id")
        self.model = headers.get("model")
        self.serial = headers.get("serial")
        self.nonce = headers.get("nonce")
        self.macaroon = macaroon
        self.body = body

    def __repr__(self) -> str:
        return (
            f"<DeviceSession brand={self.brandId} model={self.model} "
            f"serial={self.serial} macaroon={self.macaroon}>"
        )


def _parseHeaders(text: str) -> dict:
    """
    The top-level C{name: value} headers of an assertion's text.
    """
    headers = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        if line.startswith(" ") or ":" not in line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers


class FakeStore:
    """
    A fake Snap Store on two loopback listeners: the API (refresh, info,
    find, assertions, device sessions, the download redirect) and a CDN that
    streams blobs.

    @ivar catalogue: the L{tests.fakestore.catalogue.Catalogue} it serves.
    @ivar assertions: the L{tests.fakestore.assertions.Assertions} it serves.
    @ivar faults: armed failures, see L{tests.fakestore.faults.Faults}.
    @ivar requests: a L{tests.fakestore.recording.RequestRecord} for every
        request on either listener, in arrival order.
    @ivar cdnBytesSent: total blob body bytes the CDN has written.
    @ivar sessions: every L{DeviceSession} granted, in order.
    @ivar nonces: every nonce handed out, in order.
    @ivar apiURL: C{http://127.0.0.1:PORT/} once started.
    @ivar cdnURL: C{http://127.0.0.1:PORT/} once started.
    """

    log = Logger()

    def __init__(
        self,
        reactor=None,
        hostname: str | None = None,
        storeVersion: int = STORE_VERSION,
        tokenLifetime: float = 3600.0,
        compress: str | None = None,
        compressUnasked: bool = False,
        signed: bool = False,
        deltas: bool = False,
    ) -> None:
        """
        @param reactor: the reactor to listen and schedule on; the global one
            (looked up now, not at import) if L{None}.
        @param hostname: if given, absolute URLs handed out use
            C{http://<hostname>:<port>/} instead of the request's C{Host}.
        @param tokenLifetime: seconds a CDN redirect token stays valid.
        @param compress: C{"gzip"} or C{"deflate"}: API answers that are
            text (JSON, assertions) are sent with that C{Content-Encoding}
            to clients whose C{Accept-Encoding} names it, as a store front
            end does; L{None} (the default) never compresses.  Blobs and
            icons are never compressed.  May be changed while running.
        @param compressUnasked: with C{compress}, code text answers for
            every client, asked or not (a misbehaving front end).
        @param signed: sign assertions for real, up to a test root key
            (see L{tests.fakestore.assertions}).
        @param deltas: offer xdelta3 deltas (store-api.md 4.3) to refreshes
            that accept them, from the installed revision to a newer one;
            off by default, so answers stay as they were for other tests.
            May be changed while running.
        """
        if compress not in (None,) + CODINGS:
            raise ValueError(f"compress must be None or one of {CODINGS}, not {compress!r}")
        self.compress = compress
        self.compressUnasked = compressUnasked
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor = reactor
        self.hostname = hostname
        self.storeVersion = storeVersion
        self.tokenLifetime = tokenLifetime
        self.catalogue = Catalogue()
        self.deltas = deltas
        self._deltaBlobs: dict = {}
        self.assertions = Assertions(self.catalogue, signed=signed)
        self.faults = Faults(self.snapId)
        self.requests: list = []
        self.cdnBytesSent = 0
        self.sessions: list[DeviceSession] = []
        self.nonces: list[str] = []
        # Serials whose device key the fake knows (see registerDevice); None
        # grants a session to any serial, as the fake cannot check keys.
        self.registeredSerials: set[str] | None = None
        self._usedNonces: set[str] = set()
        self._counter = itertools.count(1)
        self._secret = os.urandom(16)
        self._delayed: set = set()
        self._ports: list = []
        self._factories: list[TrackingFactory] = []
        self.apiURL: str | None = None
        self.cdnURL: str | None = None
        self.apiPort: int | None = None
        self.cdnPort: int | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Deferred:
        """
        Listen on two random loopback ports.

        @return: a Deferred firing with this store once both listen.
        """
        apiSite = RecordingSite(
            APIResource(self), "api", self.requests, reactor=self._reactor
        )
        cdnSite = RecordingSite(
            CDNResource(self), "cdn", self.requests, reactor=self._reactor
        )
        self._factories = [TrackingFactory(apiSite), TrackingFactory(cdnSite)]

        def listen(factory):
            return self._endpoint().listen(factory)

        def listening(ports):
            self._ports = ports
            self.apiPort = ports[0].getHost().port
            self.cdnPort = ports[1].getHost().port
            self.apiURL = f"http://127.0.0.1:{self.apiPort}/"
            self.cdnURL = f"http://127.0.0.1:{self.cdnPort}/"
            self.log.info(
                "fake store API on {api}, CDN on {cdn}", api=self.apiURL, cdn=self.cdnURL
            )
            return self

        d = gatherResults([listen(f) for f in self._factories], consumeErrors=True)
        return d.addCallback(listening)

    def startFor(self, testCase) -> Deferred:
        """
        L{start}, and L{stop} when C{testCase} ends.

        @return: a Deferred firing with this store once it listens.
        """
        testCase.addCleanup(self.stop)
        return self.start()

    def _endpoint(self):
        """
        Where a listener goes: a random loopback port.
        """
        return TCP4ServerEndpoint(self._reactor, 0, interface="127.0.0.1")

    def stop(self) -> Deferred:
        """
        Stop listening, cancel pending stalls and abort open connections.

        @return: a Deferred firing when all of that is done.
        """
        for call in list(self._delayed):
            if call.active():
                call.cancel()
        self._delayed.clear()
        ports, self._ports = self._ports, []
        waits = [maybeDeferred(p.stopListening) for p in ports]
        waits += [f.closeAll() for f in self._factories]
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    def goDown(self) -> Deferred:
        """
        An outage of the API host: stop listening on its port (connections
        are refused) and abort its open connections; the CDN stays.  The
        catalogue is kept for L{comeBack}.
        """
        port = self._ports[0]
        waits = [maybeDeferred(port.stopListening), self._factories[0].closeAll()]
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    def comeBack(self) -> Deferred:
        """
        End an outage begun by L{goDown}: listen again on the same API port.
        """
        endpoint = TCP4ServerEndpoint(self._reactor, self.apiPort, interface="127.0.0.1")

        def listening(port):
            self._ports[0] = port
            return None

        return endpoint.listen(self._factories[0]).addCallback(listening)

    # -- catalogue -----------------------------------------------------------

    def addSnap(self, name: str, snapId: str | None = None, publisher: str = "canonical",
                summary: str | None = None, type: str = "app", **kwargs) -> str:
        """
        Add a snap with no revisions yet.  Other keyword arguments:
        C{confinement}, C{base}, C{description}, C{title}, C{license},
        C{categories}, C{prices}, C{private}, C{publisherId},
        C{publisherDisplayName}, C{publisherValidation}, C{defaultTrack}.

        @return: its snap-id (derived from the name unless given).
        """
        return self.catalogue.addSnap(
            name, snapId=snapId, publisher=publisher, summary=summary, type=type, **kwargs
        ).snapId

    def addRevision(self, name: str, revision: int, size: int,
                    architectures=("amd64",), version: str | None = None,
                    channels=("stable",), **kwargs):
        """
        Upload a revision of C{size} generated bytes and release it to
        C{channels} for every architecture in C{architectures}.  Hashing
        streams the content, so this costs about 4 s per GiB but no memory.
        Other keyword arguments: C{confinement}, C{base}, C{epoch}.

        @return: the L{tests.fakestore.catalogue.Revision}.
        """
        return self.catalogue.addRevision(
            name, revision, size, architectures=architectures, version=version,
            channels=channels, **kwargs
        )

    def addValidationSet(self, account: str, name: str, sequence: int,
                         snaps: list[dict[str, str]]) -> None:
        """
        Publish sequence C{sequence} of validation set C{account/name}
        requiring C{snaps} (see L{Assertions.addValidationSet}).
        """
        self.assertions.addValidationSet(account, name, sequence, snaps)

    def release(self, name: str, channel: str, revision: int,
                architecture: str = "amd64") -> None:
        """
        Point C{channel} of C{name} at C{revision} (e.g. move stable from
        10 to 12).
        """
        self.catalogue.release(name, channel, revision, architecture)

    def closeChannel(self, name: str, channel: str, architecture: str = "amd64") -> None:
        """
        Remove a release, so the channel follows more stable risks.
        """
        self.catalogue.close(name, channel, architecture)

    def snapId(self, name: str) -> str:
        return self.catalogue.byName(name).snapId

    def blob(self, name: str, revision: int):
        """
        @return: the L{tests.fakestore.blobs.Blob} of a revision.
        """
        try:
            return self.catalogue.byName(name).revisions[revision].blob
        except KeyError:
            raise KeyError(f"{name} has no revision {revision}") from None

    def blobBytes(self, name: str, revision: int) -> bytes:
        """
        The whole content of a (small) revision, to compare with what a
        client received.
        """
        return self.blob(name, revision).read()

    def blobDigest(self, name: str, revision: int) -> str:
        """
        The lower-case hex SHA3-384 of a revision, as C{download.sha3-384}.
        """
        return self.blob(name, revision).sha3_384

    def blobSize(self, name: str, revision: int) -> int:
        return self.blob(name, revision).size

    def downloadPath(self, name: str, revision: int) -> str:
        """
        The API path of a revision's download, C{/api/v1/snaps/download/<snap-id>_<rev>.snap}.
        """
        return f"/api/v1/snaps/download/{self.snapId(name)}_{revision}.snap"

    def downloadURL(self, name: str, revision: int) -> str:
        """
        The absolute download URL the store hands out for a revision (as
        seen by a client using L{apiURL}).
        """
        return self._base(f"127.0.0.1:{self.apiPort}", self.apiPort) + self.downloadPath(
            name, revision
        )[1:]

    def delta(self, name: str, source: int, target: int):
        """
        @return: the L{tests.fakestore.blobs.Blob} of the delta from
            C{source} to C{target} of C{name}.
        """
        found = self._deltaById(self.snapId(name), source, target)
        if found is None:
            raise KeyError(f"{name} has no delta {source} -> {target}")
        return found

    # -- traffic ---------------------------------------------------------------

    def count(self, method: str | None = None, pathPrefix: str = "",
              listener: str | None = None) -> int:
        """
        How many recorded requests match.

        @param method: e.g. C{"GET"}; any if L{None}.
        @param pathPrefix: the path must start with it.
        @param listener: C{"api"}, C{"cdn"} or any if L{None}.
        """
        return len(self.requestsTo(method, pathPrefix, listener))

    def requestsTo(self, method: str | None = None, pathPrefix: str = "",
                   listener: str | None = None) -> list:
        """
        The recorded requests that match, see L{count}.
        """
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and r.path.startswith(pathPrefix)
            and (listener is None or r.listener == listener)
        ]

    def cdnDownloads(self, name: str | None = None, revision: int | None = None) -> list:
        """
        The CDN GETs (of one revision's blob if given).
        """
        prefix = "/download-origin/"
        if name is not None:
            prefix += f"{self.snapId(name)}_"
            if revision is not None:
                prefix += f"{revision}.snap"
        return self.requestsTo("GET", prefix, "cdn")

    def cdnDeltaDownloads(self, name: str, source: int | None = None,
                          target: int | None = None) -> list:
        """
        The CDN GETs of C{name}'s deltas (from C{source} to C{target}, when
        given).
        """
        prefix = f"/download-origin/{self.snapId(name)}_"
        found = [r for r in self.requestsTo("GET", prefix, "cdn") if r.path.endswith(".delta")]
        if source is not None and target is not None:
            wanted = "/download-origin/" + deltaFileName(self.snapId(name), source, target)
            found = [r for r in found if r.path == wanted]
        return found

    def resetTraffic(self) -> None:
        """
        Forget recorded requests and byte counts (e.g. after a warm-up).
        """
        del self.requests[:]
        self.cdnBytesSent = 0

    # -- helpers for the resources ---------------------------------------------

    def _base(self, hostHeader: str | None, port: int) -> str:
        if self.hostname is not None:
            return f"http://{self.hostname}:{port}/"
        if hostHeader:
            return f"http://{hostHeader}/"
        return f"http://127.0.0.1:{port}/"

    def _apiBase(self, request) -> str:
        """
        The base of absolute API URLs for this request: from C{hostname}, or
        from the request's C{Host} as snapd's own fake store does.
        """
        host = request.getHeader(b"host")
        return self._base(host.decode("latin-1") if host else None, self.apiPort)

    def _cdnURLFor(self, request, fileName: str) -> str:
        """
        The redirect target for a blob: the CDN listener on the host the
        client used for the API, with a time-limited token as the real CDN
        URLs carry.
        """
        host = request.getHeader(b"host")
        hostName = "127.0.0.1"
        if host:
            value = host.decode("latin-1")
            if value.startswith("["):
                hostName = value[: value.index("]") + 1]
            else:
                hostName = value.rsplit(":", 1)[0]
        base = self._base(f"{hostName}:{self.cdnPort}", self.cdnPort)
        expiry = int(self._reactor.seconds() + self.tokenLifetime)
        token = f"{expiry}_{self._sign(fileName, expiry)}"
        return f"{base}download-origin/{fileName}?interactive=1&token={token}"

    def _sign(self, fileName: str, expiry: int) -> str:
        return hmac.new(
            self._secret, f"{fileName}:{expiry}".encode(), hashlib.sha1
        ).hexdigest()

    def _checkToken(self, fileName: str, token: str) -> bool:
        expiry, _, signature = token.partition("_")
        if not expiry.isdigit():
            return False
        if int(expiry) < self._reactor.seconds():
            return False
        return hmac.compare_digest(signature, self._sign(fileName, int(expiry)))

    def _blobById(self, snapId: str, revision: int):
        try:
            snap = self.catalogue.byId(snapId)
        except UnknownSnap:
            return None
        found = snap.revisions.get(revision)
        return None if found is None else found.blob

    def _deltaById(self, snapId: str, source: int, target: int):
        """
        The delta between two revisions the store holds, the older first;
        L{None} for any other pair.
        """
        try:
            revisions = self.catalogue.byId(snapId).revisions
        except UnknownSnap:
            return None
        if source >= target or source not in revisions or target not in revisions:
            return None
        key = (snapId, source, target)
        if key not in self._deltaBlobs:
            self._deltaBlobs[key] = deltaBlob(snapId, source, target, revisions[target].size)
        return self._deltaBlobs[key]

    def _newNonce(self) -> str:
        nonce = f"fakestore-nonce-{next(self._counter)}"
        self.nonces.append(nonce)
        return nonce

    def registerDevice(self, serial: str) -> None:
        """
        Know the device key of C{serial}: from then on only registered
        serials get sessions, as the real store grants one only to a
        session request signed by the device's registered key (the fake
        cannot check signatures, so any other serial counts as forged).
        """
        if self.registeredSerials is None:
            self.registeredSerials = set()
        self.registeredSerials.add(serial)

    def sessionRefusal(self, text: str) -> str | None:
        """
        Why a device-session-request is refused, or C{None}: its nonce must
        be one this store handed out and not used yet, and (with
        registered devices) its serial registered.
        """
        headers = _parseHeaders(text)
        nonce = headers.get("nonce")
        if nonce not in self.nonces or nonce in self._usedNonces:
            return "unknown or used nonce"
        if self.registeredSerials is not None and headers.get("serial") not in self.registeredSerials:
            return "invalid device-session-request signature"
        self._usedNonces.add(nonce)
        return None

    def _newSession(self, text: str, body: dict) -> str:
        macaroon = f"fakestore-session-{next(self._counter)}"
        self.sessions.append(DeviceSession(_parseHeaders(text), macaroon, body))
        return macaroon

    def _later(self, request, seconds: float, f, *args) -> None:
        """
        Answer C{request} with C{f(*args)} after C{seconds} on the injected
        reactor; forget it if the client goes away or the store stops.
        """

        def fire():
            self._delayed.discard(call)
            result = f(*args)
            if result is not NOT_DONE_YET:
                request.setHeader(b"content-length", b"%d" % (len(result),))
                request.write(result)
                request.finish()

        def gone(reason):
            self._delayed.discard(call)
            if call.active():
                call.cancel()

        call = self._reactor.callLater(seconds, fire)
        self._delayed.add(call)
        request.notifyFinish().addErrback(gone)
