# -*- test-case-name: tests.test_policy -*-
"""
The C{snapstore} command's change-control verbs (design.md section 9):
C{override}, C{list-overrides}, C{delete-override} (with C{--group},
C{--until}, C{--reason}), C{hold}, C{holds}, C{release-hold} and
C{approve}, registered by L{addVerbs} from L{snapstore.cli.makeParser}.

TIME and DURATION arguments are checked here for a quick usage error and
sent as written: the admin API reads them against the server's clock.
C{--dry-run} prints the what-would-refresh report of the state the change
would produce (L{snapstore.cli.fleet.printChanges}); nothing changes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Optional, TextIO

from snapstore.cli.client import EXIT_OK, EXIT_USAGE, CommandError
from snapstore.cli.fleet import printChanges
from snapstore.cli.format import dumpJSON, formatDuration, printListing, quote, table
from snapstore.policy.timespec import TimeSpecError, parseDuration, parseTime


def _timeArgument(text: str) -> str:
    try:
        parseTime(text, time.time())
    except TimeSpecError as error:
        raise argparse.ArgumentTypeError(str(error))
    return text


def _durationArgument(text: str) -> str:
    try:
        parseDuration(text)
    except TimeSpecError as error:
        raise argparse.ArgumentTypeError(str(error))
    return text


def _change(client: Any, options: argparse.Namespace, out: TextIO,
            describe: Callable[[Any], str], method: str, path: str, body: Any = None,
            query: Optional[dict[str, Any]] = None) -> int:
    """
    Make one change through the admin API and print its answer: as JSON
    with C{--json}, else in the verb's words (C{describe(answer)}).  With
    C{--dry-run} nothing changes: the API answers which devices' refresh
    the change would alter, and that is printed instead.
    """
    dryRun = getattr(options, "dry_run", False)
    if dryRun:
        query = {**(query or {}), "dry-run": "1"}
    answer = client.call(method, path, body, query=query)
    if dryRun:
        if not options.json:
            out.write("Dry run: nothing changed. With this change, a refresh would change:\n")
        return int(printChanges(answer, options, out))
    if options.json:
        dumpJSON(answer, out)
    else:
        out.write(describe(answer))
    return EXIT_OK


def _scope(group: Optional[str]) -> str:
    return f"group {group}" if group else "everyone"


def _pinned(pin: dict[str, Any]) -> str:
    """
    C{hello latest/stable (amd64)}, or C{(amd64, group canary)} for a
    group's pin.
    """
    group = f", group {pin['group']}" if pin.get("group") else ""
    return f"{pin['snap']} {pin['channel']} ({pin['architecture']}{group})"


def cmdOverride(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    channelMap = []
    for item in options.pins:
        channel, sep, revision = item.partition("=")
        if not sep or not channel or not revision.isdigit() or int(revision) < 1:
            raise CommandError(f"not CHANNEL=REVISION: {item!r} (e.g. stable=123)",
                                   EXIT_USAGE)
        channelMap.append({"channel": channel, "revision": int(revision)})
    body: dict[str, Any] = {"channel-map": channelMap}
    for key, value in (("group", options.group), ("until", options.until),
                       ("reason", options.reason)):
        if value is not None:
            body[key] = value

    def describe(answer: Any) -> str:
        lines = []
        for item in answer["set"]:
            new, old = item["override"], item["previous"]
            was = f" (was {old['revision']})" if old else ""
            until = f" until {new['until']}" if new.get("until") else ""
            lines.append(f"{_pinned(new)}: revision {new['revision']}{was}{until}\n")
        return "".join(lines)

    return _change(client, options, out, describe,
                   "POST", f"/v1/overrides/{quote(options.snap)}", body)


def cmdListOverrides(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    path = "/v1/overrides" + (f"/{quote(options.snap)}" if options.snap else "")
    answer = client.call("GET", path)
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    overrides = answer["overrides"]
    if not overrides:
        out.write(f"{options.snap} has no overrides\n" if options.snap else "No overrides\n")
        return EXIT_OK
    rows = [["Snap", "Channel", "Architecture", "Revision", "Scope", "Until", "Reason"]]
    for o in overrides:
        until = o.get("until") or "-"
        if o.get("expired"):
            until += " (expired)"
        rows.append([o["snap"], o["channel"], o["architecture"], str(o["revision"]),
                     _scope(o.get("group")), until, o.get("reason") or ""])
    table(rows, out)
    return EXIT_OK


def cmdDeleteOverride(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("DELETE", f"/v1/overrides/{quote(options.snap)}",
                         query={"channel": options.channels, "group": options.group})
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    for o in answer["deleted"]:
        out.write(f"{_pinned(o)}: override of revision {o['revision']} deleted\n")
    return EXIT_OK


def _holdKey(options: argparse.Namespace) -> Any:
    if bool(options.all) == bool(options.snap):
        raise CommandError("give a SNAP or --all", EXIT_USAGE)
    return options.snap or None


def _holdLine(hold: dict[str, Any]) -> list[str]:
    length = "until approved" if hold["until-approved"] else \
        formatDuration(hold["for"])
    return [hold["snap"] or "(all)", hold["channel"] or "(every)",
            _scope(hold.get("group")), length, hold.get("reason") or ""]


def cmdHold(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    snap = _holdKey(options)
    if bool(options.until_approved) == bool(options.duration):
        raise CommandError("give --for DURATION or --until-approved", EXIT_USAGE)
    body: dict[str, Any] = {"snap": snap, "channel": options.channel, "group": options.group,
                            "reason": options.reason}
    if options.until_approved:
        body["until-approved"] = True
    else:
        body["for"] = options.duration

    def describe(answer: Any) -> str:
        line = _holdLine(answer["hold"])
        return f"hold set: {line[0]} on {line[1]} channel(s) for {line[2]}: {line[3]}\n"

    return _change(client, options, out, describe, "POST", "/v1/holds", body)


def cmdHolds(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    printListing(client.call("GET", "/v1/holds"), "holds", options.json, "No holds",
                 ["Snap", "Channel", "Scope", "Hold", "Reason"], _holdLine, out)
    return EXIT_OK


def cmdReleaseHold(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    snap = _holdKey(options)

    def describe(answer: Any) -> str:
        line = _holdLine(answer["released"])
        return f"hold released: {line[0]} on {line[1]} channel(s) for {line[2]}\n"

    return _change(client, options, out, describe, "DELETE", "/v1/holds", query={
        "snap": snap, "channel": options.channel, "group": options.group})


def cmdApprove(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    body = {"snap": options.snap, "revision": options.revision, "group": options.group,
            "reason": options.reason}

    def describe(answer: Any) -> str:
        approved = answer["approved"]
        return (f"{approved['snap']} revision {approved['revision']} approved for "
                f"{_scope(approved.get('group'))}\n")

    return _change(client, options, out, describe, "POST", "/v1/approvals", body)


def _revisionArgument(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a revision is a whole number >= 1")
    return int(text)


def addVerbs(verb: Any) -> None:
    """
    Add the verbs with the parser's C{verb(name, handler, help)} helper.
    """
    def common(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("--group", metavar="G",
                         help=f"only for the devices of group G (default: every device); "
                              f"a group's {what} comes before the global one")
        sub.add_argument("--reason", metavar="TEXT", help="why (kept in the audit log)")
        sub.add_argument("--dry-run", action="store_true",
                         help="change nothing: print what a refresh would change")

    sub = verb("override", cmdOverride, "pin a snap's channels to revisions")
    sub.add_argument("snap")
    sub.add_argument("pins", nargs="+", metavar="CHANNEL=REVISION")
    sub.add_argument("--until", metavar="TIME", type=_timeArgument,
                     help="stop applying at TIME: RFC 3339 (2027-07-01T00:00:00Z) or a "
                          "duration from now (90s, 12h, 30d)")
    common(sub, "pin")
    sub = verb("list-overrides", cmdListOverrides,
               "list a snap's overrides (all when no SNAP), with scope, until and reason")
    sub.add_argument("snap", nargs="?")
    sub = verb("delete-override", cmdDeleteOverride, "delete a snap's override on channels")
    sub.add_argument("snap")
    sub.add_argument("channels", nargs="+", metavar="CHANNEL")
    sub.add_argument("--group", metavar="G", help="the pin of group G (default: the global one)")

    sub = verb("hold", cmdHold,
               "hold new revisions back from devices: for a cool-down DURATION from when "
               "snapstore first saw them on the channel, or until approved")
    sub.add_argument("snap", nargs="?", metavar="SNAP")
    sub.add_argument("--all", action="store_true", help="every snap")
    sub.add_argument("--channel", metavar="C", help="only this channel (default: every one)")
    length = sub.add_mutually_exclusive_group()
    length.add_argument("--for", dest="duration", metavar="DURATION", type=_durationArgument,
                        help="cool-down: 90s, 12h, 30d")
    length.add_argument("--until-approved", action="store_true",
                        help="nothing new until 'snapstore approve SNAP REVISION'")
    common(sub, "hold")
    sub = verb("holds", cmdHolds, "list holds")
    sub = verb("release-hold", cmdReleaseHold, "remove a hold (as given to hold)")
    sub.add_argument("snap", nargs="?", metavar="SNAP")
    sub.add_argument("--all", action="store_true", help="the hold made with --all")
    sub.add_argument("--channel", metavar="C", help="the hold of this channel")
    sub.add_argument("--group", metavar="G", help="the hold of group G")
    sub.add_argument("--dry-run", action="store_true",
                     help="change nothing: print what a refresh would change")
    sub = verb("approve", cmdApprove,
               "let REVISION of SNAP through holds (approval and cool-down)")
    sub.add_argument("snap", metavar="SNAP")
    sub.add_argument("revision", metavar="REVISION", type=_revisionArgument)
    common(sub, "approval")
