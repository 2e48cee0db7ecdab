# -*- test-case-name: tests.test_cli -*-
"""
The C{snapstore audit} verb: list admin changes, verify the hash chain
(recomputed here from the rows, not taken from the service).
"""

from __future__ import annotations

import argparse
from typing import TextIO

from snapstore.cli.client import AdminClient, CommandError, EXIT_OK, EXIT_PROBLEM, EXIT_REFUSED
from snapstore.state.auditcheck import checkRows, entryFromJSON
from snapstore.cli.format import compact, dumpJSON, formatTime, plural, printListing


def cmdAudit(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    if options.action == "verify":
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
            dumpJSON(answer, out)
        elif answer["ok"]:
            head = answer.get("head")
            out.write(f"Audit log intact: {plural(answer['rows'], 'row')}"
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
    printListing(answer, "entries", options.json, "No audit entries",
                 ["Id", "Time", "Actor", "Action", "Target", "Change"],
                 lambda e: [str(e["id"]), formatTime(e["time"]), e["actor"], e["action"], e["target"],
                            f"{compact(e['before'])} -> {compact(e['after'])}"], out)
    return EXIT_OK
