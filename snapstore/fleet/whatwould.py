# -*- test-case-name: tests.test_fleet -*-
"""
What a refresh through the proxy would change now, for every device.

For each device the question is the refresh snapd would send: its last
reported context (every installed snap, revision and tracking channel)
with a C{refresh} action per snap, for its architecture.  The question
goes to upstream (its current channel maps) and the answer through the
same action rules a device's own refresh goes through
(L{snapstore.rules.engine.RuleSet.amendRefresh}: overrides, access lists,
and whatever rules.d adds), with the device's identity and groups, so the
report is what the device would be offered, not a guess beside it.

Devices that would send the same question (same architecture, groups and
installed set) share one upstream call, so a fleet of identical devices
costs one call per distinct installed set.

A proposed change (C{snapstore override ... --dry-run}, C{hold ...
--dry-run}) is evaluated by giving the same rules a view of the pins and
holds in which the proposal is already made (L{withProposedPolicy});
nothing is written.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Iterable, Optional, Sequence

from twisted.web.http_headers import Headers

from snapstore.rules.engine import RuleSet
from snapstore.policy.table import ProposedPolicy
from snapstore.rules.overrides import OverrideRule
from snapstore.rules.values import DeviceIdentity, StoreRequest
from snapstore.state.fleet import FleetDevice

REFRESH_PATH = "/v2/snaps/refresh"
FIELDS = ["revision", "snap-id", "name", "version", "architectures"]


def withProposedPolicy(ruleSet: RuleSet, pins: Sequence[Any] = (), holds: Sequence[Any] = (),
                       released: Sequence[Any] = (), approvals: Sequence[Any] = ()) -> RuleSet:
    """
    A rule set like C{ruleSet} in which the override rules see the proposed
    pins, holds, released holds (C{(snap, channel, group)} keys) and
    approvals as already made (L{ProposedPolicy}).  The rules are shallow
    copies: nothing of the running set changes.
    """
    rules = []
    for rule in ruleSet.rules:
        if isinstance(rule, OverrideRule):
            rule = copy.copy(rule)
            rule.table = ProposedPolicy(rule.table, pins, holds, released, approvals)
        rules.append(rule)
    return RuleSet(rules, ruleSet.files)


def refreshBody(device: FleetDevice) -> dict[str, Any]:
    """
    The refresh request snapd would send for C{device}'s installed set.
    """
    context, actions = [], []
    for index, snap in enumerate(device.snaps):
        key = f"fleet-{index}"
        entry = {"snap-id": snap.snapId, "instance-key": key, "revision": snap.revision,
                 "tracking-channel": snap.channel or "stable", "epoch": {"read": [0],
                                                                         "write": [0]}}
        context.append(entry)
        actions.append({"action": "refresh", "instance-key": key, "snap-id": snap.snapId,
                        "channel": snap.channel or "stable"})
    return {"context": context, "actions": actions, "fields": FIELDS}


def _questionKey(device: FleetDevice, groups: tuple[str, ...]) -> Any:
    return (device.architecture, groups,
            tuple(sorted((s.snapId, s.revision, s.channel) for s in device.snaps)))


class WhatWouldRefresh:
    """
    Computes the report.

    @ivar upstream: the upstream store client (C{request}, C{url},
        C{readBody}).
    @ivar groupsFor: C{(identity, address) -> Deferred/awaitable of group
        names}.
    """

    def __init__(self, upstream: Any, groupsFor: Callable[[str, str], Any]) -> None:
        self.upstream = upstream
        self.groupsFor = groupsFor

    async def changes(self, devices: Iterable[FleetDevice], ruleSet: RuleSet,
                      snapName: Optional[str] = None) -> list[dict[str, Any]]:
        """
        @param devices: the devices to report on (already filtered by
            group).
        @param snapName: report only this snap (by name or snap-id).
        @return: C{[{"device", "snap", "channel", "from", "to"}]}, by device
            then snap: only the snaps whose revision would change.
        """
        answers: dict[Any, dict[str, int]] = {}
        report = []
        for device in devices:
            if not device.snaps:
                continue
            groups = tuple(await self.groupsFor(device.identity, device.address))
            key = _questionKey(device, groups)
            if key not in answers:
                answers[key] = await self._ask(device, groups, ruleSet)
            offered = answers[key]
            for snap in device.snaps:
                if snapName is not None and snapName not in (snap.name, snap.snapId):
                    continue
                new = offered.get(snap.snapId)
                if new is not None and new != snap.revision:
                    report.append({"device": device.identity, "snap": snap.name or snap.snapId,
                                   "channel": snap.channel or "stable",
                                   "from": snap.revision, "to": new})
        report.sort(key=lambda c: (c["device"], c["snap"]))
        return report

    async def _ask(self, device: FleetDevice, groups: tuple[str, ...],
                   ruleSet: RuleSet) -> dict[str, int]:
        """
        Ask upstream and the rules what C{device} would be offered.

        @return: snap-id to the revision offered.
        """
        body = refreshBody(device)
        raw = json.dumps(body).encode("utf-8")
        headers = Headers()
        headers.setRawHeaders(b"content-type", [b"application/json"])
        headers.setRawHeaders(b"accept", [b"application/json"])
        headers.setRawHeaders(b"snap-device-series", [b"16"])
        if device.architecture:
            headers.setRawHeaders(b"snap-device-architecture",
                                  [device.architecture.encode("ascii", "replace")])
        response = await self.upstream.request(b"POST", self.upstream.url(REFRESH_PATH[1:]
                                                                           .encode()),
                                               headers, raw)
        answerBytes = await self.upstream.readBody(response, "what-would-refresh")
        if response.code != 200:
            raise RuntimeError(f"upstream answered the refresh for {device.identity} with "
                               f"HTTP {response.code}")
        answer = json.loads(answerBytes)
        request = StoreRequest(
            method=b"POST", path=REFRESH_PATH,
            headers=tuple((name.lower(), value) for name, values in headers.getAllRawHeaders()
                          for value in values),
            body=raw,
            device=DeviceIdentity(device.identity, device.model, device.address,
                                  groups=groups),
            upstreamHeaders=headers)
        amended = await ruleSet.amendRefresh(request, answer)
        if amended is not None:
            answer = amended
        offered: dict[str, int] = {}
        keys = {entry["instance-key"]: entry["snap-id"] for entry in body["context"]}
        for result in answer.get("results") or []:
            if not isinstance(result, dict) or result.get("result") != "refresh":
                continue
            found = result.get("snap")
            snap: dict[str, Any] = found if isinstance(found, dict) else {}
            revision = snap.get("revision")
            snapId = keys.get(result.get("instance-key")) or result.get("snap-id")
            if isinstance(revision, int) and snapId:
                offered[snapId] = revision
        return offered
