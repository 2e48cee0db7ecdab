# Cache policy: what the proxy keeps and for how long.
#
# Blobs (snaps, deltas, resources) are addressed by their sha3-384 and kept
# until evicted for space (--cache-size).  Refresh, info and find answers
# are per device and never cached.  Assertions get a time to live per type
# (seconds; None = until evicted; 0 = not cached).

cacheBlobs = True
assertionTTLs = {
    "snap-revision": None,            # keyed by the blob's digest: never changes
    "account-key": None,              # keyed by the key's fingerprint
    "account": 24 * 3600,             # a publisher's validation can change
    "snap-declaration": 600,          # changes with store permissions
    "validation-set": 600,
}
defaultAssertionTTL = 600

from snapstore.rules.cache import CacheRule


def rules(env):
    return [CacheRule(cacheBlobs=cacheBlobs, assertionTTLs=assertionTTLs,
                      defaultAssertionTTL=defaultAssertionTTL)]
