# -*- test-case-name: tests.test_fleet -*-
"""
Device groups: named sets of devices defined by selectors.

A group holds selectors of four kinds; a device is a member when any one
matches:

 - C{serial}: the serial part of C{brand/model/serial};
 - C{model}: C{brand/model};
 - C{network}: a CIDR holding the device's address;
 - C{device}: the whole identity (C{brand/model/serial} or
   C{address:<ip>}).

Membership is computed when asked, never stored, so a device that newly
matches a selector is a member at once.  Groups live in the state store;
L{GroupDirectory} keeps them in memory, read again when any node announces
a change, so that a rule asking a device's groups costs no query.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Optional, Sequence

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from snapstore.state.fleet import SELECTOR_KINDS, DeviceGroup

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class GroupError(ValueError):
    """
    A group name or selector is not valid; the message says why.
    """


def checkName(name: Any) -> str:
    """
    @return: C{name} when it is a usable group name.
    @raise GroupError: otherwise.
    """
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS \
            or not name[0].isalnum():
        raise GroupError(f"{name!r} is not a group name: 1 to 64 letters, digits, '-', '_' "
                         f"or '.', starting with a letter or digit")
    return name


def checkSelectors(selectors: Any) -> dict[str, list[str]]:
    """
    @return: the selectors in their stored form (every kind present).
    @raise GroupError: naming the first bad selector.
    """
    if not isinstance(selectors, dict):
        raise GroupError("selectors must be an object of lists")
    unknown = set(selectors) - set(SELECTOR_KINDS)
    if unknown:
        raise GroupError(f"unknown selector kind {sorted(unknown)[0]!r} "
                         f"(use {', '.join(SELECTOR_KINDS)})")
    checked: dict[str, list[str]] = {}
    for kind in SELECTOR_KINDS:
        values = selectors.get(kind) or []
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise GroupError(f"{kind} selectors must be a list of non-empty strings")
        for value in values:
            if kind == "network":
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError:
                    raise GroupError(f"{value!r} is not a network (use a CIDR such as "
                                     f"10.0.0.0/8)")
            elif kind == "model" and value.count("/") != 1:
                raise GroupError(f"{value!r} is not a model: use BRAND/MODEL")
            elif kind == "serial" and "/" in value:
                raise GroupError(f"{value!r} is not a serial (the part after brand/model/)")
        checked[kind] = sorted(set(values))
    if not any(checked.values()):
        raise GroupError("a group needs at least one selector (--serial, --model, "
                         "--network or --device)")
    return checked


def isMember(group: DeviceGroup, identity: str, address: str) -> bool:
    """
    Whether the device C{identity}, last seen at C{address}, is in
    C{group}.
    """
    selectors = group.selectors
    if identity in selectors.get("device", ()):
        return True
    if not identity.startswith("address:"):
        parts = identity.split("/")
        if len(parts) >= 3:
            if "/".join(parts[:2]) in selectors.get("model", ()):
                return True
            if "/".join(parts[2:]) in selectors.get("serial", ()):
                return True
    networks = selectors.get("network") or ()
    if networks and address:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        for network in networks:
            candidate = ipaddress.ip_network(network, strict=False)
            if ip.version == candidate.version and ip in candidate:
                return True
    return False


def groupsOf(groups: Iterable[DeviceGroup], identity: str, address: str) -> tuple[str, ...]:
    """
    The names of the C{groups} the device is a member of, sorted.
    """
    return tuple(sorted(g.name for g in groups if isMember(g, identity, address)))


class GroupDirectory:
    """
    The groups of the state store, kept in memory.

    While the database is away the groups read last stay in force; the
    rules service reads them as soon as the database answers at start
    (L{warm}), so that only a node that never reached its database sees
    devices in no group.
    """

    log = Logger()

    def __init__(self, state: Any) -> None:
        self.state = state
        self._groups: Optional[list[DeviceGroup]] = None
        self._stale = True
        self._stop: Any = None
        self._failing = False

    def _changed(self, event: Any) -> None:
        if not isinstance(event, dict) or event.get("kind") in ("group", "resync"):
            self._stale = True

    async def groups(self) -> Sequence[DeviceGroup]:
        """
        @return: every group (read again after a change).
        """
        if self._stop is None and hasattr(self.state, "observeChanges"):
            self._stop = self.state.observeChanges(self._changed)
        if self._stale:
            self._stale = False
            try:
                self._groups = list(await self.state.listGroups())
                self._failing = False
            except Exception as error:
                self._stale = True
                if not self._failing:
                    self._failing = True
                    self.log.warn("Cannot read device groups ({why}); using the {count} "
                                  "read last", why=error, count=len(self._groups or ()))
        return self._groups or ()

    async def groupsFor(self, identity: str, address: str) -> tuple[str, ...]:
        """
        The names of the groups device C{identity} at C{address} is in.
        """
        return groupsOf(await self.groups(), identity, address)

    def warm(self) -> Any:
        return ensureDeferred(self.groups())

    def close(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()
