# -*- test-case-name: tests.test_fleet -*-
"""
The C{snapstore} command's fleet verbs (docs/architecture.md): C{devices},
C{device}, C{inventory}, C{group}, C{what-would-refresh} and
C{deliveries}, registered by L{addVerbs} from L{snapstore.cli.makeParser};
and the report C{--dry-run} prints (L{printChanges}).

Like every verb they speak to the admin API only; C{--json} prints the
API's document exactly.
"""

from __future__ import annotations

import argparse
import csv
import json
from typing import Any, TextIO

from snapstore.cli.client import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, CommandError
from snapstore.cli.format import dumpJSON, parseTime, plural, printListing, quote, table


def addVerbs(verb: Any) -> None:
    """
    Add the verbs with the parser's C{verb(name, handler, help)} helper.
    """
    sub = verb("devices", cmdDevices,
               "list devices (seen in the last 24 hours) with their snaps and groups")
    sub.add_argument("--all", action="store_true", help="every device ever seen")
    sub.add_argument("--group", metavar="G", help="only members of device group G")
    sub.add_argument("--snap", metavar="NAME", help="only devices that have snap NAME")
    sub = verb("device", cmdDevice, "show one device: model, address, architecture, "
                                    "groups and installed snaps")
    sub.add_argument("identity", metavar="IDENTITY",
                     help="brand/model/serial, or address:IP for devices without a serial")
    sub = verb("inventory", cmdInventory,
               "who runs what: per snap, devices per revision, channel and architecture")
    sub.add_argument("snap", nargs="?", metavar="SNAP")
    sub = verb("group", cmdGroup, "device groups: create, list, show, delete")
    sub.add_argument("action", choices=("create", "list", "show", "delete"))
    sub.add_argument("name", nargs="?", metavar="NAME")
    sub.add_argument("--serial", action="append", default=[], metavar="S",
                     help="members: devices with this serial (repeatable)")
    sub.add_argument("--model", action="append", default=[], metavar="BRAND/MODEL",
                     help="members: devices of this model (repeatable)")
    sub.add_argument("--network", action="append", default=[], metavar="CIDR",
                     help="members: devices last seen at an address in CIDR (repeatable)")
    sub.add_argument("--device", action="append", default=[], metavar="IDENTITY",
                     help="members: this device (repeatable)")
    sub = verb("what-would-refresh", cmdWhatWouldRefresh,
               "what a refresh through snapstore would change now, per device and snap")
    sub.add_argument("--snap", metavar="NAME", help="only this snap")
    sub.add_argument("--group", metavar="G", help="only members of device group G")
    sub = verb("deliveries", cmdDeliveries,
               "the delivery record: which device got which snap bytes; 'deliveries verify' "
               "checks its hash chain")
    sub.add_argument("action", nargs="?", choices=("list", "verify"), default="list")
    sub.add_argument("--device", metavar="ID", help="only deliveries to this device")
    sub.add_argument("--snap", metavar="NAME", help="only deliveries of this snap")
    sub.add_argument("--since", metavar="TIME", type=parseTime,
                     help="from this time (RFC 3339, date, POSIX, or a duration back such as 7d)")
    sub.add_argument("--csv", action="store_true", help="print CSV")


def cmdDevices(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/devices", query={
        "all": "1" if options.all else None, "group": options.group, "snap": options.snap})
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    limit = answer.get("limit")
    out.write(f"Connected devices (last 24 h): {answer.get('connected')}; "
              f"device limit: {'none' if limit is None else limit}\n")
    if answer["devices"]:
        rows = [["Device", "Model", "Address", "Arch", "Groups", "Snaps", "Last seen"]]
        for d in answer["devices"]:
            rows.append([d["identity"], d["model"] or "-", d["address"] or "-",
                         d["architecture"] or "-", ",".join(d["groups"]) or "-",
                         str(len(d["snaps"])), d["last-seen"] or "-"])
        table(rows, out)
    return EXIT_OK


def cmdDevice(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    d = client.call("GET", f"/v1/devices/{quote(options.identity)}")
    if options.json:
        dumpJSON(d, out)
        return EXIT_OK
    out.write(f"Device:       {d['identity']}\nModel:        {d['model'] or '-'}\n"
              f"Address:      {d['address'] or '-'}\nArchitecture: {d['architecture'] or '-'}\n"
              f"Groups:       {', '.join(d['groups']) or '-'}\n"
              f"First seen:   {d['first-seen']}\nLast seen:    {d['last-seen']}\n")
    if d["snaps"]:
        rows = [["Snap", "Snap-id", "Revision", "Channel"]]
        for s in d["snaps"]:
            rows.append([s["name"] or "?", s["snap-id"], str(s["revision"]), s["channel"] or "-"])
        table(rows, out)
    else:
        out.write("No snaps reported yet (the device has not refreshed through snapstore)\n")
    return EXIT_OK


def cmdInventory(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/inventory", query={"snap": options.snap})
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    if not answer["snaps"]:
        out.write("No devices have reported " + (options.snap if options.snap else "snaps")
                  + "\n")
        return EXIT_OK
    rows = [["Snap", "Revision", "Channel", "Arch", "Devices"]]
    for snap in answer["snaps"]:
        for r in snap["revisions"]:
            rows.append([snap["name"] or snap["snap-id"], str(r["revision"]),
                         r["channel"] or "-", r["architecture"] or "-", str(r["devices"])])
    table(rows, out)
    return EXIT_OK


def cmdGroup(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    if options.action != "list" and not options.name:
        raise CommandError(f"group {options.action} needs a NAME", EXIT_USAGE)
    if options.action == "create":
        selectors = {"serial": options.serial, "model": options.model,
                     "network": options.network, "device": options.device}
        if not any(selectors.values()):
            raise CommandError("group create needs at least one selector: --serial, "
                                   "--model, --network or --device", EXIT_USAGE)
        answer = client.call("PUT", f"/v1/groups/{quote(options.name)}",
                             {"selectors": selectors})
        if options.json:
            dumpJSON(answer, out)
        else:
            verb = "replaced" if answer.get("previous") else "created"
            out.write(f"Group {options.name} {verb}\n")
        return EXIT_OK
    if options.action == "delete":
        answer = client.call("DELETE", f"/v1/groups/{quote(options.name)}")
        if options.json:
            dumpJSON(answer, out)
        else:
            out.write(f"Group {options.name} deleted\n")
        return EXIT_OK
    if options.action == "show":
        answer = client.call("GET", f"/v1/groups/{quote(options.name)}")
        if options.json:
            dumpJSON(answer, out)
            return EXIT_OK
        out.write(f"Group {answer['name']}: {_selectorText(answer['selectors'])}\n"
                  f"{plural(answer['devices'], 'member')}\n")
        for identity in answer["members"]:
            out.write(f"  {identity}\n")
        return EXIT_OK
    printListing(client.call("GET", "/v1/groups"), "groups", options.json, "No device groups",
                 ["Group", "Selectors", "Devices"],
                 lambda g: [g["name"], _selectorText(g["selectors"]), str(g["devices"])], out)
    return EXIT_OK


def _selectorText(selectors: dict[str, list[str]]) -> str:
    return " ".join(f"--{kind} {value}" for kind in ("serial", "model", "network", "device")
                    for value in selectors.get(kind, ()))


def printChanges(answer: dict[str, Any], options: argparse.Namespace, out: TextIO) -> int:
    """
    Print a what-would-refresh document (also the C{--dry-run} report).
    """
    if printListing(answer, "changes", options.json, "No device would change revision",
                    ["Device", "Snap", "Channel", "From", "To"],
                    lambda c: [c["device"], c["snap"], c["channel"], str(c["from"]), str(c["to"])],
                    out):
        changes = answer["changes"]
        out.write(f"{plural(len(changes), 'change')} on "
                  f"{plural(len({c['device'] for c in changes}), 'device')}\n")
    return EXIT_OK


def cmdWhatWouldRefresh(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/what-would-refresh", query={
        "snap": options.snap, "group": options.group})
    return printChanges(answer, options, out)


def _deliveryHash(row: dict[str, Any]) -> str:
    from snapstore.state.fleet import Delivery, deliveryHash

    return deliveryHash(Delivery(
        id=row["id"], time=row["timestamp"], device=row["device"], snapName=row["snap"],
        snapId=row["snap-id"], revision=row["revision"], sha3_384=row["sha3-384"],
        bytes=row["bytes"], complete=row["complete"], cache=row["cache"],
        previousHash=row["previous-hash"]))


def cmdDeliveries(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    since = options.since
    if options.action == "verify":
        from snapstore.state.audit import verifyChain
        from types import SimpleNamespace

        # Recompute the chain here from the rows themselves, as audit
        # verify does, and compare with the service's own check.
        rows = client.call("GET", "/v1/deliveries")["deliveries"]
        entries = [SimpleNamespace(id=r["id"], previousHash=r["previous-hash"],
                                   rowHash=r["row-hash"], row=r) for r in rows]
        bad = verifyChain(entries, None, lambda e: _deliveryHash(e.row))
        server = client.call("GET", "/v1/deliveries/verify")
        answer = {"ok": bad is None, "rows": len(rows), "first-bad-id": bad,
                  "service-first-bad-id": server.get("first-bad-id")}
        if options.json:
            dumpJSON(answer, out)
        elif bad is None:
            out.write(f"Delivery log intact: {plural(len(rows), 'row')}"
                      + (f"; newest row {rows[-1]['id']} has hash {rows[-1]['row-hash']}"
                         if rows else "") + "\n")
        else:
            out.write(f"Delivery log BROKEN at row {bad}\n")
        if server.get("first-bad-id") != bad:
            out.write(f"The service's own check disagrees (it reports "
                      f"{server.get('first-bad-id') or 'no bad row'}); trust this report\n")
            return EXIT_PROBLEM
        return EXIT_OK if bad is None else EXIT_PROBLEM
    answer = client.call("GET", "/v1/deliveries", query={
        "device": options.device, "snap": options.snap, "since": since})
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    columns = ["time", "device", "snap", "snap-id", "revision", "sha3-384", "bytes",
               "complete", "cache"]
    if options.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in answer["deliveries"]:
            writer.writerow([json.dumps(row[c]) if isinstance(row[c], bool) else row[c]
                             for c in columns])
        return EXIT_OK
    if not answer["deliveries"]:
        out.write("No deliveries\n")
        return EXIT_OK
    rows = [["Time", "Device", "Snap", "Revision", "Bytes", "Complete", "Cache", "sha3-384"]]
    for r in answer["deliveries"]:
        rows.append([r["time"], r["device"], r["snap"] or r["snap-id"], str(r["revision"]),
                     str(r["bytes"]), "yes" if r["complete"] else "no", r["cache"],
                     r["sha3-384"][:16] + "…"])
    table(rows, out)
    return EXIT_OK
