# -*- test-case-name: tests.test_cli -*-
"""
The C{snapstore} command: administer a running snapstore through its admin
API.

It speaks HTTP to the admin endpoint only and never opens the database, so
it works the same against SQLite and PostgreSQL, locally or (with a token)
from another machine.  It is short-lived and synchronous: plain C{urllib},
no reactor.  (C{snapstore certificate} is the exception that needs no
service: it writes files locally.)

Every verb talks through the one L{snapstore.cli.client.AdminClient},
which turns refusals into a L{CommandError} with the exit code scripts
see (listed in L{snapstore.cli.client}); each group of verbs is a module
of this package, and this one builds the parser and runs a verb.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence, TextIO

from snapstore import __version__
from snapstore.cli.audit import cmdAudit
from snapstore.cli.cache import cmdCache
from snapstore.cli.certificate import cmdCertificate, subjectName
from snapstore.cli.cluster import addVerbs as addNodeVerbs
from snapstore.cli.client import (
    ADMIN_ENV,
    DEFAULT_ADMIN,
    EXIT_AUTH,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    AdminClient,
    CommandError,
    adminClient,
    checkAdminURL,
    readToken,
)
from snapstore.cli.devices import cmdDeviceLimit, limitArgument
from snapstore.cli.fleet import addVerbs as addFleetVerbs
from snapstore.cli.format import (
    EscapingOutput,
    formatDuration,
    formatSize,
    formatTime,
    parseHead,
    parseTime,
)
from snapstore.cli.offline import addVerbs
from snapstore.cli.policy import addVerbs as addPolicyVerbs
from snapstore.cli.status import cmdCheckConnections, cmdClientConfig, cmdStatus
from snapstore.cli.uplink import addVerbs as addUplinkVerbs


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
    # holds, release-hold, approve (snapstore.policy).
    addPolicyVerbs(verb)
    sub = verb("device-limit", cmdDeviceLimit,
               "set how many devices may use the proxy (all nodes): N, none, or reset "
               "to the rules.d value")
    sub.add_argument("limit", type=limitArgument, metavar="N|none|reset")
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
    sub.add_argument("--domain", required=True, type=subjectName,
                     help="host name devices use (also an IP)")
    sub.add_argument("--name", action="append", metavar="NAME", type=subjectName,
                     help="another host name or IP address for the subjectAltName (repeatable)")
    sub.add_argument("--out-dir", default=".",
                     help="where to write NAME.key and NAME.crt (created, and said so, "
                          "when missing)")
    sub.add_argument("--days", type=int, default=825, help="validity [default: 825]")
    sub.add_argument("--force", action="store_true", help="replace existing files")
    sub.set_defaults(local=True)
    # Air-gapped sites: export, import, list-imported (snapstore.offline).
    addVerbs(verb)
    # Follows and prefetch (snapstore.uplink).
    addUplinkVerbs(verb)
    # Several nodes, one cache: the nodes verb (snapstore.cluster).
    addNodeVerbs(verb)
    # Who runs what: devices, device, inventory, group, what-would-refresh,
    # deliveries (snapstore.fleet).
    addFleetVerbs(verb)
    return parser


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
    escaped: Any = EscapingOutput(out if out is not None else sys.stdout)
    out = escaped
    err = err if err is not None else sys.stderr
    parser = makeParser()
    try:
        options = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit:
        return int(exit.code or 0)
    # --json may come before or after the verb (argparse.SUPPRESS keeps
    # either from hiding the other); verbs needing no service set local.
    options.json = vars(options).get("json", False)
    options.local = vars(options).get("local", False)
    try:
        client = None if options.local else adminClient(options)
        return options.handler(client, options, out)
    except CommandError as error:
        err.write(f"snapstore: {error.message}\n")
        return error.exitCode
    except KeyboardInterrupt:
        return 130



__all__ = ["main", "makeParser", "AdminClient", "CommandError", "readToken",
           "formatDuration", "formatSize", "formatTime", "parseTime", "parseHead",
           "EXIT_OK", "EXIT_PROBLEM", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_AUTH",
           "EXIT_REFUSED"]
