# -*- test-case-name: tests.test_cli -*-
"""
The C{snapstore} verbs about pins: C{override}, C{list-overrides},
C{delete-override}.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, TextIO

from snapstore.cli.client import AdminClient, CommandError, EXIT_OK, EXIT_USAGE
from snapstore.cli.fleet import dryRunOverride
from snapstore.cli.format import dumpJSON, formatTime, quote, table


def cmdOverride(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    channelMap = []
    for item in options.pins:
        channel, sep, revision = item.partition("=")
        if not sep or not channel or not revision.isdigit() or int(revision) < 1:
            raise CommandError(f"not CHANNEL=REVISION: {item!r} (e.g. stable=123)", EXIT_USAGE)
        channelMap.append({"channel": channel, "revision": int(revision)})
    if getattr(options, "dry_run", False):
        return dryRunOverride(client, options, channelMap, out)
    answer = client.call("POST", f"/v1/overrides/{quote(options.snap)}",
                         {"channel-map": channelMap})
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    for item in answer["set"]:
        new, old = item["override"], item["previous"]
        was = f" (was {old['revision']})" if old else ""
        out.write(f"{new['snap']} {new['channel']} ({new['architecture']}): "
                  f"revision {new['revision']}{was}\n")
    return EXIT_OK


def cmdListOverrides(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    path = "/v1/overrides" + (f"/{quote(options.snap)}" if options.snap else "")
    answer = client.call("GET", path)
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    overrides = answer["overrides"]
    if not overrides:
        out.write(f"{options.snap or 'No snap'} has no overrides\n"
                  if options.snap else "No overrides\n")
        return EXIT_OK
    rows = [["Snap", "Channel", "Architecture", "Revision", "Since"]]
    for o in overrides:
        rows.append([o["snap"], o["channel"], o["architecture"], str(o["revision"]),
                     formatTime(o.get("created-at"))])
    table(rows, out)
    return EXIT_OK


def cmdDeleteOverride(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("DELETE", f"/v1/overrides/{quote(options.snap)}",
                         query={"channel": options.channels})
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    for o in answer["deleted"]:
        out.write(f"{o['snap']} {o['channel']} ({o['architecture']}): override of "
                  f"revision {o['revision']} deleted\n")
    return EXIT_OK
