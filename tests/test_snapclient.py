"""
The real client: Debian's C{snap download} through C{twistd snapstore} in
front of the fake store.

Stock snap trusts only Canonical's signing keys, so its last step (checking
the assertion chain) fails against any fake store; everything before it
(the refresh, the download and its sha3-384 check, fetching assertions) is
what these tests assert.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.fakestore import FakeStore
from tests.processes import startTwistd

SNAP = "/usr/bin/snap"


class SnapDownloadThroughProxyTests(TestCase):
    """
    C{snap download} with C{SNAPPY_FORCE_API_URL} pointing at the proxy.
    """

    if not os.access(SNAP, os.X_OK):
        skip = f"{SNAP} is not installed (Debian package snapd; ./run-tests installs it)"

    timeout = 180
    #: The fake store's compression switch (see L{FakeStore}).
    compress = None

    @inlineCallbacks
    def setUp(self):
        self.store = yield FakeStore(reactor, compress=self.compress).startFor(self)
        self.snapId = self.store.addSnap("hello", summary="Hello")
        self.store.addRevision("hello", 10, 2_000_000)
        self.process, port = yield startTwistd(
            self, "--upstream", self.store.apiURL, "--proxy-endpoint", "none",
            "--admin-endpoint", "none", "--data-dir", self.mktemp(), "--config", "/dev/null")
        self.proxyURL = f"http://127.0.0.1:{port}/"

    @inlineCallbacks
    def snapDownload(self, *args):
        target = os.path.abspath(self.mktemp())
        home = os.path.abspath(self.mktemp())
        os.makedirs(target)
        os.makedirs(home)
        environment = {"PATH": "/usr/bin:/bin", "HOME": home, "SNAPPY_FORCE_API_URL": self.proxyURL}
        out, err, code = yield getProcessOutputAndValue(
            SNAP, ["download", "hello", *args, "--target-directory", target], env=environment,
            reactor=reactor)
        return out, err, code, target

    @inlineCallbacks
    def test_snapDownload(self):
        """
        The refresh, the blob download and the assertion fetches all go
        through the proxy, and the C{.snap} that snap wrote (after checking
        its sha3-384) has the blob's exact bytes.
        """
        out, err, code, target = yield self.snapDownload()
        self.assertEqual(out, b'Fetching snap "hello"\nFetching assertions for "hello"\n', err)
        self.assertIn(b"cannot fetch snap signatures/assertions", err)
        self.assertIn(b"failed signature verification", err)
        with open(os.path.join(target, "hello_10.snap"), "rb") as snapFile:
            self.assertEqual(snapFile.read(), self.store.blobBytes("hello", 10))
        apiCalls = [(r.method, r.path) for r in self.store.requests if r.listener == "api"]
        self.assertEqual(apiCalls[:2], [("POST", "/v2/snaps/refresh"),
                                        ("GET", f"/api/v1/snaps/download/{self.snapId}_10.snap")])
        self.assertTrue(any(path.startswith("/v2/assertions/snap-revision/") for _, path in apiCalls))
        # Every upstream request came from the proxy, none from snap itself.
        for record in self.store.requests:
            if record.listener == "api":
                self.assertIn("snapstore", record.header("via") or "", record.path)
        self.assertEqual(len(self.store.cdnDownloads("hello", 10)), 1)

    @inlineCallbacks
    def test_noDeviceSessionFromSnapDownload(self):
        """
        What the stock client can show of the device-session path: C{snap
        download} runs without snapd's device context, so it never sends
        C{Snap-Device-Authorization} (the proxy then counts it by address
        and never asks it to identify itself) and, told C{401} with
        C{WWW-Authenticate: Macaroon refresh_device_session=1}, it retries
        without opening a session.  The renewal itself is exercised by
        L{tests.sessionclient.SnapdDevice}, which follows store-api.md.
        """
        self.store.faults.failAPI("status", count=1, pathPrefix="/v2/snaps/refresh", code=401,
                                  headers={"WWW-Authenticate": "Macaroon refresh_device_session=1"},
                                  errorCode="device-authorization-needed")
        out, err, code, target = yield self.snapDownload()
        with open(os.path.join(target, "hello_10.snap"), "rb") as snapFile:
            self.assertEqual(snapFile.read(), self.store.blobBytes("hello", 10))
        refreshes = self.store.requestsTo("POST", "/v2/snaps/refresh")
        self.assertEqual(len(refreshes), 2)
        self.assertEqual((self.store.nonces, self.store.sessions), ([], []))
        for record in self.store.requests:
            self.assertIsNone(record.header("snap-device-authorization"), record.path)
            self.assertIsNone(record.header("x-device-authorization"), record.path)


class SnapDownloadCompressedUpstreamTests(SnapDownloadThroughProxyTests):
    """
    The same, with the upstream store gzipping its JSON and assertions for
    clients that accept gzip, as a store front end does.  snap itself sends
    C{Accept-Encoding: gzip}; before snapstore decoded upstream's answers
    this failed with "got unexpected HTTP status code 502 via POST to
    .../v2/snaps/refresh".
    """

    compress = "gzip"

    @inlineCallbacks
    def test_snapDownload(self):
        """
        As without compression; and the refresh and assertions reached
        upstream asking for gzip, so upstream's answers were compressed.
        """
        yield SnapDownloadThroughProxyTests.test_snapDownload(self)
        for path in ("/v2/snaps/refresh", "/v2/assertions/"):
            records = self.store.requestsTo(None, path)
            self.assertTrue(records, path)
            for record in records:
                self.assertEqual(record.header("accept-encoding"), "gzip", path)
