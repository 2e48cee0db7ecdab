# -*- test-case-name: tests.test_rules -*-
"""
Support for the rules tests (no tests here): an in-memory state store, a
proxy in front of the fake store with a rules directory, and a client that
speaks like snapd.
"""

from __future__ import annotations

import json
import os
import textwrap
from io import BytesIO
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.web.client import FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from snapstore.interfaces import IStateStore
from snapstore.rules.engine import RuleEnv
from snapstore.rules.service import RulesService
from snapstore.state.records import Device, DeviceSession, normaliseChannel
from tests.helpers import startStore, testAgent, testSettings

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_RULES = os.path.join(CHECKOUT, "rules.d")


@implementer(IStateStore)
class MemoryState:
    """
    The parts of L{IStateStore} rules use, in memory, with the documented
    behaviour (channels normalised, audit rows appended, observers told).
    """

    def __init__(self, clock: Any = reactor) -> None:
        self.clock = clock
        self.overrides: dict[tuple[str, str, str], Any] = {}
        self.devices: dict[str, Device] = {}
        self.sessions: dict[str, DeviceSession] = {}
        self.audit: list[tuple[str, str, str, Any, Any]] = []
        self.settings: dict[str, Any] = {}
        self.blobs: dict[str, Any] = {}
        self.observers: list[Any] = []
        self.listCalls = 0

    def _tell(self, event: dict[str, Any]) -> None:
        for observer in list(self.observers):
            observer(event)

    def whenReady(self) -> Any:
        return succeed(None)

    def close(self) -> Any:
        return succeed(None)

    def recordBlob(self, blob: Any) -> Any:
        self.blobs.setdefault(blob.name, blob)
        return succeed(self.blobs[blob.name])

    def getBlob(self, name: str) -> Any:
        return succeed(self.blobs.get(name))

    def setOverride(self, override: Any, actor: str) -> Any:
        try:
            channel = normaliseChannel(override.channel)
        except ValueError:
            return fail()
        override = attrs.evolve(override, channel=channel)
        key = (override.snapName, channel, override.architecture, override.group)
        previous = self.overrides.get(key)
        self.overrides[key] = override
        self.audit.append((actor, "override.set", f"snap:{override.snapName}",
                           previous, override))
        self._tell({"kind": "override", "snapName": override.snapName,
                    "channel": channel, "architecture": override.architecture})
        return succeed(previous)

    def deleteOverride(self, snapName: str, channel: str, actor: str,
                       architecture: Any = None, group: str = "") -> Any:
        channel = normaliseChannel(channel)
        removed = [o for k, o in sorted(self.overrides.items())
                   if k[:2] == (snapName, channel) and architecture in (None, k[2])
                   and k[3] == group]
        for override in removed:
            del self.overrides[(snapName, channel, override.architecture, group)]
        self.audit.append((actor, "override.delete", f"snap:{snapName}", removed, None))
        self._tell({"kind": "override", "snapName": snapName, "channel": channel,
                    "architecture": architecture})
        return succeed(removed)

    def listOverrides(self, snapName: Any = None) -> Any:
        self.listCalls += 1
        return succeed([o for k, o in sorted(self.overrides.items())
                        if snapName in (None, k[0])])

    def recordDevice(self, device: Device) -> Any:
        known = self.devices.get(device.identity)
        lastSeen = device.lastSeen or self.clock.seconds()
        if known is not None:
            device = attrs.evolve(known, lastSeen=max(known.lastSeen, lastSeen),
                                  address=device.address or known.address,
                                  model=device.model or known.model)
        else:
            device = attrs.evolve(device, lastSeen=lastSeen,
                                  firstSeen=device.firstSeen or lastSeen)
        self.devices[device.identity] = device
        return succeed(device)

    def listDevices(self, seenSince: Any = None) -> Any:
        return succeed([d for d in self.devices.values()
                        if seenSince is None or d.lastSeen >= seenSince])

    def recordSession(self, session: DeviceSession) -> Any:
        now = self.clock.seconds()
        known = self.sessions.get(session.digest)
        if known is None:
            session = attrs.evolve(session, createdAt=session.createdAt or now,
                                   lastUsed=session.lastUsed or now)
        else:
            session = attrs.evolve(known, expiresAt=session.expiresAt or known.expiresAt,
                                   lastUsed=max(known.lastUsed, session.lastUsed or now))
        self.sessions[session.digest] = session
        return succeed(session)

    def getSession(self, digest: str) -> Any:
        return succeed(self.sessions.get(digest))

    def listSessions(self, usedSince: Any = None) -> Any:
        return succeed([s for _, s in sorted(self.sessions.items())
                        if usedSince is None or s.lastUsed >= usedSince])

    def pruneSessions(self, unusedFor: float) -> Any:
        now = self.clock.seconds()
        gone = [d for d, s in self.sessions.items()
                if (s.expiresAt and s.expiresAt <= now) or s.lastUsed < now - unusedFor]
        for digest in gone:
            del self.sessions[digest]
        return succeed(len(gone))

    def appendAudit(self, actor: str, action: str, target: str, before: Any,
                    after: Any) -> Any:
        self.audit.append((actor, action, target, before, after))
        return succeed(None)

    def listAudit(self, target: Any = None, since: Any = None, until: Any = None) -> Any:
        return succeed(list(self.audit))

    def verifyAudit(self) -> Any:
        return succeed(None)

    def getSetting(self, key: str) -> Any:
        return succeed(self.settings.get(key))

    def setSetting(self, key: str, value: Any, actor: str) -> Any:
        previous = self.settings.get(key)
        self.settings[key] = value
        self._tell({"kind": "setting", "key": key})
        return succeed(previous)

    def observeChanges(self, callback: Any) -> Any:
        self.observers.append(callback)
        return lambda: self.observers.remove(callback)


def writeRules(testCase: Any, files: dict[str, str], directory: Any = None) -> str:
    """
    Write rules files (name to source, dedented) into a new directory (or
    C{directory}) and return its path.
    """
    if directory is None:
        directory = testCase.mktemp()
        os.makedirs(directory)
    for name, source in files.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(textwrap.dedent(source))
    return directory


def copyShipped(testCase: Any, **settings: str) -> str:
    """
    A copy of the shipped C{rules.d} with some literal settings replaced,
    e.g. C{copyShipped(self, limit="2")} edits the device-limit file.
    """
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    for name in sorted(os.listdir(SHIPPED_RULES)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(SHIPPED_RULES, name)) as f:
            lines = f.read().splitlines(keepends=True)
        for index, line in enumerate(lines):
            for key, value in settings.items():
                if line.startswith(f"{key} = "):
                    lines[index] = f"{key} = {value}\n"
        with open(os.path.join(directory, name), "w") as f:
            f.writelines(lines)
    return directory


def sessionRequest(serial: str, brand: str = "acme", model: str = "gizmo",
                   nonce: str = "n") -> str:
    """
    The text of a device-session-request assertion (unsigned: neither the
    proxy nor the fake store checks signatures).
    """
    return (f"type: device-session-request\nbrand-id: {brand}\nmodel: {model}\n"
            f"serial: {serial}\nnonce: {nonce}\ntimestamp: 2026-01-01T00:00:00Z\n"
            f"sign-key-sha3-384: abc\n\nSIGNATURE")


class Proxy:
    """
    The store endpoint with a rules directory, listening on loopback, in
    front of an upstream (the fake store).
    """

    def __init__(self, testCase: Any, upstreamURL: str, rulesDir: str,
                 state: Any = None, clock: Any = reactor) -> None:
        self.testCase = testCase
        self.state = state if state is not None else MemoryState(clock)
        self.clock = clock
        self.settings = testSettings(testCase, upstream=upstreamURL,
                                     rules_dir=rulesDir)
        self.rulesDir = rulesDir
        self.url = ""

    @inlineCallbacks
    def start(self) -> Any:
        def makeRules(upstream: Any, verdictObserver: Any) -> RulesService:
            env = RuleEnv(state=self.state, clock=self.clock, settings=self.settings,
                          upstream=upstream)
            return RulesService(self.rulesDir, env, installSignal=lambda *a: None,
                                verdictObserver=verdictObserver)

        store = yield Deferred.fromCoroutine(
            startStore(self.testCase, self.settings, self.state, makeRules))
        self.parts = store.parts
        self.rules = self.parts.rules
        self.url = store.url + "/"
        return self

    @inlineCallbacks
    def call(self, method: bytes, path: str, body: Any = None, session: Any = None,
             architecture: str = "amd64") -> Any:
        """
        Make one call with snapd's headers; fire with C{(code, parsed or raw body)}.
        """
        headers = Headers({b"Snap-Device-Series": [b"16"],
                           b"Snap-Device-Architecture": [architecture.encode()],
                           b"User-Agent": [b"snapd/2.66.1 (series 16) ubuntu/24.04 (amd64)"],
                           b"Accept": [b"application/json"]})
        if session is not None:
            headers.setRawHeaders(b"Snap-Device-Authorization",
                                  [f'Macaroon root="{session}"'.encode()])
        producer = None
        if body is not None:
            headers.setRawHeaders(b"Content-Type", [b"application/json"])
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            producer = FileBodyProducer(BytesIO(data))
        response = yield testAgent(self.testCase).request(
            method, (self.url + path.lstrip("/")).encode(), headers, producer)
        content = yield readBody(response)
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = content
        return response.code, parsed

    @inlineCallbacks
    def openSession(self, serial: str) -> Any:
        """
        Open a device session through the proxy as snapd does (nonce, then
        session); fire with the macaroon.
        """
        code, answer = yield self.call(b"POST", "api/v1/snaps/auth/nonces")
        self.testCase.assertEqual(code, 200, answer)
        code, answer = yield self.call(b"POST", "api/v1/snaps/auth/sessions", {
            "device-session-request": sessionRequest(serial, nonce=answer["nonce"]),
            "serial-assertion": "x", "model-assertion": "y"})
        if code != 200:
            return code, answer
        return answer["macaroon"]

    def refreshBody(self, snapId: str, revision: int, channel: str = "latest/stable") -> dict:
        return {"context": [{"snap-id": snapId, "instance-key": snapId, "revision": revision,
                             "tracking-channel": channel,
                             "epoch": {"read": [0], "write": [0]}}],
                "actions": [{"action": "refresh", "instance-key": snapId, "snap-id": snapId}],
                "fields": ["architectures", "download", "revision", "name", "snap-id",
                           "version", "publisher"]}

    @inlineCallbacks
    def refresh(self, snapId: str, revision: int, channel: str = "latest/stable",
                session: Any = None, architecture: str = "amd64") -> Any:
        """
        Refresh one installed snap; fire with its result dict.
        """
        code, answer = yield self.call(b"POST", "v2/snaps/refresh",
                                       self.refreshBody(snapId, revision, channel),
                                       session=session, architecture=architecture)
        self.testCase.assertEqual(code, 200, answer)
        [result] = answer["results"]
        return result

    @inlineCallbacks
    def install(self, name: str, channel: str = "stable", action: str = "install",
                session: Any = None, architecture: str = "amd64") -> Any:
        key = f"{action}-1"
        code, answer = yield self.call(b"POST", "v2/snaps/refresh", {
            "context": [], "fields": ["architectures", "download", "revision", "publisher"],
            "actions": [{"action": action, "instance-key": key, "name": name,
                         "channel": channel, "epoch": None}]},
            session=session, architecture=architecture)
        self.testCase.assertEqual(code, 200, answer)
        [result] = answer["results"]
        return result
