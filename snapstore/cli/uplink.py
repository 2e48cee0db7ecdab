# -*- test-case-name: tests.test_uplink -*-
"""
The C{snapstore} verbs of the uplink: C{follow}, C{unfollow},
C{following}, and the uplink lines of C{status}.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO
from snapstore.cli.client import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, CommandError
from snapstore.cli.format import dumpJSON, formatTime, table



def addVerbs(verb: Any) -> None:
    """
    Add the uplink verbs to the C{snapstore} parser (C{verb} is
    L{snapstore.cli.makeParser}'s helper).
    """
    sub = verb("follow", cmdFollow,
               "prefetch new revisions of a snap's channels (or, with --fleet, of every "
               "snap, channel and architecture devices report) into the cache")
    sub.add_argument("snap", nargs="?", metavar="SNAP[=CHANNEL[,CHANNEL...]]",
                     help="the snap and its channels [default channel: stable]")
    sub.add_argument("--arch", action="append", metavar="ARCH",
                     help="an architecture to prefetch for (repeatable) [default: amd64; "
                          "with --fleet: those devices report]")
    sub.add_argument("--with-deps", action="store_true",
                     help="also prefetch each revision's base snap (latest/stable)")
    sub.add_argument("--fleet", action="store_true",
                     help="follow every snap, channel and architecture devices report")
    sub.add_argument("--now", action="store_true",
                     help="run one follow round at once (window or not) and wait until its "
                          "downloads are done; with no SNAP, only that")
    sub = verb("unfollow", cmdUnfollow, "stop following a snap (--fleet: the fleet follow)")
    sub.add_argument("snap", nargs="?")
    sub.add_argument("--fleet", action="store_true")
    verb("following", cmdFollowing, "list followed snaps, channels and architectures")


def parseFollow(text: str) -> tuple[str, list[str]]:
    """
    C{hello=stable,edge} -> C{("hello", ["stable", "edge"])}.
    """
    name, _, channels = text.partition("=")
    return name.strip(), [c.strip() for c in channels.split(",") if c.strip()]


def cmdFollow(client: Any, options: argparse.Namespace, out: TextIO) -> int:

    if options.fleet and options.snap:
        raise CommandError("give either SNAP or --fleet, not both", EXIT_USAGE)
    if not options.fleet and not options.snap and not options.now:
        raise CommandError("follow what? give SNAP[=CHANNEL,...], --fleet or --now", EXIT_USAGE)
    if options.fleet or options.snap:
        body: dict[str, Any] = {"architectures": options.arch or [],
                                "with-deps": options.with_deps}
        if options.fleet:
            body["fleet"] = True
        else:
            body["snap"], body["channels"] = parseFollow(options.snap)
        answer = client.call("POST", "/v1/follows", body)
        if not options.now:
            if options.json:
                dumpJSON(answer, out)
            else:
                _listFollows(answer["follows"], out)
            return EXIT_OK
    summary = client.call("POST", "/v1/follows/run")
    if options.json:
        dumpJSON(summary, out)
    else:
        for label in ("fetched", "cached", "failed"):
            for entry in summary.get(label, []):
                what = f"{entry['snap']} {entry['channel']} {entry['architecture']}"
                if "revision" in entry:
                    what += f" r{entry['revision']}"
                if "delta-from" in entry:
                    what += f" (delta from r{entry['delta-from']})"
                if label == "failed":
                    what += f": {entry.get('error', '')}"
                out.write(f"{label}: {what}\n")
        out.write(f"{len(summary.get('fetched', []))} fetched, "
                  f"{len(summary.get('cached', []))} already cached, "
                  f"{len(summary.get('failed', []))} failed\n")
    return EXIT_PROBLEM if summary.get("failed") else EXIT_OK


def cmdUnfollow(client: Any, options: argparse.Namespace, out: TextIO) -> int:

    if bool(options.fleet) == bool(options.snap):
        raise CommandError("give either SNAP or --fleet", EXIT_USAGE)
    answer = client.call("DELETE", "/v1/follows/" + ("*" if options.fleet else options.snap))
    if options.json:
        dumpJSON(answer, out)
    else:
        _listFollows(answer["follows"], out)
    return EXIT_OK


def cmdFollowing(client: Any, options: argparse.Namespace, out: TextIO) -> int:

    answer = client.call("GET", "/v1/follows")
    if options.json:
        dumpJSON(answer, out)
    else:
        _listFollows(answer["follows"], out)
    return EXIT_OK


def _listFollows(follows: list[dict[str, Any]], out: TextIO) -> None:

    if not follows:
        out.write("Nothing is followed.\n")
        return
    rows = [["Snap", "Channels", "Architectures", "Deps"]]
    for follow in follows:
        rows.append(["(fleet)" if follow.get("fleet") else follow["snap"],
                     ",".join(follow["channels"]) or "(reported)",
                     ",".join(follow["architectures"]) or "(reported)",
                     "yes" if follow.get("with-deps") else "no"])
    table(rows, out)


def statusLines(answer: dict[str, Any]) -> list[str]:
    """
    The uplink lines of C{snapstore status}.
    """

    uplink = answer.get("uplink")
    if not uplink:
        return []
    if uplink.get("failing-since") is None and uplink.get("last-answer") is None:
        # Nothing relayed yet: say so rather than claim upstream answers
        # (the probe line above tells whether it can be reached now).
        lines = ["Uplink: no upstream answer relayed yet"]
    elif uplink.get("failing-since") is None:
        lines = [f"Uplink: upstream answers (last answer {formatTime(uplink['last-answer'])})"]
    elif uplink.get("serving-stale"):
        lines = [f"Uplink: upstream failing since {formatTime(uplink['failing-since'])} "
                 f"({uplink.get('last-error')}); serving stale answers"]
    else:
        lines = [f"Uplink: upstream failing since {formatTime(uplink['failing-since'])} "
                 f"({uplink.get('last-error')}); stale answers are off"]
    lines.append(f"Stale answers given: {uplink.get('stale-answers', 0)}")
    lines.append(f"Followed snaps: {uplink.get('follows', 0)}")
    return lines
