# -*- test-case-name: tests.test_state,tests.test_cache,tests.test_rules -*-
"""
Every zope interface of snapstore, declared once.

The modules under C{snapstore/} talk to each other only through these
interfaces, so that a concern (state, cache, rules, upstream) can be swapped
or faked without its users noticing.  Implementations are checked with
C{verifyObject} in the tests.

Sections: state, blob cache, rules, upstream.  Each section is owned by the
module that implements it; extend a section, never redefine a name.
"""

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
)
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

    While the store is not ready (starting, database unreachable, closed)
    calls fail at once with L{snapstore.state.errors.StateUnavailable}
    instead of waiting; the HTTP layer answers those with 503.  A call made
    while the store is still starting waits for that first attempt.
    """

    def whenReady():
        """
        @return: a Deferred that fires once migrations have run and the store
            answers queries; errbacks (with C{StateUnavailable}) when it
            never will: a migration failed or the store was closed.
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

        @param blob: a L{snapstore.state.records.BlobRecord}; C{seenAt} 0
            means now.
        @return: a Deferred firing with the stored L{BlobRecord}, whose
            digest and size are those to verify against.
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

    def deleteOverride(snapName, channel, actor, architecture=None, group=""):
        """
        Remove pins of C{snapName} on C{channel} (for one architecture, or
        all when C{None}) of one scope (C{group}; C{""}: the pins for every
        device), appending an audit row.

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
        seen time (which only moves forward), address and model (an empty
        one keeps the known value).

        @param device: a L{snapstore.state.records.Device}; C{lastSeen} 0
            means now.
        @return: a Deferred firing with the stored L{Device}.
        """

    def listDevices(seenSince=None):
        """
        @param seenSince: POSIX time; only devices seen at or after it.
        @return: a Deferred firing with a list of L{Device}s.
        """

    def recordSession(session):
        """
        Note which device upstream gave a session macaroon to: inserts the
        record, or moves its last-used time forward (and takes an expiry
        when the new record has one).  The identity of a digest never
        changes once recorded.

        @param session: a L{snapstore.state.records.DeviceSession}, keyed by
            a digest of the macaroon (the macaroon is never stored);
            C{createdAt} and C{lastUsed} 0 mean now.
        @return: a Deferred firing with the stored L{DeviceSession}.
        """

    def getSession(digest):
        """
        @return: a Deferred firing with the L{DeviceSession} recorded under
            C{digest}, or C{None}.
        """

    def listSessions(usedSince=None):
        """
        @param usedSince: POSIX time; only sessions used at or after it.
        @return: a Deferred firing with a list of L{DeviceSession}s.
        """

    def pruneSessions(unusedFor):
        """
        Remove the sessions whose expiry has passed and those not used for
        C{unusedFor} seconds.

        @return: a Deferred firing with how many were removed.
        """

    def appendAudit(actor, action, target, before, after):
        """
        Append a row to the hash-chained audit log.  Concurrent appends,
        from this node or others, are serialised so the chain never forks.

        Changes made through this interface are audited by the store itself
        with targets C{snap:<name>} (actions C{override.set},
        C{override.delete}) and C{setting:<key>} (C{setting.set}).

        @param before: JSON-serialisable value (or C{None}).
        @param after: JSON-serialisable value (or C{None}).
        @return: a Deferred firing with the new L{AuditEntry}.
        """

    def listAudit(target=None, since=None, until=None):
        """
        @param since: POSIX time; only rows at or after it.
        @param until: POSIX time; only rows before it.
        @return: a Deferred firing with the L{AuditEntry}s in id order.
        """

    def verifyAudit():
        """
        Check the whole audit chain (see L{snapstore.state.audit.verifyChain}).

        @return: a Deferred firing with the id of the first altered,
            inserted or misplaced row (the row after a removed one), or
            C{None} when the chain is intact.
        """

    def getSetting(key):
        """
        A small key/value space for settings changed at run time (for
        example a device limit set by the admin command).

        @return: a Deferred firing with the JSON value or C{None}.
        """

    def setSetting(key, value, actor):
        """
        Store a JSON value under C{key} (C{None} removes it), appending an
        audit row and announcing the change to observers.

        @return: a Deferred firing with the previous value or C{None}.
        """

    def observeChanges(callback):
        """
        Be told when overrides or settings change, on this node or (with
        PostgreSQL) on any node sharing the database, within a second.

        C{callback} is called with a dict event, one of:
            - C{{"kind": "override", "snapName", "channel", "architecture"}}
            - C{{"kind": "setting", "key"}}
            - C{{"kind": "resync"}}: changes may have been missed (the
              database connection was lost and is back); reload everything.
        Exceptions raised by C{callback} are logged and ignored.  A
        C{callback} may return a Deferred firing once it has taken the
        change in (read the changed rows again, say): a change made on
        this node is answered only after that, so that this node applies
        every change it answered, even if the database goes away at once.

        @return: a zero-argument callable that stops the observation.
        """


class IImportedContent(Interface):
    """
    What an offline node serves: content imported from bundles
    (C{snapstore/offline}, operations in C{snapstore/state/imported.py}).
    Both state-store back-ends provide it next to L{IStateStore}; it is a
    separate interface so that wrappers and fakes of L{IStateStore} need
    not grow these methods.
    """

    def importContent(content, actor):
        """
        Add a verified bundle's content (a
        L{snapstore.state.imported.ImportedContent}) in one transaction,
        with an audit row (target C{offline:import}) when anything changed.

        @return: a Deferred firing with a summary dict of counts and
            C{changed}.
        """

    def getImportedSnap(snapName=None, snapId=None):
        """
        @return: a Deferred firing with the
            L{snapstore.state.imported.ImportedSnap} or C{None}.
        """

    def listImportedSnaps():
        """
        @return: a Deferred firing with every imported snap, by name.
        """

    def getImportedAssertion(type, primaryKey):
        """
        @return: a Deferred firing with the
            L{snapstore.state.imported.ImportedAssertion} or C{None}.
        """

    def listImportedSequence(type, sequenceKey):
        """
        @return: a Deferred firing with every imported assertion of a
            sequence-forming C{type} (C{validation-set}) whose primary key
            is C{sequenceKey} plus a sequence number.
        """


# ---------------------------------------------------------------------------
# Blob cache (snapstore/cache/)
# ---------------------------------------------------------------------------


class IBlobCache(Interface):
    """
    Content-addressed storage of verified blobs, keyed by lowercase hex
    sha3-384.  Knows nothing of HTTP.

    A blob enters only through a fill whose size and digest matched; a
    fill is shared by every reader that asks meanwhile (single flight).
    """

    directory = Attribute("The cache directory (a FilePath).")
    maxSize = Attribute("The bound in bytes the cache is kept under.")
    usedSize = Attribute(
        "Bytes occupied or reserved: complete blobs, fills in progress at "
        "their full size, and removed blobs still held open by a reader. "
        "Never above maxSize by more than one blob."
    )

    def open(digest):
        """
        @return: a readable, pinned L{IBlobSource} on a complete cached blob,
            or C{None}.  A pinned blob is not deleted by eviction until the
            handle is closed.
        """

    def contains(digest):
        """
        @return: whether a complete blob with that digest is cached.
        """

    def filling(digest):
        """
        @return: the L{IBlobFill} of C{digest} in progress, or C{None}.
        """

    def beginFill(digest, size):
        """
        Reserve room (evicting least recently used, unpinned blobs) and
        start a fill, which the caller feeds and ends.

        @return: an L{IBlobFill}, or C{None} when the blob cannot be cached
            now (serve it uncached).
        @raise ValueError: if the blob is cached or being filled already.
        """

    def remove(digest):
        """
        Delete a blob; open readers keep reading it.  @return: whether it
        was cached.
        """

    def entries():
        """
        @return: C{(digest, size, pins)} of every complete blob, least
            recently used first.
        """

    def stats():
        """
        @return: a dict of counters (blobs, usedSize, maxSize, filling,
            pinned).
        """

    def verify():
        """
        Hash every blob (away from the reactor thread) and remove those
        whose content does not match their digest.

        @return: a Deferred firing with the list of removed digests.
        """

    def whenIdle():
        """
        @return: a Deferred firing once no fill is in progress.
        """

    def close():
        """
        Abandon fills in progress (at shutdown); complete blobs stay.
        """


class IBlobSource(Interface):
    """
    An open, pinned handle on a blob's bytes, complete or still filling.
    """

    fd = Attribute("An OS file descriptor open for reading the blob.")
    size = Attribute("The blob's full size in bytes.")
    digest = Attribute("The blob's lowercase hex sha3-384.")
    failure = Attribute(
        "C{None}, or the Failure of the fill this handle reads; bytes past "
        "L{available} will then never come."
    )

    def available():
        """
        @return: how many bytes from the start may be sent now (the size
            for a complete blob; less while a fill is in progress).
        """

    def notifyProgress(callback):
        """
        Call C{callback()} once, when L{available} has grown or the fill
        ended either way (at once if nothing more will change).
        """

    def close():
        """
        Close the descriptor and unpin the blob.  Idempotent.
        """


class IBlobFill(Interface):
    """
    One upstream transfer into the cache, shared by all its readers.
    """

    digest = Attribute("The expected lowercase hex sha3-384.")
    size = Attribute("The expected size in bytes.")
    written = Attribute("Bytes written so far.")
    failure = Attribute("C{None}, or the Failure that ended the fill.")
    committed = Attribute("C{True} once verified and in the cache.")

    def start():
        """
        Bytes will follow: let waiting readers start.
        """

    def write(data):
        """
        Append bytes (to disk, and to the running digest).
        """

    def finish():
        """
        Verify size and digest and commit.  @return: a Deferred firing with
        C{True} when committed, C{False} when the fill was discarded.
        """

    def abort(reason):
        """
        Discard the fill; its readers are told to cut their clients short.

        @param reason: a Failure; waiters of L{whenStarted} get it.
        """

    def whenStarted():
        """
        @return: a Deferred firing when bytes start flowing, or failing with
            the reason the fill was aborted before that.
        """

    def openReader():
        """
        @return: a pinned L{IBlobSource} reading the blob as it arrives; its
            last byte is released only once the blob is verified.
        """


# ---------------------------------------------------------------------------
# Rules (snapstore/rules/), docs/architecture.md "Rules in brief"
# ---------------------------------------------------------------------------


class IBlobCacheObserver(Interface):
    """
    Told as an L{IBlobCache} commits and drops blobs (the cluster keeps the
    blob locations of every node in the shared database this way).
    """

    def blobAdded(digest, size):
        """
        A verified blob of C{size} bytes is now in the cache.
        """

    def blobRemoved(digest):
        """
        The blob is no longer in the cache (evicted, pruned or broken).
        """


class IBlobFiller(Interface):
    """
    Fills a cache miss from somewhere other than the download resource's
    own upstream fetch (the cluster: peers before the uplink).
    """

    def startFill(fill, record, request):
        """
        Feed the L{IBlobFill} C{fill} with the blob C{record} describes, and
        end it (finish or abort); C{request} is the device request that
        caused the miss (its headers are used upstream).  Must not wait for
        the transfer.
        """


class IRule(Interface):
    """
    A policy plug-in loaded from C{rules.d}.
    """

    name = Attribute(
        "A unique, short name used in logs, metrics and refusal messages."
    )


class IAdmissionRule(IRule):
    """
    Store-endpoint admission: asked before a store API call is relayed
    upstream and before a blob is served (device limit, snap allow/deny).
    """

    def admit(request):
        """
        @param request: a L{snapstore.rules.values.StoreRequest}: what the
            device asked for, who it is, and for downloads the blob.
        @return: a Verdict (or a Deferred firing with one): C{Allow},
            C{Abstain}, or C{Deny}; a L{snapstore.rules.values.StoreDeny}
            also names the store error code the device is shown.
        """


class IActionRule(IRule):
    """
    Amends what upstream answered, per device: each result of a refresh
    call (install, refresh, download actions), each C{info} channel-map
    entry and each C{find} result.
    """

    def amend(request, action, result):
        """
        @param request: the L{snapstore.rules.values.StoreRequest}.
        @param action: the action the device sent (a copy of the dict from
            the refresh body, with C{"tracking-channel"} and
            C{"context-revision"} from the context filled in for refreshes,
            and the request's C{"fields"}); for C{info} entries
            C{{"action": "info", "name", "snap-id", "publisher"}}, for
            C{find} results C{{"action": "find"}}, for entries of the v1
            C{names} and C{search} answers C{{"action": "catalogue"}} (which
            can only be kept or dropped).
        @param result: upstream's result dict for it (a refresh result, a
            channel-map entry, a find result); never mutate it.
        @return: the result to hand the device (C{result} itself when
            unchanged), or a Deferred firing with it; C{None} drops an
            C{info} entry or C{find} result.
        """


class ICacheRule(IRule):
    """
    Decides whether and how long a response is cached.
    """

    def policy(request, response):
        """
        @param request: a L{snapstore.rules.values.StoreRequest}.
        @param response: a L{snapstore.rules.values.ResponseHead}.
        @return: a L{snapstore.rules.values.CachePolicy}, or C{None} to
            abstain (the next rule decides).
        """


class IConnectRule(IRule):
    """
    Forward-proxy admission.
    """

    def checkConnect(target):
        """
        @param target: a L{snapstore.rules.verdicts.ConnectTarget}.
        @return: a Verdict (or a Deferred firing with one).
        """


class IClientConfig(Interface):
    """
    The device setup a node describes: what a device runs to use this
    proxy (served by the store endpoint's C{/v1/client-config} and by the
    admin API's).  Each method takes the request being answered (its
    C{Host} names the proxy when no public URL is set) or C{None}.
    """

    def storeURL(request):
        """
        The store endpoint's base URL as devices should use it.
        """

    def describe(request):
        """
        The setup as a JSON-ready dict.
        """

    def loopbackProblem(request):
        """
        Why the store URL devices would be told points at loopback (and
        so cannot serve them), or C{None}.
        """

    def script(request, mode="store"):
        """
        The setup as a shell script; C{mode} is C{store} or C{forward}.
        """

    def cloudInit(request, mode="store"):
        """
        The setup as a cloud-init snippet.
        """


class ISiteObserver(Interface):
    """
    Sees every request a site serves (access log, request metrics); given
    to L{snapstore.http.guard.GuardedSite}.
    """

    def requestFactory(channel, queued=None):
        """
        Build the request object for C{channel}: the site's C{requestFactory}.
        """

    def logRequest(request):
        """
        Stand in for L{twisted.web.server.Site.log} for a finished request.
        """


class IServiceReactor(
    IReactorCore, IReactorTime, IReactorTCP, IReactorThreads, IReactorFDSet,
    IReactorPluggableNameResolver,
):
    """
    What the service asks of its reactor: time, TCP, threads, file
    descriptors (splice, sendfile), name resolution and start-up and
    shut-down triggers.  Parts that only keep time take an
    L{IReactorTime} (a L{twisted.internet.task.Clock} in tests).
    """


class IBodyGate(Interface):
    """
    Decides on a request from its head, before any byte of its body is
    read (L{snapstore.http.guard.GuardedChannel}): who may send a large body,
    how large, and where it is stored while it arrives.
    """

    maxBodySize = Attribute("The largest body accepted for governed requests, in bytes.")

    def governs(method, path):
        """
        @param method: the request method.
        @param path: the request target's path, as sent (no query).
        @return: whether this gate decides on the request.
        """

    def admit(request, length):
        """
        @param request: the request, with its headers and peer, no body yet.
        @param length: the announced C{Content-Length}, or C{None} (chunked).
        @return: C{None} to let the body come, or C{(status, JSON body)}
            to refuse it unread.
        """

    def spool(request):
        """
        Give an admitted request the file its body is written to.
        """


class IFleetState(Interface):
    """
    What the state store keeps about the fleet (docs/architecture.md), kept
    apart from L{IStateStore} so that the fleet can grow without touching
    the core contract.  Both back-ends provide it.
    """

    def recordInventory(identity, model, address, architecture, snaps, names):
        """
        Replace the installed snaps recorded for device C{identity}.

        @param snaps: L{snapstore.state.fleet.InstalledSnap}s (the refresh
            context: the device's whole installed set).
        @param names: snap-id to snap name, as an upstream answer named
            them.
        @return: a Deferred firing with C{None}.
        """

    def recordSnapNames(names):
        """
        Remember snap-id to name pairs an upstream answer gave.
        """

    def listFleet(seenSince=None, identity=None, snapName=None):
        """
        @return: a Deferred firing with L{snapstore.state.fleet.FleetDevice}s
            ordered by identity.
        """

    def inventory(snapName=None):
        """
        @return: a Deferred firing with
            L{snapstore.state.fleet.InventoryCount}s.
        """

    def snapIdsNamed(name):
        """
        @return: a Deferred firing with the snap-ids known by C{name}.
        """

    def createGroup(group, actor):
        """
        Create or replace a L{snapstore.state.fleet.DeviceGroup}; audited,
        and announced to observers as C{{"kind": "group", "name"}}.

        @return: a Deferred firing with the group replaced, or C{None}.
        """

    def deleteGroup(name, actor):
        """
        @return: a Deferred firing with the removed group, or C{None}.
        """

    def listGroups():
        """
        @return: a Deferred firing with every group, by name.
        """

    def appendDeliveries(deliveries):
        """
        Append L{snapstore.state.fleet.Delivery} rows to the hash-chained
        delivery log in one transaction (ids and hashes assigned here).

        @return: a Deferred firing with the stored rows.
        """

    def listDeliveries(device=None, snapName=None, since=None):
        """
        @return: a Deferred firing with the matching delivery rows.
        """

    def verifyDeliveries():
        """
        @return: a Deferred firing with the id of the first bad delivery
            row, or C{None} when the chain is intact.
        """


class ITrafficHistory(Interface):
    """
    The traffic history of the state store: blob bytes served from the
    cache and fetched from upstream per time bucket, summed over every
    node sharing the database (the dashboard's chart).
    """

    def addTraffic(start, fromCache, fromUpstream):
        """
        Add bytes to the bucket beginning at C{start} (POSIX seconds).

        @return: a Deferred firing with C{None}.
        """

    def listTraffic(since):
        """
        @return: a Deferred firing with the
            L{snapstore.state.traffic.TrafficBucket}s starting at or after
            C{since}, oldest first.
        """

    def pruneTraffic(before):
        """
        Forget the buckets starting before C{before}.

        @return: a Deferred firing with how many were removed.
        """


class IPolicyState(Interface):
    """
    The change-control part of the state store (design.md section 9):
    holds, approvals and when each revision was first seen on a channel.
    Pins are L{IStateStore}'s overrides.  Every change is audited and
    announced (kinds C{hold}, C{approval}) to every node.
    """

    def setHold(hold, actor):
        """
        Create or replace the hold of C{hold}'s snap, channel and group.

        @param hold: a L{snapstore.state.policy.Hold}.
        @return: a Deferred firing with the previous hold or C{None}.
        """

    def releaseHold(snapName, channel, group, actor):
        """
        Remove one hold (C{""} for every snap, channel, device).

        @return: a Deferred firing with the removed hold or C{None}.
        """

    def listHolds():
        """
        @return: a Deferred firing with every L{snapstore.state.policy.Hold}.
        """

    def approve(approval, actor):
        """
        Record an L{snapstore.state.policy.Approval}.

        @return: a Deferred firing with it.
        """

    def listApprovals(snapName=None):
        """
        @return: a Deferred firing with the approvals (of one snap).
        """

    def recordChannelRevisions(seen):
        """
        Note revisions seen on channels; the first time kept is never
        moved.

        @param seen: L{snapstore.state.policy.ChannelRevision}s.
        @return: a Deferred firing with C{None}.
        """

    def channelHistory(snapName, channel, architecture):
        """
        @return: a Deferred firing with the L{ChannelRevision}s seen on one
            channel for one architecture, oldest first.
        """
