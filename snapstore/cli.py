# -*- test-case-name: tests.test_cli -*-
"""
The C{snapstore} command: administer a running snapstore through its admin
API.

It speaks HTTP to the admin endpoint only and never opens the database, so
it works the same against SQLite and PostgreSQL, locally or (with a token)
from another machine.  It is short-lived and synchronous: plain C{urllib},
no reactor.  (C{snapstore certificate} is the exception that needs no
service: it writes files locally.)

Exit codes, for scripts::

    0  done; everything checked is fine
    1  done, but what was checked is not fine (an unreachable upstream, a
       broken audit chain, a corrupt cache blob)
    2  usage error
    3  cannot reach the admin API (is snapstore running? right --admin?)
    4  the admin API refused the token (or wants one)
    5  the admin API refused the request (unknown snap revision, no such
       override, ...) or failed
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Optional, Sequence, TextIO

from snapstore import __version__
from snapstore.controlchars import escapeControls

DEFAULT_ADMIN = "http://127.0.0.1:8001"
TOKEN_ENV = "SNAPSTORE_ADMIN_TOKEN"
TOKEN_FILE_ENV = "SNAPSTORE_ADMIN_TOKEN_FILE"
ADMIN_ENV = "SNAPSTORE_ADMIN"

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_REFUSED = 5


class CommandError(Exception):
    """
    The command cannot do what was asked; C{message} says what to do and
    C{exitCode} is what the process exits with.
    """

    def __init__(self, message: str, exitCode: int) -> None:
        super().__init__(message)
        self.message = message
        self.exitCode = exitCode


class AdminClient:
    """
    A synchronous client of the admin API.

    @ivar base: the admin URL, e.g. C{http://127.0.0.1:8001}.
    @ivar token: the bearer token, or C{None}.
    """

    def __init__(self, base: str, token: Optional[str] = None, timeout: float = 120.0,
                 opener: Optional[Callable[..., Any]] = None) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout
        # Never send admin requests through an http_proxy from the
        # environment: the admin API is usually on loopback.
        self._opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({})).open

    def call(self, method: str, path: str, body: Any = None,
             query: Optional[dict[str, Any]] = None) -> Any:
        """
        Make one API call.

        @return: the decoded JSON answer.
        @raise CommandError: when the API cannot be reached or refuses.
        """
        url = self.base + path
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs, doseq=True)
        data = None
        headers = {"Accept": "application/json", "User-Agent": f"snapstore-cli/{__version__}"}
        try:
            headers["X-Snapstore-User"] = getpass.getuser()
        except Exception:
            pass
        if body is None and method in ("POST", "PUT", "PATCH"):
            # The API wants JSON on every state-changing call (a web page
            # cannot send that type cross-site): an empty object here.
            body = {}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
            message = _errorMessage(raw) or f"HTTP {error.code} {error.reason}"
            if error.code == 401:
                hint = ("pass --token-file FILE or set " + TOKEN_ENV) if not self.token \
                    else "the token was not accepted: check --token-file"
                raise CommandError(f"the admin API at {self.base} wants a token: {hint}",
                                   EXIT_AUTH)
            if error.code == 403:
                raise CommandError(f"the admin API at {self.base} refused: {message}", EXIT_AUTH)
            raise CommandError(message, EXIT_REFUSED)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CommandError(
                f"cannot reach the admin API at {self.base}: {reason}: is snapstore "
                f"running, and is --admin (or ${ADMIN_ENV}) its --admin-endpoint?",
                EXIT_UNREACHABLE)
        try:
            return json.loads(raw)
        except ValueError:
            raise CommandError(f"{self.base} did not answer with JSON: is it a snapstore "
                               f"admin endpoint?", EXIT_UNREACHABLE)


def adminClient(options: argparse.Namespace) -> AdminClient:
    """
    The admin API client the global options (C{--admin}, C{--token-file},
    C{$SNAPSTORE_ADMIN_TOKEN}, C{--timeout}) describe.
    """
    token = os.environ.get(TOKEN_ENV) or None
    if options.token_file:
        token = readToken(options.token_file)
    return AdminClient(checkAdminURL(options.admin), token, options.timeout)


def checkAdminURL(url: str) -> str:
    """
    Refuse an C{--admin} value that is not an http(s) URL before any
    request (urllib's own error is a traceback).

    @raise CommandError: with the exit code of an unusable admin URL (3).
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # a non-numeric port raises here
    except ValueError:
        usable = False
    if not usable:
        raise CommandError(f"--admin (or ${ADMIN_ENV}) must be the admin API's http(s) URL, "
                           f"e.g. {DEFAULT_ADMIN}, not {url!r}", EXIT_UNREACHABLE)
    return url.strip()


def _errorMessage(raw: bytes) -> Optional[str]:
    try:
        return json.loads(raw)["error"]["message"]
    except Exception:
        return None


def readToken(path: str) -> str:
    """
    The token to send from a token file: its first token (the server's
    token file format, C{NAME:TOKEN} lines, or a bare token).
    """
    try:
        with open(path, encoding="utf-8") as tokenFile:
            lines = tokenFile.read().splitlines()
    except OSError as error:
        raise CommandError(f"cannot read the token file {path}: {error.strerror}", EXIT_USAGE)
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            return line.rpartition(":")[2].strip()
    raise CommandError(f"the token file {path} holds no token", EXIT_USAGE)


# -- formatting -----------------------------------------------------------


def formatSize(count: Optional[float]) -> str:
    """
    A byte count for people: C{1.5 GiB}.
    """
    if count is None:
        return "unknown"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def formatDuration(seconds: float) -> str:
    """
    An uptime for people: C{2d 3h 4m}, C{5m 2s}.
    """
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s"


def formatTime(posix: Optional[float]) -> str:
    if posix is None:
        return "-"
    return datetime.datetime.fromtimestamp(posix, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ")


def parseTime(text: str) -> float:
    """
    Parse C{--since}/C{--until}: POSIX seconds, an ISO date or date-time
    (UTC unless it says otherwise), or a duration back from now such as
    C{30m}, C{12h}, C{7d}.
    """
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.datetime.now(datetime.timezone.utc).timestamp() - int(text[:-1]) * units[text[-1]]
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use 2026-11-21, 2026-11-21T10:00, 1763700000 or 7d)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def parseHead(text: str) -> tuple[int, str]:
    """
    Parse C{--head ID:HASH}.
    """
    rowId, sep, rowHash = text.partition(":")
    if not sep or not rowId.isdigit() or len(rowHash) != 64:
        raise argparse.ArgumentTypeError(f"not ID:HASH (e.g. 12:<64 hex digits>): {text!r}")
    return int(rowId), rowHash.lower()


def _table(rows: list[list[str]], out: TextIO) -> None:
    if not rows:
        return
    # Values come from devices and upstream: one cell stays one cell.
    rows = [[escapeControls(str(cell)) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def _check(check: dict[str, Any]) -> str:
    return f"{check.get('target')}: {'ok' if check.get('ok') else 'FAILED'} ({check.get('detail')})"


# -- verbs ------------------------------------------------------------------


def cmdStatus(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/status")
    healthy = bool(answer["upstream"]["ok"] and answer["database"]["ok"])
    if options.json:
        _dumpJSON(answer, out)
        return EXIT_OK if healthy else EXIT_PROBLEM
    devices = answer.get("devices") or {}
    cache = answer.get("cache")
    limit = devices.get("limit")
    lines = [
        f"Version: snapstore {answer['version']}",
        f"Uptime: {formatDuration(answer['uptime'])}",
        f"Store URL: {answer['store-url']}",
    ]
    if answer.get("offline"):
        lines.append("Mode: offline (upstream is never contacted)")
    lines += [
        f"Upstream: {_check(answer['upstream'])}",
        f"Database: {_check(answer['database'])}",
        f"Connected devices (last 24 h): {devices.get('connected', 'unknown')}",
        f"Device limit: {'none' if limit is None else limit}",
    ]
    if cache is None:
        lines.append("Cache: none")
    else:
        ratio = cache.get("hit-ratio")
        lines.append(
            f"Cache: {formatSize(cache.get('size'))} of {formatSize(cache.get('bound'))}, "
            f"{_plural(cache.get('blobs'), 'blob')}, hit ratio "
            f"{'n/a' if ratio is None else f'{ratio * 100:.0f}%'} since start")
    overrides = answer.get("overrides")
    lines.append(f"Overrides: {'unknown' if overrides is None else overrides}")
    lines.append(_rulesLine(answer))
    from snapstore.uplink.cli import statusLines

    lines += statusLines(answer)
    from snapstore.cluster.cli import nodeLines

    lines += nodeLines(answer.get("nodes"))
    out.write("\n".join(lines) + "\n")
    return EXIT_OK if healthy else EXIT_PROBLEM


def _rulesLine(status: dict[str, Any]) -> str:
    if "rules" not in status:
        return "Rules: unknown (an older service)"
    rules = status["rules"]
    if rules is None:
        return "Rules: NONE (no rules directory: no device limit, no pins)"
    shipped = " (shipped defaults)" if rules.get("shipped") else ""
    return f"Rules: {rules['directory']}{shipped}: {', '.join(rules['files']) or 'no files'}"


def cmdCheckConnections(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/check-connections")
    if options.json:
        _dumpJSON(answer, out)
    else:
        for check in answer["checks"]:
            out.write(f"{check['name']}: {_check(check)}\n")
        out.write("All connections appear to be accessible\n" if answer["ok"]
                  else "Some connections failed\n")
    return EXIT_OK if answer["ok"] else EXIT_PROBLEM


def cmdDeviceLimit(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    value = options.limit.strip().lower()
    if value == "reset":
        answer = client.call("DELETE", "/v1/device-limit")
        message = "device limit reset: the limit in rules.d/20-device-limit.py applies"
    else:
        limit = None if value == "none" else int(value)
        answer = client.call("PUT", "/v1/device-limit", body={"limit": limit})
        message = f"device limit set to {'none' if limit is None else limit} on every node"
    if options.json:
        _dumpJSON(answer, out)
    else:
        out.write(message + "\n")
    return EXIT_OK


def _limitArgument(text: str) -> str:
    if text.strip().lower() in ("none", "reset") or (text.strip().isdigit() and int(text) > 0):
        return text
    if text.strip().isdigit():
        raise argparse.ArgumentTypeError(
            "0 would refuse every new device; give 'none' for no limit, or a limit >= 1")
    raise argparse.ArgumentTypeError("give a whole number >= 1, 'none' (no limit) or 'reset'")


def _subjectName(text: str) -> str:
    from snapstore.tls import checkSubjectName

    try:
        return checkSubjectName(text.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def _cacheLine(cache: dict[str, Any]) -> str:
    ratio = cache.get("hit-ratio")
    return (f"{formatSize(cache.get('size'))} of {formatSize(cache.get('bound'))} in "
            f"{_plural(cache.get('blobs'), 'blob')} ({cache.get('filling') or 0} filling); hit ratio "
            f"{'n/a' if ratio is None else f'{ratio * 100:.0f}%'} since start")


def cmdCache(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    action = options.action or "stats"
    if action == "stats":
        answer = client.call("GET", "/v1/cache")
        if options.json:
            _dumpJSON(answer, out)
        else:
            out.write(f"Cache {answer.get('directory') or ''}: {_cacheLine(answer)}\n")
        return EXIT_OK
    if action == "prune":
        answer = client.call("POST", "/v1/cache/prune")
        if options.json:
            _dumpJSON(answer, out)
        else:
            result = answer.get("result") or {}
            out.write(f"Removed {_plural(result.get('removed', '?'), 'blob')}, "
                      f"freed {formatSize(result.get('freed'))}; "
                      f"cache now {_cacheLine(answer['cache'])}\n")
        return EXIT_OK
    answer = client.call("POST", "/v1/cache/verify")
    if options.json:
        _dumpJSON(answer, out)
    elif answer["ok"]:
        out.write("Every cached blob matches its sha3-384\n")
    else:
        out.write(f"Removed {_plural(len(answer['removed']), 'corrupt blob')}:\n")
        for digest in answer["removed"]:
            out.write(f"  {digest}\n")
    return EXIT_OK if answer["ok"] else EXIT_PROBLEM


def cmdAudit(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    if options.action == "verify":
        from snapstore.admin.auditcheck import checkRows, entryFromJSON

        # Recompute the chain here from the rows themselves, rather than
        # take the service's word for it; report a disagreement.
        rows = client.call("GET", "/v1/audit")["entries"]
        try:
            entries = [entryFromJSON(row) for row in rows]
        except (KeyError, TypeError) as error:
            raise CommandError(f"the admin API sent an audit row without {error}", EXIT_REFUSED)
        answer = checkRows(entries, options.head)
        server = client.call("GET", "/v1/audit/verify")
        answer["service-first-bad-id"] = server.get("first-bad-id")
        if options.json:
            _dumpJSON(answer, out)
        elif answer["ok"]:
            head = answer.get("head")
            out.write(f"Audit log intact: {_plural(answer['rows'], 'row')}"
                      + (f"; newest row {head['id']} has hash {head['row-hash']}" if head else "")
                      + "\n")
            if head:
                out.write(f"Record it, and check later that it is still there with: "
                          f"snapstore audit verify --head {head['id']}:{head['row-hash']}\n")
        else:
            out.write(f"Audit log BROKEN at row {answer['first-bad-id']}: "
                      f"{answer.get('reason', '')}\n")
        if server.get("first-bad-id") != answer["first-bad-id"] and options.head is None:
            out.write(f"The service's own check disagrees (it reports "
                      f"{server.get('first-bad-id') or 'no bad row'}): the service may be "
                      f"altered; trust this report\n")
            return EXIT_PROBLEM
        return EXIT_OK if answer["ok"] else EXIT_PROBLEM
    answer = client.call("GET", "/v1/audit", query={
        "snap": options.snap, "since": options.since, "until": options.until})
    if options.json:
        _dumpJSON(answer, out)
        return EXIT_OK
    entries = answer["entries"]
    if not entries:
        out.write("No audit entries\n")
        return EXIT_OK
    rows = [["Id", "Time", "Actor", "Action", "Target", "Change"]]
    for e in entries:
        rows.append([str(e["id"]), formatTime(e["time"]), e["actor"], e["action"], e["target"],
                     f"{_compact(e['before'])} -> {_compact(e['after'])}"])
    _table(rows, out)
    return EXIT_OK


def cmdClientConfig(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/client-config")
    if options.json:
        _dumpJSON(answer, out)
    elif options.cloud_init:
        out.write(answer["cloud-init"])
    elif options.forward:
        out.write(answer["forward-proxy-script"])
    else:
        out.write(answer["script"])
    return EXIT_OK


def cmdCertificate(client: Optional[AdminClient], options: argparse.Namespace, out: TextIO) -> int:
    from snapstore.tls import TLSConfigError, writeSelfSigned

    if not options.selfsigned:
        raise CommandError("only --selfsigned certificates can be made here; for a CA-signed "
                           "one, point --store-endpoint ssl:...:privateKey=KEY:certKey=CERT "
                           "at its files", EXIT_USAGE)
    createdDirectory = not os.path.isdir(options.out_dir)
    try:
        keyPath, certPath = writeSelfSigned(options.out_dir, options.domain,
                                            options.name or (), options.days, options.force)
    except (TLSConfigError, ValueError) as error:
        raise CommandError(str(error), EXIT_REFUSED)
    keyPath, certPath = os.path.abspath(keyPath), os.path.abspath(certPath)
    endpoint = f"ssl:8443:privateKey={_escape(keyPath)}:certKey={_escape(certPath)}"
    if options.json:
        _dumpJSON({"private-key": keyPath, "certificate": certPath, "store-endpoint": endpoint,
                   "created-directory": createdDirectory}, out)
        return EXIT_OK
    if createdDirectory:
        out.write(f"Created the directory {os.path.dirname(keyPath)} (--out-dir).\n")
    out.write(f"Wrote {keyPath} (private key, mode 0600) and {certPath}.\n"
              f"Serve HTTPS with:\n  --store-endpoint {endpoint}\n"
              f"Devices must trust {certPath}: 'snapstore client-config' prints the setup.\n")
    return EXIT_OK


def _plural(count: Any, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _compact(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _dumpJSON(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


# -- the parser ---------------------------------------------------------------


def makeParser() -> argparse.ArgumentParser:
    """
    The command line: global options, then one verb (argparse
    subcommands, so that later verbs such as C{export} and C{import} slot
    in).
    """
    jsonParent = argparse.ArgumentParser(add_help=False)
    jsonParent.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="print the API's JSON answer, for scripts")
    parser = argparse.ArgumentParser(
        prog="snapstore",
        description="Administer a running snapstore through its admin API.",
        epilog="Exit codes: 0 ok; 1 a check failed; 2 usage; 3 admin API unreachable; "
               "4 token refused; 5 request refused. Run the service with "
               "'twistd -n snapstore'.",
        parents=[jsonParent],
    )
    parser.add_argument("--admin", metavar="URL", default=os.environ.get(ADMIN_ENV, DEFAULT_ADMIN),
                        help=f"admin API URL [default: ${ADMIN_ENV} or {DEFAULT_ADMIN}]")
    parser.add_argument("--token-file", metavar="FILE", default=os.environ.get(TOKEN_FILE_ENV),
                        help=f"file holding the admin token [default: ${TOKEN_FILE_ENV}; "
                             f"or the token itself in ${TOKEN_ENV}]")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=120.0,
                        help="seconds to wait for an answer [default: 120]")
    parser.add_argument("--version", action="version", version=f"snapstore {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    def verb(name: str, handler: Any, helpText: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=helpText, description=helpText, parents=[jsonParent])
        sub.set_defaults(handler=handler)
        return sub

    verb("status", cmdStatus, "version, uptime, health, devices, cache, overrides")
    verb("check-connections", cmdCheckConnections, "check that upstream and the database answer")
    # Change control: override, list-overrides, delete-override, hold,
    # holds, release-hold, approve (snapstore.policycli).
    from snapstore.policycli import addVerbs as addPolicyVerbs

    addPolicyVerbs(verb)
    sub = verb("device-limit", cmdDeviceLimit,
               "set how many devices may use the proxy (all nodes): N, none, or reset "
               "to the rules.d value")
    sub.add_argument("limit", type=_limitArgument, metavar="N|none|reset")
    sub = verb("cache", cmdCache, "blob cache statistics; prune empties it, verify re-hashes it")
    sub.add_argument("action", nargs="?", choices=("stats", "prune", "verify"), default="stats")
    sub = verb("audit", cmdAudit, "list admin changes; 'audit verify' checks the hash chain")
    sub.add_argument("action", nargs="?", choices=("list", "verify"), default="list")
    sub.add_argument("--snap", help="only changes to this snap")
    sub.add_argument("--since", type=parseTime, help="from this time (date, POSIX or 7d)")
    sub.add_argument("--until", type=parseTime, help="before this time")
    sub.add_argument("--head", type=parseHead, metavar="ID:HASH",
                     help="with verify: a row id and hash recorded earlier (as verify prints "
                          "them) that must still be there; detects removed newest rows")
    sub = verb("client-config", cmdClientConfig,
               "print the setup a device needs (shell script by default)")
    form = sub.add_mutually_exclusive_group()
    form.add_argument("--cloud-init", action="store_true", help="a #cloud-config snippet")
    form.add_argument("--forward", action="store_true", help="forward-proxy mode setup")
    sub = verb("certificate", cmdCertificate,
               "make a key and self-signed certificate for an ssl: store endpoint")
    sub.add_argument("--selfsigned", action="store_true", required=True)
    sub.add_argument("--domain", required=True, type=_subjectName,
                     help="host name devices use (also an IP)")
    sub.add_argument("--name", action="append", metavar="NAME", type=_subjectName,
                     help="another host name or IP address for the subjectAltName (repeatable)")
    sub.add_argument("--out-dir", default=".",
                     help="where to write NAME.key and NAME.crt (created, and said so, "
                          "when missing)")
    sub.add_argument("--days", type=int, default=825, help="validity [default: 825]")
    sub.add_argument("--force", action="store_true", help="replace existing files")
    sub.set_defaults(local=True)
    # Air-gapped sites: export, import, list-imported (snapstore.offline).
    from snapstore.offline.cli import addVerbs

    addVerbs(verb)
    # Follows and prefetch (snapstore.uplink).
    from snapstore.uplink.cli import addVerbs as addUplinkVerbs

    addUplinkVerbs(verb)
    # Several nodes, one cache: the nodes verb (snapstore.cluster).
    from snapstore.cluster.cli import addVerbs as addNodeVerbs

    addNodeVerbs(verb)
    # Who runs what: devices, device, inventory, group, what-would-refresh,
    # deliveries (snapstore.fleetcli).
    from snapstore.fleetcli import addVerbs as addFleetVerbs

    addFleetVerbs(verb)
    return parser


class _EscapingOutput:
    """
    Writes to C{output} with control characters other than newline and tab
    escaped (see L{escapeControls}).
    """

    def __init__(self, output: TextIO) -> None:
        self.output = output

    def write(self, text: str) -> int:
        return self.output.write(escapeControls(text, keepLines=True))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.output, name)


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None,
         err: Optional[TextIO] = None) -> int:
    """
    Run the command.

    @param argv: the arguments (without the program name); C{sys.argv[1:]}
        when C{None}.
    @return: the exit code (the console script exits with it).
    """
    # Nothing the admin API relays (a device's serial, a snap's name) may
    # move the terminal's cursor or forge a line.
    out = _EscapingOutput(out if out is not None else sys.stdout)
    err = err if err is not None else sys.stderr
    parser = makeParser()
    try:
        options = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit:
        return int(exit.code or 0)
    if not hasattr(options, "json"):
        options.json = False
    try:
        client = None if getattr(options, "local", False) else adminClient(options)
        return options.handler(client, options, out)
    except CommandError as error:
        err.write(f"snapstore: {error.message}\n")
        return error.exitCode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
