# -*- test-case-name: tests.test_state -*-
"""
The hash chain of the audit log, kept free of I/O.

Each row's C{rowHash} is a SHA-256 over the previous row's hash and the
row's own content, so editing, inserting or removing a row breaks the chain
at that row.  Both database back-ends and C{snapstore audit verify} use these
functions, so what is written and what is checked can never drift apart.

The chain cannot by itself show that the newest rows were cut off: the
remaining rows still form a valid chain.  Each append is therefore also
logged with its id and hash, so that an operator can compare the newest row
against an outside record (see L{verifyChain}'s C{head}).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Iterable

from snapstore.state.records import AuditEntry


def canonicalJSON(value: Any) -> str:
    """
    Serialise C{value} the single way that is hashed and stored.

    Keys are sorted, there is no insignificant whitespace and only ASCII is
    emitted, so the same value always gives the same text whichever database
    round-tripped it.

    @raise ValueError: for values JSON cannot represent exactly (NaN).
    @raise TypeError: for values that are not JSON-serialisable.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
        allow_nan=False,
    )


def rowHash(
    previousHash: str,
    id: int,
    time: float,
    actor: str,
    action: str,
    target: str,
    before: Any,
    after: Any,
) -> str:
    """
    Compute the hash a row with this content must carry.

    @return: lowercase hex SHA-256 of C{previousHash} followed by the
        canonical JSON of the row's fields.
    """
    content = canonicalJSON(
        {
            "id": id,
            "time": time,
            "actor": actor,
            "action": action,
            "target": target,
            "before": before,
            "after": after,
        }
    )
    return hashlib.sha256(
        (previousHash + content).encode("ascii")
    ).hexdigest()


def makeEntry(
    id: int,
    time: float,
    actor: str,
    action: str,
    target: str,
    before: Any,
    after: Any,
    previousHash: str,
) -> AuditEntry:
    """
    Build the next row of the chain.

    C{before} and C{after} are passed through JSON once, so that the entry
    returned to the caller equals the one later read back from the database
    (tuples become lists, for example).
    """
    before = json.loads(canonicalJSON(before))
    after = json.loads(canonicalJSON(after))
    return AuditEntry(
        id=id,
        time=time,
        actor=actor,
        action=action,
        target=target,
        before=before,
        after=after,
        previousHash=previousHash,
        rowHash=rowHash(
            previousHash, id, time, actor, action, target, before, after
        ),
    )


def entryHash(entry: AuditEntry) -> str:
    """
    @return: the hash C{entry} should carry given its content and
        C{previousHash}.
    """
    return rowHash(
        entry.previousHash,
        entry.id,
        entry.time,
        entry.actor,
        entry.action,
        entry.target,
        entry.before,
        entry.after,
    )


def verifyChain(
    entries: Iterable[Any], head: tuple[int, str] | None = None,
    hashOf: Callable[[Any], str] | None = None,
) -> int | None:
    """
    Check a whole audit log (or another chain of the same shape, such as
    the delivery log, given its C{hashOf}), oldest row first.

    @param entries: every row, in id order.
    @param head: optionally C{(id, rowHash)} of a row known from outside the
        database (a log line, a printed report); the chain must contain it
        unchanged, which is what detects removal of the newest rows.
    @return: the id of the first row that is wrong, or C{None} when the chain
        is intact.  A row is wrong when its id does not follow the previous
        one (a row before it was removed, or it was inserted), when its
        C{previousHash} is not the previous row's hash, or when its content
        does not match its own hash (it was edited).  When only C{head} is
        missing, its id is returned.
    """
    hashOf = entryHash if hashOf is None else hashOf
    expectedId = 1
    previousHash = ""
    seen: dict[int, str] = {}
    for entry in entries:
        if entry.id != expectedId:
            return entry.id
        if entry.previousHash != previousHash:
            return entry.id
        if hashOf(entry) != entry.rowHash:
            return entry.id
        seen[entry.id] = entry.rowHash
        previousHash = entry.rowHash
        expectedId += 1
    if head is not None:
        headId, headHash = head
        if seen.get(headId) != headHash:
            return headId
    return None
