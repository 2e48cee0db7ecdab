# -*- test-case-name: tests.test_admin -*-
"""
Who may use the admin API, and who they are in the audit log.

On loopback without a token file the admin API trusts local users, as a
Unix socket would; on any other address it must not start without a token
file, and once a token file is given every request must present one of its
tokens.  Tokens are compared in constant time.

The audit log's actor is the token's name, or for loopback requests the
local user owning the client socket (read from C{/proc/net/tcp*} on Linux;
the name the command sends in C{X-Snapstore-User} is used, marked as
claimed, only when that lookup is impossible).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import pwd
from typing import Any, Optional

import attrs

from snapstore.http.endpoints import isLoopbackEndpoint, splitEndpoint

#: The header the C{snapstore} command sends the local user name in.
USER_HEADER = b"x-snapstore-user"


class AdminConfigError(ValueError):
    """
    The admin endpoint's settings are unsafe or unreadable.
    """


def readTokens(path: str) -> dict[str, str]:
    """
    Read a token file: one C{NAME:TOKEN} per line (a line with no colon is
    a token named C{admin}); blank lines and C{#} comments are skipped.

    @return: token to name.
    @raise AdminConfigError: when the file cannot be read, holds no token
        or a token shorter than 16 characters (too easy to guess).
    """
    try:
        with open(path, encoding="utf-8") as tokenFile:
            lines = tokenFile.read().splitlines()
    except OSError as error:
        raise AdminConfigError(
            f"--admin-token-file: cannot read {path}: {error.strerror}")
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.rpartition(":")
        if not sep:
            name, token = "admin", line
        name, token = name.strip() or "admin", token.strip()
        if len(token) < 16:
            raise AdminConfigError(
                f"--admin-token-file: {path} line {number}: token shorter than 16 "
                f"characters (make one with: head -c 24 /dev/urandom | base64)")
        tokens[token] = name
    if not tokens:
        raise AdminConfigError(f"--admin-token-file: {path} holds no token")
    return tokens


def loopbackSuggestion(endpoint: str) -> str:
    """
    The loopback form of C{endpoint} to suggest: the operator's own port,
    so the advice can be pasted as it is.
    """
    args, _ = splitEndpoint(endpoint)
    port = next((arg for arg in args if arg.isdigit()), "8001")
    return f"tcp:{port}:interface=127.0.0.1"


def checkAdminSettings(endpoint: Optional[str], tokenFile: Optional[str]) -> Optional[dict[str, str]]:
    """
    Refuse an admin endpoint reachable from other machines without tokens.

    @return: the tokens (see L{readTokens}), or C{None} when there is no
        token file.
    @raise AdminConfigError: with a message saying what to do.
    """
    tokens = readTokens(tokenFile) if tokenFile else None
    if endpoint and tokens is None and not isLoopbackEndpoint(endpoint):
        raise AdminConfigError(
            f"--admin-endpoint {endpoint} is not on loopback, so it needs "
            f"--admin-token-file (lines NAME:TOKEN); or bind it to loopback "
            f"with {loopbackSuggestion(endpoint)}")
    return tokens


@attrs.frozen
class Caller:
    """
    Who made an admin request.

    @ivar actor: the name written to the audit log.
    @ivar authenticated: whether a token proved it.
    """

    actor: str
    authenticated: bool


class Authoriser:
    """
    Decides whether an admin request may proceed and who made it.

    @ivar tokens: token to name, or C{None} when requests need no token.
    """

    def __init__(self, tokens: Optional[dict[str, str]], procRoot: str = "/proc") -> None:
        self.tokens = tokens
        self.procRoot = procRoot

    def authorise(self, request: Any) -> Optional[Caller]:
        """
        @return: the L{Caller}, or C{None} when the request must be refused
            with 401.
        """
        if self.tokens is not None:
            header = request.getHeader(b"authorization") or ""
            if isinstance(header, bytes):
                header = header.decode("latin-1")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer":
                return None
            return self.callerWithToken(given.strip())
        return Caller(self.localUser(request), False)

    def callerWithToken(self, given: str) -> Optional[Caller]:
        """
        The caller C{given} proves to be (from a C{Bearer} header, or the
        dashboard's cookie), or C{None} for no token of the file.
        """
        if self.tokens is None:
            return None
        name = None
        for token, tokenName in self.tokens.items():
            # Compare against every token so the time taken does not
            # tell which one (or how much of one) matched.
            if hmac.compare_digest(token.encode("utf-8"), given.encode("utf-8")):
                name = tokenName
        if name is None:
            return None
        return Caller(f"token:{name}", True)

    def isLocal(self, request: Any) -> bool:
        """
        Whether the request came over loopback (or a Unix socket).
        """
        host = getattr(request.getClientAddress(), "host", None)
        if host is None:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def localUser(self, request: Any) -> str:
        """
        The local user owning the client end of a loopback request.
        """
        client = request.getClientAddress()
        server = request.getHost()
        uid = socketOwner(getattr(client, "host", None), getattr(client, "port", None),
                          getattr(server, "port", None), self.procRoot)
        if uid is not None:
            try:
                return "local:" + pwd.getpwuid(uid).pw_name
            except KeyError:
                return f"local:uid={uid}"
        claimed = request.getHeader(USER_HEADER)
        if claimed:
            return f"local:{claimed}(claimed)"
        return "local:unknown"


def _hexAddress(host: str) -> Optional[tuple[str, str]]:
    """
    The C{/proc/net/tcp}/C{tcp6} spellings of an IP address.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    packed = address.packed
    if address.version == 4:
        v4 = packed[::-1].hex().upper()
        mapped = ipaddress.IPv6Address("::ffff:" + host).packed
        v6 = "".join(mapped[i:i + 4][::-1].hex().upper() for i in range(0, 16, 4))
        return v4, v6
    v6 = "".join(packed[i:i + 4][::-1].hex().upper() for i in range(0, 16, 4))
    return v6, v6


def socketOwner(host: Optional[str], port: Optional[int], serverPort: Optional[int],
                procRoot: str = "/proc") -> Optional[int]:
    """
    The uid owning the local TCP socket C{host:port} connected to our
    C{serverPort}, from the kernel's socket table.

    @return: the uid, or C{None} when it cannot be found (not Linux, not a
        loopback peer, the socket already gone).
    """
    if host is None or port is None or serverPort is None:
        return None
    spellings = _hexAddress(host)
    if spellings is None:
        return None
    wanted = {f"{spelling}:{port:04X}" for spelling in spellings}
    serverSuffix = f":{serverPort:04X}"
    for table in ("tcp", "tcp6"):
        try:
            with open(os.path.join(procRoot, "net", table)) as socketTable:
                rows = socketTable.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 8:
                continue
            local, remote, uid = fields[1], fields[2], fields[7]
            if local in wanted and remote.endswith(serverSuffix):
                try:
                    return int(uid)
                except ValueError:
                    return None
    return None
