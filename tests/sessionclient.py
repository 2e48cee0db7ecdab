"""
A device that handles its store session as snapd does (store-api.md
sections 2 and 3.5): it opens a session with a nonce and a
device-session-request, sends it as C{Snap-Device-Authorization} on every
call, and on C{401} with C{WWW-Authenticate: ... refresh_device_session=1}
opens a new session and retries, at most four times per request.

Debian's C{snap download} cannot play this part: it runs without snapd's
device context, sends no device session at all and, on that 401, retries
without opening one (see tests.test_snapclient).
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, Optional

from twisted.web.client import FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from tests.helpers import testAgent
from tests.test_rules_support import sessionRequest

#: snapd refreshes a session at most this many times for one request.
MAX_SESSION_REFRESHES = 4


class SnapdDevice:
    """
    One device.

    @ivar url: the store it uses (the proxy), ending in C{/}.
    @ivar sessionURL: where it opens sessions; C{url} unless told (a device
        whose sessions go elsewhere, e.g. straight to the store).
    @ivar macaroon: its current session macaroon, or C{None}.
    @ivar sessionsOpened: how many sessions it opened.
    @ivar refusals: how many C{401 refresh_device_session} answers it got.
    @ivar macaroons: every macaroon it was granted, in order.
    """

    def __init__(self, testCase: Any, url: str, serial: str,
                 sessionURL: Optional[str] = None, architecture: str = "amd64") -> None:
        self.testCase = testCase
        self.architecture = architecture
        self.url = url
        self.sessionURL = sessionURL or url
        self.serial = serial
        self.macaroon: Optional[str] = None
        self.sessionsOpened = 0
        self.refusals = 0
        self.macaroons: list[str] = []

    @property
    def identity(self) -> str:
        return f"acme/gizmo/{self.serial}"

    async def _request(self, base: str, method: bytes, path: str, body: Any = None,
                       session: bool = True) -> tuple[int, Any, Headers]:
        headers = Headers({b"Snap-Device-Series": [b"16"],
                           b"Snap-Device-Architecture": [self.architecture.encode()],
                           b"User-Agent": [b"snapd/2.66.1 (series 16) ubuntu/24.04 (amd64)"],
                           b"Accept": [b"application/json"]})
        if session and self.macaroon is not None:
            headers.setRawHeaders(b"Snap-Device-Authorization",
                                  [f'Macaroon root="{self.macaroon}"'.encode()])
        producer = None
        if body is not None:
            headers.setRawHeaders(b"Content-Type", [b"application/json"])
            producer = FileBodyProducer(BytesIO(json.dumps(body).encode()))
        response = await testAgent(self.testCase).request(
            method, (base + path.lstrip("/")).encode(), headers, producer)
        content = await readBody(response)
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = content
        return response.code, parsed, response.headers

    async def openSession(self) -> tuple[int, Any]:
        """
        Nonce, then session (with the old session, when there is one, as
        C{X-Device-Authorization}, as snapd does); keep the new macaroon.

        @return: the session call's code and answer.
        """
        code, answer, _ = await self._request(self.sessionURL, b"POST",
                                              "api/v1/snaps/auth/nonces", session=False)
        if code != 200:
            return code, answer
        body = {"device-session-request": sessionRequest(self.serial, nonce=answer["nonce"]),
                "serial-assertion": "serial", "model-assertion": "model"}
        code, answer, _ = await self._request(self.sessionURL, b"POST",
                                              "api/v1/snaps/auth/sessions", body, session=False)
        if code == 200:
            self.macaroon = answer["macaroon"]
            self.macaroons.append(self.macaroon)
            self.sessionsOpened += 1
        return code, answer

    async def call(self, method: bytes, path: str, body: Any = None) -> tuple[int, Any]:
        """
        One store call with the device's session, renewing the session on
        C{refresh_device_session=1} as snapd does.
        """
        if self.macaroon is None:
            await self.openSession()
        refreshes = 0
        while True:
            code, answer, headers = await self._request(self.url, method, path, body)
            challenge = b" ".join(headers.getRawHeaders(b"www-authenticate") or [])
            if code != 401 or b"refresh_device_session=1" not in challenge:
                return code, answer
            self.refusals += 1
            if refreshes == MAX_SESSION_REFRESHES:
                return code, answer
            refreshes += 1
            await self.openSession()

    async def refresh(self, snapId: str, revision: int,
                      channel: str = "latest/stable") -> tuple[int, Any]:
        """
        Refresh one installed snap; C{(code, answer)}.
        """
        return await self.call(b"POST", "v2/snaps/refresh", {
            "context": [{"snap-id": snapId, "instance-key": snapId, "revision": revision,
                         "tracking-channel": channel, "epoch": {"read": [0], "write": [0]}}],
            "actions": [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}],
            "fields": ["architectures", "download", "revision", "name", "snap-id", "version"]})

    async def refreshInstalled(self, installed: list[tuple[str, int, str]]) -> tuple[int, Any]:
        """
        Refresh the whole installed set, as snapd's auto-refresh does: the
        context lists every C{(snap-id, revision, tracking channel)}, with
        a refresh action for each.
        """
        return await self.call(b"POST", "v2/snaps/refresh", {
            "context": [{"snap-id": snapId, "instance-key": snapId, "revision": revision,
                         "tracking-channel": channel, "epoch": {"read": [0], "write": [0]}}
                        for snapId, revision, channel in installed],
            "actions": [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}
                        for snapId, _, _ in installed],
            "fields": ["architectures", "download", "revision", "name", "snap-id", "version"]})

    async def refreshedRevision(self, snapId: str, installed: int = 9) -> int:
        """
        The revision a refresh offers; fails the test unless it is a 200.
        """
        code, answer = await self.refresh(snapId, installed)
        self.testCase.assertEqual(code, 200, answer)
        return answer["results"][0]["snap"]["revision"]
