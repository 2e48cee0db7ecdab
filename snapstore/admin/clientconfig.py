# -*- test-case-name: tests.test_admin,tests.test_tls -*-
"""
What a device needs to use this proxy, ready to run.

snapd has two ways in (docs/architecture.md, "The store API in brief"):

  - store mode: C{SNAPPY_FORCE_API_URL} in a C{snapd.service} drop-in
    points snapd's store API (and assertions) at the store endpoint, which
    caches downloads.  When the endpoint uses a self-signed certificate,
    snapd must trust it: C{/var/lib/snapd/ssl/store-certs/*.pem} (the file
    behind C{snap set system store-certs.NAME}).
  - forward-proxy mode: C{snap set system proxy.http/proxy.https} sends
    every snapd request through the forward proxy (tunnelled, not cached).

The same description is served three ways: as a shell script (C{curl
.../v1/client-config | sudo sh}), as a cloud-init snippet (the fleet
provisioning path cloud-init lacks natively) and as JSON.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any, Optional

from twisted.web.server import Request
from zope.interface import implementer

from snapstore.interfaces import IClientConfig
from snapstore.http.endpoints import endpointPort, isTLSEndpoint
from snapstore.http.tls import certificatePEM, endpointCertificate, isSelfSigned

DROP_IN_PATH = "/etc/systemd/system/snapd.service.d/snapstore.conf"
STORE_CERT_PATH = "/var/lib/snapd/ssl/store-certs/snapstore.pem"
_HOST_HEADER_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")


def resolvesToLoopback(host: str) -> bool:
    """
    Whether C{host} (a name or an address literal) stands only for
    loopback addresses; a name that does not resolve here does not.
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return False
    addresses = set()
    for address in found:
        try:
            addresses.add(ipaddress.ip_address(str(address).split("%", 1)[0]))
        except ValueError:
            return False
    return bool(addresses) and all(address.is_loopback for address in addresses)


@implementer(IClientConfig)
class ClientConfig:
    """
    Builds the device setup from the service's settings.

    @ivar publicURL: the configured C{--public-url}, or C{None}.
    @ivar storeEndpoint: the store endpoint string.
    @ivar proxyEndpoint: the forward-proxy endpoint string, or C{None}.
    @ivar hostName: the host name used when neither the public URL nor the
        request says how devices reach us.
    """

    def __init__(self, publicURL: Optional[str], storeEndpoint: Optional[str],
                 proxyEndpoint: Optional[str], hostName: Optional[str] = None) -> None:
        self.publicURL = publicURL
        self.storeEndpoint = storeEndpoint
        self.proxyEndpoint = proxyEndpoint
        self.hostName = hostName or socket.getfqdn()
        self._loopback: Optional[bool] = None

    @classmethod
    def fromSettings(cls, settings: Any) -> "ClientConfig":
        return cls(settings.publicUrl, settings.storeEndpoint, settings.proxyEndpoint)

    # -- facts -------------------------------------------------------------

    def _requestHost(self, request: Optional[Request]) -> Optional[str]:
        if request is None:
            return None
        raw = request.getHeader(b"host")
        host = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        if host and set(host) <= _HOST_HEADER_OK:
            return host
        return None

    def storeURL(self, request: Optional[Request]) -> str:
        """
        The URL devices reach the store endpoint at: C{--public-url}, else
        the Host the device used (on the store endpoint), else this host's
        name and the store endpoint's port.
        """
        if self.publicURL:
            return self.publicURL
        host = self._requestHost(request)
        scheme = "https" if isTLSEndpoint(self.storeEndpoint) else "http"
        if host is None:
            port = endpointPort(self.storeEndpoint)
            default = 443 if scheme == "https" else 80
            host = self.hostName + (f":{port}" if port and port != default else "")
        return f"{scheme}://{host}/"

    def loopbackProblem(self, request: Optional[Request] = None) -> Optional[str]:
        """
        Why the store URL devices would be given cannot work, or C{None}:
        it names a loopback address (C{socket.getfqdn()} is C{localhost}
        on many hosts), so each device would talk to itself.  A URL taken
        from the request's own C{Host} is what that client reached us by,
        and is never refused.
        """
        if not self.publicURL and self._requestHost(request) is not None:
            return None
        url = self.storeURL(None)
        if self._loopback is None:
            from hyperlink import URL

            self._loopback = resolvesToLoopback(URL.from_text(url).host)
        if not self._loopback:
            return None
        source = "--public-url" if self.publicURL else f"this host's name ({self.hostName})"
        return (f"the store URL for devices, {url}, comes from {source} and points at a "
                f"loopback address, so devices would talk to themselves: set --public-url "
                f"to the URL devices reach this service at, e.g. --public-url "
                f"http://snapstore.example.lan:{endpointPort(self.storeEndpoint) or 8000}/")

    def proxyURL(self, request: Optional[Request]) -> Optional[str]:
        """
        The forward proxy's URL for C{proxy.http}/C{proxy.https}, or
        C{None} when it is disabled.
        """
        port = endpointPort(self.proxyEndpoint)
        if port is None:
            return None
        from hyperlink import URL

        host = URL.from_text(self.storeURL(request)).host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def caCertificate(self) -> Optional[str]:
        """
        The PEM certificate devices must trust: the store endpoint's own
        when it is self-signed; C{None} when a public CA signed it or the
        endpoint is not TLS.
        """
        certificate = endpointCertificate(self.storeEndpoint)
        if certificate is None or not isSelfSigned(certificate):
            return None
        return certificatePEM(certificate)

    # -- renderings ----------------------------------------------------------

    def dropIn(self, request: Optional[Request]) -> str:
        """
        The C{snapd.service} drop-in for store mode.
        """
        return f"[Service]\nEnvironment=SNAPPY_FORCE_API_URL={self.storeURL(request)}\n"

    def proxyCommands(self, request: Optional[Request]) -> list[str]:
        """
        The C{snap set} lines for forward-proxy mode (empty when disabled).
        """
        url = self.proxyURL(request)
        if url is None:
            return []
        return [f"snap set system proxy.http={url} proxy.https={url}"]

    def describe(self, request: Optional[Request]) -> dict[str, Any]:
        """
        Everything, as one JSON-ready dict.
        """
        return {
            "store-url": self.storeURL(request),
            "proxy-url": self.proxyURL(request),
            "drop-in": {"path": DROP_IN_PATH, "content": self.dropIn(request)},
            "ca-certificate": self.caCertificate(),
            "ca-certificate-path": STORE_CERT_PATH,
            "proxy-commands": self.proxyCommands(request),
            "script": self.script(request),
            "forward-proxy-script": self.script(request, mode="forward"),
            "cloud-init": self.cloudInit(request),
        }

    def script(self, request: Optional[Request], mode: str = "store") -> str:
        """
        A POSIX shell script doing the setup, to run as root on a device.

        @param mode: C{store} (relay and cache, via the drop-in) or
            C{forward} (snapd's proxy settings).
        """
        lines = ["#!/bin/sh", "# snapstore device setup: run as root on the device.", "set -eu"]
        if mode == "forward":
            commands = self.proxyCommands(request)
            if not commands:
                lines.append("echo 'this snapstore has no forward proxy (--proxy-endpoint none)' >&2")
                lines.append("exit 1")
                return "\n".join(lines) + "\n"
            lines.append("# Forward-proxy mode: snapd tunnels through the proxy (no caching of https).")
            lines.extend(commands)
            return "\n".join(lines) + "\n"
        certificate = self.caCertificate()
        if certificate:
            lines += [
                "# Trust the proxy's self-signed certificate (read by snapd on every connection).",
                f"mkdir -p {STORE_CERT_PATH.rsplit('/', 1)[0]}",
                f"cat > {STORE_CERT_PATH} <<'SNAPSTORE_CA'",
                certificate.rstrip("\n"),
                "SNAPSTORE_CA",
            ]
        lines += [
            "# Point snapd's store API at the proxy (read once, when snapd starts).",
            f"mkdir -p {DROP_IN_PATH.rsplit('/', 1)[0]}",
            f"cat > {DROP_IN_PATH} <<'SNAPSTORE_DROPIN'",
            self.dropIn(request).rstrip("\n"),
            "SNAPSTORE_DROPIN",
            "systemctl daemon-reload",
            "systemctl restart snapd.service",
            f"echo 'snapd now uses the store at {self.storeURL(request)}'",
        ]
        proxyCommands = self.proxyCommands(request)
        if proxyCommands:
            lines.append("# Alternatively, forward-proxy mode instead of the drop-in:")
            lines.extend("#   " + command for command in proxyCommands)
        lines.append(f"# To undo: rm {DROP_IN_PATH} && systemctl daemon-reload && "
                     f"systemctl restart snapd.service")
        return "\n".join(lines) + "\n"

    def cloudInit(self, request: Optional[Request], mode: str = "store") -> str:
        """
        A C{#cloud-config} snippet doing the same at first boot.
        """
        lines = ["#cloud-config", "# snapstore device setup"]
        if mode == "forward":
            lines.append("runcmd:")
            for command in self.proxyCommands(request):
                lines.append(f"  - {json.dumps(command.split())}")
            return "\n".join(lines) + "\n"
        lines.append("write_files:")
        certificate = self.caCertificate()
        if certificate:
            lines += [f"  - path: {STORE_CERT_PATH}", "    permissions: '0644'", "    content: |"]
            lines += ["      " + line for line in certificate.rstrip("\n").split("\n")]
        lines += [f"  - path: {DROP_IN_PATH}", "    permissions: '0644'", "    content: |"]
        lines += ["      " + line for line in self.dropIn(request).rstrip("\n").split("\n")]
        lines += [
            "runcmd:",
            '  - ["systemctl", "daemon-reload"]',
            '  - ["systemctl", "restart", "snapd.service"]',
        ]
        return "\n".join(lines) + "\n"
