# -*- test-case-name: tests.test_offline_validation -*-
"""
Validation sets on air-gapped sites (design.md section 9).

C{snapstore export --validation-set ACCOUNT/NAME[=SEQUENCE]} carries the
C{validation-set} assertion and the snaps and revisions it requires; the
offline node serves it at
C{/v2/assertions/validation-set/16/<account>/<name>?sequence=N|latest}
(L{snapstore.offline.store}), so C{snap validate --enforce} finds both.
This module reads specs and the assertion's C{snaps} list; no network.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import attrs

_NAME = re.compile(r"\A[a-z0-9](?:-?[a-z0-9])*\Z")
_ACCOUNT = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class ValidationSetError(ValueError):
    """
    A spec or an assertion that is not usable; the message says why.
    """


@attrs.frozen
class ValidationSetSpec:
    """
    C{ACCOUNT/NAME[=SEQUENCE]}; C{sequence} C{None} means the latest.
    """

    account: str
    name: str
    sequence: Optional[int] = None

    @property
    def key(self) -> tuple[str, str, str]:
        """
        The sequence key: C{("16", account, name)}.
        """
        return ("16", self.account, self.name)


@attrs.frozen
class Requirement:
    """
    One snap of a validation set: C{presence} is C{required}, C{optional}
    or C{invalid}; C{revision} is C{None} when any revision will do.
    """

    name: str
    snapId: str
    presence: str = "required"
    revision: Optional[int] = None


def parseSpec(text: str) -> ValidationSetSpec:
    """
    @raise ValidationSetError: unless C{text} is C{ACCOUNT/NAME[=SEQUENCE]}.
    """
    reference, equals, sequence = text.partition("=")
    account, slash, name = reference.partition("/")
    if not slash or not _ACCOUNT.match(account) or not _NAME.match(name) or (
            equals and not (sequence.isdigit() and int(sequence) >= 1)):
        raise ValidationSetError(f"{text!r} is not ACCOUNT/NAME[=SEQUENCE] (e.g. "
                                 f"acme/base-set or acme/base-set=3)")
    return ValidationSetSpec(account, name, int(sequence) if equals else None)


def requirements(text: bytes) -> list[Requirement]:
    """
    The C{snaps} list of a validation-set assertion (snapd's nested header
    format: C{snaps:} then C{  -} items of C{    key: value} lines).

    @raise ValidationSetError: when it has none or an item lacks a name.
    """
    head = text.decode("utf-8", "replace").split("\n\n", 1)[0].split("\n")
    try:
        start = head.index("snaps:") + 1
    except ValueError:
        raise ValidationSetError("the validation-set assertion lists no snaps")
    items: list[dict[str, str]] = []
    for line in head[start:]:
        if not line.startswith("  "):
            break
        if line.strip() == "-":
            items.append({})
        elif items and line.startswith("    "):
            key, _, value = line.strip().partition(":")
            items[-1][key] = value.strip()
    found = []
    for item in items:
        name = item.get("name", "")
        revision = item.get("revision")
        if not name or (revision is not None and not revision.isdigit()):
            raise ValidationSetError(f"the validation-set assertion has a bad snap entry "
                                     f"{item!r}")
        found.append(Requirement(name, item.get("id", ""), item.get("presence", "required"),
                                 int(revision) if revision is not None else None))
    return found


def latest(candidates: list[Any]) -> Optional[Any]:
    """
    Of imported validation-set assertions of one sequence key, the one
    with the highest sequence (the last key part), or C{None}.
    """
    numbered = [c for c in candidates if c.primaryKey[-1].isdigit()]
    return max(numbered, key=lambda c: int(c.primaryKey[-1])) if numbered else None
