# -*- test-case-name: tests.test_interfaces -*-
"""
Every zope interface of snapstore, declared once.

The modules under C{snapstore/} talk to each other only through these
interfaces, so that a concern (state, cache, rules, upstream) can be swapped
or faked without its users noticing.  Implementations are checked with
C{verifyObject} in the tests.

Sections: state, blob cache, rules, upstream.  Each section is owned by the
module that implements it; extend a section, never redefine a name.
"""

from zope.interface import Attribute, Interface

# ---------------------------------------------------------------------------
# State (snapstore/state/)
# ---------------------------------------------------------------------------


class IStateStore(Interface):
    """
    Durable state shared by every part of the service: what the proxy has
    learnt about blobs, revision overrides, devices and the audit log.

    Two implementations pass one contract suite: SQLite (embedded default)
    and PostgreSQL (several nodes).  Every method returns a L{Deferred}
    firing with the documented value; records are L{snapstore.state.records}
    frozen attrs classes, never database rows.
    """

    def whenReady():
        """
        @return: a Deferred that fires once migrations have run and the store
            answers queries; errbacks when it never will.
        """

    def close():
        """
        Release connections.  @return: a Deferred firing when done.
        """

    def recordBlob(blob):
        """
        Remember a downloadable file the store described (a snap revision, a
        delta or a resource), so that a later download of its rewritten URL
        can be fetched upstream and verified.  Recording the same name again
        replaces the upstream URL (store URLs can change) but keeps the
        digest and size of the first record, which are immutable.

        @param blob: a L{snapstore.state.records.BlobRecord}.
        """

    def getBlob(name):
        """
        @param name: the download file name, e.g. C{<snap-id>_<rev>.snap}.
        @return: a Deferred firing with the L{BlobRecord} or C{None}.
        """

    def setOverride(override, actor):
        """
        Pin C{override.snapName} on C{override.channel} (normalised, so that
        C{stable} and C{latest/stable} are one) for C{override.architecture}.
        Replaces an existing pin for the same key and appends an audit row.

        @param override: a L{snapstore.state.records.Override}.
        @param actor: who made the change, for the audit log.
        @return: a Deferred firing with the previous L{Override} or C{None}.
        """

    def deleteOverride(snapName, channel, actor, architecture=None):
        """
        Remove pins of C{snapName} on C{channel} (for one architecture, or
        all when C{None}), appending an audit row.

        @return: a Deferred firing with the list of removed L{Override}s.
        """

    def listOverrides(snapName=None):
        """
        @return: a Deferred firing with a list of L{Override}s, all of them
            or those of one snap, ordered by snap, channel, architecture.
        """

    def recordDevice(device):
        """
        Note that a device used the proxy: inserts it, or updates its last
        seen time, address and model.

        @param device: a L{snapstore.state.records.Device}.
        """

    def listDevices(seenSince=None):
        """
        @param seenSince: POSIX time; only devices seen at or after it.
        @return: a Deferred firing with a list of L{Device}s.
        """

    def appendAudit(actor, action, target, before, after):
        """
        Append a row to the hash-chained audit log.

        @param before: JSON-serialisable value (or C{None}).
        @param after: JSON-serialisable value (or C{None}).
        @return: a Deferred firing with the new L{AuditEntry}.
        """

    def listAudit(target=None, since=None, until=None):
        """
        @return: a Deferred firing with the L{AuditEntry}s in id order.
        """

    def getSetting(key):
        """
        A small key/value space for settings changed at run time (for
        example a device limit set by the admin command).

        @return: a Deferred firing with the JSON value or C{None}.
        """

    def setSetting(key, value, actor):
        """
        Store a JSON value under C{key}, appending an audit row.
        """


# ---------------------------------------------------------------------------
# Blob cache (snapstore/cache/)
# ---------------------------------------------------------------------------


class IBlobCache(Interface):
    """
    Content-addressed storage of verified blobs, keyed by lowercase hex
    sha3-384.  Knows nothing of HTTP.
    """

    directory = Attribute("The cache directory (a FilePath).")
    maxSize = Attribute("The bound in bytes the cache is kept under.")

    def open(digest):
        """
        @return: a readable, pinned handle on a cached blob or C{None}.  A
            pinned blob is not deleted by eviction until the handle is
            closed.
        """


# ---------------------------------------------------------------------------
# Rules (snapstore/rules/), design.md section 5
# ---------------------------------------------------------------------------


class IRule(Interface):
    """
    A policy plug-in loaded from C{rules.d}.
    """

    name = Attribute(
        "A unique, short name used in logs, metrics and refusal messages."
    )


class IConnectRule(IRule):
    """
    Forward-proxy admission.
    """

    def checkConnect(target):
        """
        @param target: a L{snapstore.rules.verdicts.ConnectTarget}.
        @return: a Verdict (or a Deferred firing with one).
        """
