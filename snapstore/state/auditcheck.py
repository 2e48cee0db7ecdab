# -*- test-case-name: tests.test_admin -*-
"""
Checking audit rows received over the API, free of I/O.

The admin API and the C{snapstore} command both verify the chain: the
command recomputes it from the rows it fetched, with the same
L{snapstore.state.audit.verifyChain} the database back-ends write with, so
a report of an intact log does not rest on the service's word alone.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from snapstore.state.audit import entryHash, verifyChain
from snapstore.state.records import AuditEntry


def entryFromJSON(row: dict[str, Any]) -> AuditEntry:
    """
    An L{AuditEntry} from the admin API's spelling of a row.
    """
    return AuditEntry(
        id=row["id"], time=row["time"], actor=row["actor"], action=row["action"],
        target=row["target"], before=row["before"], after=row["after"],
        previousHash=row["previous-hash"], rowHash=row["row-hash"],
    )


def explainBreak(entries: list[AuditEntry], badId: int) -> str:
    """
    Say what is wrong with row C{badId} of C{entries} (as
    L{verifyChain} found it), for the person reading the report.
    """
    previous = None
    for entry in entries:
        if entry.id == badId:
            expectedId = 1 if previous is None else previous.id + 1
            if entry.id != expectedId:
                return (f"row {entry.id} follows row {expectedId - 1}: a row before it "
                        f"was removed, or it was inserted")
            if entry.previousHash != (previous.rowHash if previous is not None else ""):
                return (f"row {entry.id} does not chain to the row before it: a row was "
                        f"removed or inserted")
            if entryHash(entry) != entry.rowHash:
                return f"row {entry.id} was altered: its content does not match its hash"
            return f"row {entry.id} differs from the expected newest row"
        previous = entry
    return f"row {badId} is missing: the newest rows were removed"


def checkRows(rows: Iterable[AuditEntry],
              head: Optional[tuple[int, str]] = None) -> dict[str, Any]:
    """
    Verify a whole audit log.

    @param head: C{(id, rowHash)} of a row recorded elsewhere earlier; the
        log must still hold it unchanged (this detects the removal of the
        newest rows, which the chain alone cannot).
    @return: C{ok}, C{rows}, C{first-bad-id}, C{reason} (when broken) and
        C{head} (the newest row's id and hash, to record for next time).
    """
    entries = list(rows)
    bad = verifyChain(entries, head)
    last = entries[-1] if entries else None
    answer: dict[str, Any] = {
        "ok": bad is None,
        "rows": len(entries),
        "first-bad-id": bad,
        "head": {"id": last.id, "row-hash": last.rowHash} if last else None,
    }
    if bad is not None:
        answer["reason"] = explainBreak(entries, bad)
    return answer
