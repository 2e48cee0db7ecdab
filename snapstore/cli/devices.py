# -*- test-case-name: tests.test_cli -*-
"""
The C{snapstore device-limit} verb (the device list is the fleet's:
L{snapstore.cli.fleet}).
"""

from __future__ import annotations

import argparse
from typing import TextIO

from snapstore.cli.client import AdminClient, EXIT_OK
from snapstore.cli.format import dumpJSON


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
        dumpJSON(answer, out)
    else:
        out.write(message + "\n")
    return EXIT_OK


def limitArgument(text: str) -> str:
    if text.strip().lower() in ("none", "reset") or (text.strip().isdigit() and int(text) > 0):
        return text
    if text.strip().isdigit():
        raise argparse.ArgumentTypeError(
            "0 would refuse every new device; give 'none' for no limit, or a limit >= 1")
    raise argparse.ArgumentTypeError("give a whole number >= 1, 'none' (no limit) or 'reset'")
