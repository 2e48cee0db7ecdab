# -*- test-case-name: tests.test_offline -*-
"""
The C{snapstore} command's air-gap verbs: C{export}, C{import} and
C{list-imported}, registered by L{addVerbs} from L{snapstore.cli.makeParser}.

C{export} talks to a connected node's I{store endpoint} (as a device
would), C{import} and C{list-imported} to the offline node's admin API;
none of them opens a database.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any, TextIO

from snapstore.cli.client import (
    DEFAULT_ADMIN, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, AdminClient, CommandError,
    adminClient)
from snapstore.cli.format import dumpJSON, table
from snapstore.offline.bundle import BundleError, readManifest
from snapstore.offline.export import ExportError, Progress, StoreClient, export, parseSpec
from snapstore.offline.validationsets import ValidationSetError
from snapstore.offline.validationsets import parseSpec as parseValidationSet

STORE_ENV = "SNAPSTORE_STORE"
DEFAULT_STORE = "http://127.0.0.1:8000/"


def addVerbs(verb: Any) -> None:
    """
    Add the verbs with the parser's C{verb(name, handler, help)} helper.
    """
    sub = verb("export", cmdExport,
               "write a bundle of snaps (blobs, metadata, assertions) for an offline node")
    sub.add_argument("snaps", nargs="*", metavar="SNAP[=CHANNEL]",
                     help="a snap and channel (default stable); CHANNEL may be a comma list")
    sub.add_argument("--validation-set", action="append", default=[], dest="validation_sets",
                     metavar="ACCOUNT/NAME[=SEQUENCE]",
                     help="also carry this validation set (default: its latest sequence) "
                          "and the snap revisions it requires (repeatable)")
    sub.add_argument("--arch", action="append", dest="architectures", metavar="ARCH",
                     help="architecture to export (repeatable) [default: amd64]")
    sub.add_argument("--since", metavar="MANIFEST",
                     help="a previous bundle (or its manifest.json): leave out what it carried")
    sub.add_argument("--with-deps", action="store_true",
                     help="also export each snap's base and content providers (stable)")
    sub.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="bundle file")
    sub.add_argument("--store", default=os.environ.get(STORE_ENV),
                     help=f"the connected snapstore's store endpoint [default: ${STORE_ENV}, "
                          f"else the store URL the admin API (--admin) reports, else "
                          f"{DEFAULT_STORE}]")
    sub.set_defaults(local=True)
    sub = verb("import", cmdImport,
               "verify a bundle and add it to an (offline) snapstore, all or nothing")
    sub.add_argument("bundle", metavar="BUNDLE")
    verb("list-imported", cmdListImported, "list the imported snaps this snapstore can serve")


def cmdExport(client: Any, options: argparse.Namespace, out: TextIO) -> int:
    try:
        specs = [pair for spec in options.snaps for pair in parseSpec(spec)]
        validationSets = [parseValidationSet(text) for text in options.validation_sets]
        since = readManifest(options.since) if options.since else None
    except (ExportError, BundleError, ValidationSetError) as error:
        raise CommandError(str(error), EXIT_USAGE)
    if not specs and not validationSets:
        raise CommandError("name at least one SNAP or --validation-set", EXIT_USAGE)
    architectures = options.architectures or ["amd64"]
    store = StoreClient(options.store or _nodeStoreURL(options), timeout=options.timeout)
    try:
        manifest = export(store, specs, architectures, options.output, since=since,
                          withDeps=options.with_deps, progressOut=sys.stderr,
                          validationSets=validationSets)
    except ExportError as error:
        raise CommandError(error.message, EXIT_UNREACHABLE if error.unreachable
                           else EXIT_REFUSED)
    except OSError as error:
        raise CommandError(f"cannot write {options.output}: {error.strerror}", EXIT_REFUSED)
    if options.json:
        dumpJSON(manifest, out)
        return EXIT_OK
    size = sum(blob["size"] for blob in manifest["blobs"])
    out.write(f"Wrote {options.output}: {len(manifest['snaps'])} snap(s), "
              f"{len(manifest['blobs'])} blob(s) ({size} bytes), "
              f"{len(manifest['assertions'])} assertion(s)\n")
    for snap in manifest["snaps"]:
        for channel in snap["channels"]:
            out.write(f"  {snap['name']} {channel['channel']} {channel['architecture']} "
                      f"revision {channel['revision']}\n")
    for assertion in manifest["assertions"]:
        if assertion["type"] == "validation-set":
            _, account, name, sequence = assertion["primary-key"]
            out.write(f"  validation set {account}/{name} sequence {sequence}\n")
    return EXIT_OK


def _nodeStoreURL(options: argparse.Namespace) -> str:
    """
    The store endpoint of the node C{--admin} names, from its status, for
    an export without C{--store}; the default store URL when the admin API
    was not named and does not answer.
    """
    try:
        return adminClient(options).call("GET", "/v1/status")["store-url"]
    except CommandError as error:
        if error.exitCode == EXIT_UNREACHABLE and options.admin == DEFAULT_ADMIN:
            return DEFAULT_STORE
        raise CommandError(f"no --store given, and the store URL could not be asked "
                           f"from the admin API: {error.message}", error.exitCode)
    except (KeyError, TypeError):
        raise CommandError(f"no --store given, and the admin API at {options.admin} did not "
                           f"report a store URL: give --store", EXIT_UNREACHABLE)


class _Reading:
    """
    A file whose reads feed a progress bar (the upload of C{import}).
    """

    def __init__(self, wrapped: IO[bytes], progress: Any) -> None:
        self.wrapped = wrapped
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.wrapped.read(size)
        self.progress(len(data))
        return data


def cmdImport(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    try:
        size = os.path.getsize(options.bundle)
        bundle = open(options.bundle, "rb")
    except OSError as error:
        raise CommandError(f"cannot read {options.bundle}: {error.strerror}", EXIT_USAGE)
    # The node refuses an upload from its head (token, --import-max-size)
    # and closes the connection, which urllib reports as a broken pipe
    # halfway through the body: ask first, so a token problem is told as
    # one.
    with bundle:
        client.call("GET", "/v1/imported")
        progress = Progress(sys.stderr, size, "uploading  ")
        try:
            # Verifying a large bundle takes a while: wait at least an hour.
            answer = client.upload(
                "/v1/import", _Reading(bundle, progress), size, "application/x-tar",
                max(options.timeout, 3600.0),
                cutOff=f"the admin API at {client.base} closed the connection during the "
                       f"upload: is the bundle ({size} bytes) larger than the node's "
                       f"--import-max-size?")
        finally:
            progress.finish()
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    summary = answer.get("imported") or {}
    names = ", ".join(summary.get("snapNames") or []) or "nothing"
    if not summary.get("changed") and summary.get("blobsAdded"):
        out.write(f"Bundle verified; {names}: already imported; added "
                  f"{summary['blobsAdded']} blob(s) to this node's cache\n")
    elif not summary.get("changed"):
        out.write(f"Bundle verified; {names}: already imported, nothing changed\n")
    else:
        out.write(f"Imported {names}: {summary.get('revisions', 0)} new revision(s), "
                  f"{summary.get('blobsAdded', 0)} new blob(s), "
                  f"{summary.get('channels', 0)} channel(s) updated, "
                  f"{summary.get('assertions', 0)} assertion(s)\n")
    return EXIT_OK


def cmdListImported(client: AdminClient, options: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/v1/imported")
    if options.json:
        dumpJSON(answer, out)
        return EXIT_OK
    rows = [["Name", "Channel", "Arch", "Revision", "Version", "Size", "Cached"]]
    for snap in answer.get("snaps") or []:
        for channel in snap.get("channels") or []:
            rows.append([snap["name"], channel["channel"], channel["architecture"],
                         str(channel["revision"]), str(channel.get("version") or "-"),
                         str(channel.get("size") or "-"),
                         "yes" if channel.get("cached") else "MISSING"])
    if len(rows) == 1:
        out.write("No imported snaps.\n")
        return EXIT_OK
    table(rows, out)
    return EXIT_OK
