# -*- test-case-name: tests.test_cli -*-
"""
The C{snapstore certificate} verb: a key and self-signed certificate for
an C{ssl:} store endpoint, written locally (no service needed).
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, TextIO

from snapstore.cli.client import AdminClient, CommandError, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from snapstore.cli.format import dumpJSON, escape
from snapstore.http.tls import TLSConfigError, checkSubjectName, writeSelfSigned


def cmdCertificate(client: Optional[AdminClient], options: argparse.Namespace, out: TextIO) -> int:
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
    endpoint = f"ssl:8443:privateKey={escape(keyPath)}:certKey={escape(certPath)}"
    if options.json:
        dumpJSON({"private-key": keyPath, "certificate": certPath, "store-endpoint": endpoint,
                  "created-directory": createdDirectory}, out)
        return EXIT_OK
    if createdDirectory:
        out.write(f"Created the directory {os.path.dirname(keyPath)} (--out-dir).\n")
    out.write(f"Wrote {keyPath} (private key, mode 0600) and {certPath}.\n"
              f"Serve HTTPS with:\n  --store-endpoint {endpoint}\n"
              f"Devices must trust {certPath}: 'snapstore client-config' prints the setup.\n")
    return EXIT_OK


def subjectName(text: str) -> str:
    """
    An argparse type: a host name or address a certificate may name.
    """
    try:
        return checkSubjectName(text.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))

