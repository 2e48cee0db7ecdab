"""
C{POST /v1/import} on a real C{twistd snapstore}: the caller is checked and
the size bound applied from the request head, before any of the body is
read, and an admitted body streams to the data directory (issue 18 item
7).
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from snapstore.interfaces import IBodyGate
from snapstore.admin.importgate import ImportGate

from tests.hardeninghelpers import parseAnswer, rawConnect, rawExchange, sendChunks, statuses
from tests.ports import freePort
from tests.processes import startTwistd
from tests.test_offline import runCLI

TOKEN = "import-gate-test-token-0123456789"
LIMIT = 1 << 20


def head(length: int, token: str | None = TOKEN, chunked: bool = False) -> bytes:
    lines = [b"POST /v1/import HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Type: application/x-tar"]
    if token is not None:
        lines.append(b"Authorization: Bearer " + token.encode())
    lines.append(b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class ImportGateTests(TestCase):
    timeout = 90

    def setUp(self) -> Deferred[None]:
        return ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        tokens = os.path.abspath(self.mktemp())
        with open(tokens, "w") as tokenFile:
            tokenFile.write(f"tester:{TOKEN}\n")
        self.dataDir = os.path.abspath(self.mktemp())
        self.adminPort = freePort()
        self.process, _ = await startTwistd(
            self, "--offline", "--upstream", "http://127.0.0.1:9/", "--data-dir", self.dataDir,
            "--proxy-endpoint", "none", "--admin-token-file", tokens,
            "--admin-endpoint", f"tcp:{self.adminPort}:interface=127.0.0.1",
            "--import-max-size", str(LIMIT))

    async def answerTo(self, data: bytes) -> tuple[int, dict[str, str]]:
        """
        Send C{data} and nothing more; the answer must come without the
        body (a server waiting for it would answer 408 after 30 s).
        """
        answer = await rawExchange(self.adminPort, data)
        self.assertEqual(len(statuses(answer)), 1, answer[:300])
        status, _, body = parseAnswer(answer)
        return status, json.loads(body)

    async def test_tokenBeforeBody(self) -> None:
        """
        Without a token, or with a wrong one, a 10 GiB upload is refused
        with 401 from its head alone.
        """
        for token in (None, "wrong-token-wrong-token-wrong"):
            status, error = await self.answerTo(head(10 << 30, token))
            self.assertEqual(status, 401)
            self.assertEqual(error["error"]["code"], "unauthorised")

    async def test_sizeBound(self) -> None:
        """
        An authorised upload announcing more than C{--import-max-size} gets
        413 at once, naming the option; a chunked one is cut off with 413
        once it passes the bound.
        """
        status, error = await self.answerTo(head(LIMIT + 1))
        self.assertEqual(status, 413)
        self.assertIn("--import-max-size", error["error"]["message"])
        client = await rawConnect(self.adminPort)
        client.transport.write(head(0, chunked=True))
        self.assertEqual(statuses(await sendChunks(client, 2.5)), [413])

    async def test_streamedToDisk(self) -> None:
        """
        An admitted body is written, as it arrives, to a file in
        C{<data-dir>/import-staging}; complete, it reaches the importer
        (which refuses this one: it is no bundle).
        """
        size, sent = 900_000, 500_000
        client = await rawConnect(self.adminPort)
        client.transport.write(head(size) + b"x" * sent)
        staging = os.path.join(self.dataDir, "import-staging") + "/"
        spooled = 0
        for _ in range(200):
            for fd in os.listdir(f"/proc/{self.process.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{self.process.pid}/fd/{fd}")
                    if link.startswith(staging):
                        spooled = max(spooled, os.stat(f"/proc/{self.process.pid}/fd/{fd}").st_size)
                except FileNotFoundError:
                    continue  # closed since the listing: not the spool file
            if spooled >= sent:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(spooled, sent)
        client.transport.write(b"x" * (size - sent))
        status, _, body = parseAnswer(await client.closed)
        self.assertEqual(status, 400, body)
        self.assertEqual(json.loads(body)["error"]["code"], "bundle-refused")

    async def test_command(self) -> None:
        """
        C{snapstore import} says why the node refused an upload from its
        head: the missing token (exit 4), or the size bound (exit 5), not
        "cannot reach" after a broken pipe.
        """
        bundle = os.path.abspath(self.mktemp())
        with open(bundle, "wb") as bundleFile:
            bundleFile.write(b"x" * (3 * LIMIT))
        admin = f"http://127.0.0.1:{self.adminPort}"
        _, err, code = await runCLI("--admin", admin, "import", bundle)
        self.assertEqual(code, 4, err)
        self.assertIn(b"wants a token", err)
        tokenFile = os.path.abspath(self.mktemp())
        with open(tokenFile, "w") as tokens:
            tokens.write(TOKEN + "\n")
        _, err, code = await runCLI("--admin", admin, "--token-file", tokenFile, "import", bundle)
        self.assertEqual(code, 5, err)
        self.assertIn(b"larger than the node's --import-max-size", err)

    async def test_otherAdminCallsUngated(self) -> None:
        """
        The gate governs only bundle uploads: other admin calls keep their
        own answers (here 401 from the API itself for a missing token).
        """
        status, error = await self.answerTo(
            b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 401)


class ImportGateUnitTests(SynchronousTestCase):
    def test_interface(self) -> None:
        verifyObject(IBodyGate, ImportGate(None, LIMIT, self.mktemp()))

    def test_governs(self) -> None:
        """
        The gate sees the import route as the admin API routes it: empty
        segments and percent-encoding do not slip past it.
        """
        gate = ImportGate(None, LIMIT, self.mktemp())
        for path in (b"/v1/import", b"/v1//import/", b"/v1/%69mport", b"//v1/import"):
            self.assertTrue(gate.governs(b"POST", path), path)
        for method, path in ((b"GET", b"/v1/import"), (b"POST", b"/v1/imported"),
                             (b"POST", b"/v1/import/x")):
            self.assertFalse(gate.governs(method, path), (method, path))
