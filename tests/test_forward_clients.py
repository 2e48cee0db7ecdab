"""
Real clients through the forward proxy: C{curl} (C{-x}, C{-p}, C{-U}) for
CONNECT to a TLS origin and for absolute-URI requests, and Debian's stock
C{snap download} with C{http_proxy}/C{https_proxy} against the fake store,
named C{fakestore.test} because snapd never proxies C{127.0.0.1}.
"""

from __future__ import annotations

import hashlib
import os
import shutil

from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.portforward import ProxyFactory
from twisted.trial.unittest import TestCase

from snapstore.forward.auth import hashPassword
from tests.forwardhelpers import listen, originRoot, proxySettings, siteFactory, startProxy
from tests.tlshelpers import TestAuthority

CURL = shutil.which("curl")
SNAP = "/usr/bin/snap"
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


async def listenTLS(testCase, authority, factory) -> int:
    endpoint = SSL4ServerEndpoint(reactor, 0, authority.serverOptions(), interface="127.0.0.1")
    port = await endpoint.listen(factory)
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


async def untilTunnelsClosed(factory) -> None:
    """
    Wait until the proxy has noticed that the client's tunnels ended (a
    tunnel is logged when it closes, which may be just after the client
    process exited).
    """
    await factory.whenNoTunnels()


class CurlTests(TestCase):
    """
    curl through the proxy.
    """

    timeout = 60
    if CURL is None:
        skip = "curl is not installed"

    async def setUp(self) -> None:
        self.authority = TestAuthority()
        self.caFile = self.authority.writeCA(self.mktemp())
        self.root, self.echo, self.flood = originRoot(flood=20 << 20)
        self.plainPort = (await listen(self, siteFactory(self.root))).getHost().port
        self.tlsPort = await listenTLS(self, self.authority, siteFactory(self.root))
        self.passwords = self.mktemp()
        with open(self.passwords, "w") as passwordFile:
            passwordFile.write("alice:" + hashPassword("wonder land", iterations=1000) + "\n")

    async def curl(self, *args: str, settings=None) -> tuple[bytes, bytes, int]:
        if settings is None:
            settings = proxySettings(self, proxy_connect_ports=f"{self.tlsPort},{self.plainPort}")
        self.factory, port = await startProxy(self, settings)
        result = await getProcessOutputAndValue(
            CURL, ["-sS", "--max-time", "30", "-x", f"http://127.0.0.1:{port}", *args],
            env=CLEAN_ENV, reactor=reactor)
        await untilTunnelsClosed(self.factory)
        return result

    async def test_connectTLS(self) -> None:
        """
        HTTPS through CONNECT: TLS is end to end, verified by curl against
        the test CA under the name the proxy mapped to loopback.
        """
        out, err, code = await self.curl("--cacert", self.caFile, "--data-binary", "over tls",
                                         f"https://fakestore.test:{self.tlsPort}/echo")
        self.assertEqual((code, out), (0, b"echo:POST:over tls"), err)
        entry = self.factory.accessLog.entries[-1]
        self.assertEqual((entry.method, entry.target, entry.status),
                         ("CONNECT", f"fakestore.test:{self.tlsPort}", 200))
        self.assertGreater(entry.down, 1000)

    async def test_connectBigTransfer(self) -> None:
        target = self.mktemp()
        out, err, code = await self.curl("--cacert", self.caFile, "-o", target,
                                         f"https://fakestore.test:{self.tlsPort}/flood")
        self.assertEqual(code, 0, err)
        self.assertEqual(os.path.getsize(target), 20 << 20)

    async def test_absoluteURI(self) -> None:
        target = self.mktemp()
        out, err, code = await self.curl("-o", target, "-w", "%{http_code}",
                                         f"http://fakestore.test:{self.plainPort}/flood")
        self.assertEqual((code, out), (0, b"200"), err)
        with open(target, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(),
                             hashlib.sha256(b"x" * (20 << 20)).hexdigest())
        self.assertEqual(self.echo.seen, [])

    async def test_proxytunnelForHTTP(self) -> None:
        """
        C{curl -p} tunnels plain HTTP through CONNECT.
        """
        out, err, code = await self.curl("-p", f"http://fakestore.test:{self.plainPort}/echo")
        self.assertEqual((code, out), (0, b"echo:GET:"), err)
        self.assertEqual(self.factory.accessLog.entries[-1].method, "CONNECT")

    async def test_refusedPort(self) -> None:
        settings = proxySettings(self)
        out, err, code = await self.curl("--cacert", self.caFile,
                                         f"https://fakestore.test:{self.tlsPort}/echo",
                                         settings=settings)
        self.assertNotEqual(code, 0)
        self.assertIn(b"403", err)

    async def test_authentication(self) -> None:
        settings = proxySettings(self, proxy_connect_ports=str(self.tlsPort),
                                 proxy_auth_file=self.passwords)
        url = f"https://fakestore.test:{self.tlsPort}/echo"
        out, err, code = await self.curl("--cacert", self.caFile, url, settings=settings)
        self.assertIn(b"407", err)
        out, err, code = await self.curl("--cacert", self.caFile, "-U", "alice:wonder land",
                                         url, settings=settings)
        self.assertEqual((code, out), (0, b"echo:GET:"), err)
        self.assertEqual(self.factory.accessLog.entries[-1].user, "alice")


class SnapDownloadTests(TestCase):
    """
    Stock C{snap download} through the forward proxy.
    """

    timeout = 120
    if not os.access(SNAP, os.X_OK):
        skip = f"{SNAP} is not installed; these tests drive the real snapd client"

    async def setUp(self) -> None:
        from tests.fakestore import FakeStore

        self.store = FakeStore(reactor, hostname="fakestore.test")
        self.store.addSnap("hello")
        self.store.addRevision("hello", 10, 300_000)
        await self.store.startFor(self)
        self.authority = TestAuthority()
        # An HTTPS front for the fake store's API, so snapd's https_proxy
        # (CONNECT) path is used too.
        self.tlsPort = await listenTLS(self, self.authority,
                                       ProxyFactory("127.0.0.1", self.store.apiPort))
        settings = proxySettings(self, proxy_connect_ports=str(self.tlsPort))
        self.factory, self.proxyPort = await startProxy(self, settings)

    async def snapDownload(self, apiURL: str) -> tuple:
        target = os.path.abspath(self.mktemp())
        home = os.path.abspath(self.mktemp())
        os.makedirs(target)
        os.makedirs(home)
        proxy = f"http://127.0.0.1:{self.proxyPort}"
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "SNAPPY_FORCE_API_URL": apiURL,
               "http_proxy": proxy, "https_proxy": proxy,
               "SSL_CERT_FILE": self.authority.writeCA(self.mktemp())}
        out, err, code = await getProcessOutputAndValue(
            SNAP, ["download", "hello", "--target-directory", target], env=env, reactor=reactor)
        await untilTunnelsClosed(self.factory)
        return out, err, code, target

    def assertDownloaded(self, err: bytes, target: str) -> None:
        # Stock snap trusts only Canonical's keys, so it fails on the fake
        # store's assertions after writing the snap.
        self.assertIn(b"failed signature verification", err)
        with open(os.path.join(target, "hello_10.snap"), "rb") as f:
            self.assertEqual(hashlib.sha3_384(f.read()).hexdigest(),
                             self.store.blobDigest("hello", 10))

    async def test_httpProxy(self) -> None:
        """
        With a plain-HTTP store API, every request is relayed in absolute
        form, from the API refresh to the CDN download.
        """
        out, err, code, target = await self.snapDownload(
            f"http://fakestore.test:{self.store.apiPort}/")
        self.assertDownloaded(err, target)
        relayed = [(e.method, e.target.split("/", 3)[-1].split("?")[0], e.status)
                   for e in self.factory.accessLog.entries[:6]]
        self.assertEqual(relayed[0], ("POST", "v2/snaps/refresh", 200))
        self.assertEqual(relayed[2][::2], ("GET", 200))
        self.assertTrue(relayed[2][1].startswith("download-origin/"))
        self.assertEqual(self.store.count("POST", "/v2/snaps/refresh"), 1)
        for record in self.store.requests:
            self.assertIn("1.1 snapstore", record.header("via") or "")

    async def test_httpsProxy(self) -> None:
        """
        With an HTTPS store API, snapd tunnels through CONNECT and verifies
        the store's certificate end to end; the CDN (plain HTTP) is relayed.
        """
        out, err, code, target = await self.snapDownload(
            f"https://fakestore.test:{self.tlsPort}/")
        self.assertDownloaded(err, target)
        methods = {(e.method, e.status) for e in self.factory.accessLog.entries}
        self.assertIn(("CONNECT", 200), methods)
        self.assertIn(("GET", 200), methods)
