# Snap allow/deny lists (off by default).
#
# A denied snap looks like one the store does not have: absent from find,
# "not found" for info and install, and never downloaded through the proxy.
# Names are snap names; publishers are store usernames or account ids.
# With an allow list set, everything not on it is denied: list the bases
# and snapd too (core, core22, snapd, ...).

deny = []               # e.g. ["spotify", "discord"]
denyPublishers = []     # e.g. ["some-publisher"]
allow = None            # None: no allow list; e.g. ["core22", "snapd", "hello"]
allowPublishers = None  # None: no allow list; e.g. ["canonical"]

from snapstore.rules.access import SnapAccessRule


def rules(env):
    return [SnapAccessRule(deny=deny, denyPublishers=denyPublishers,
                           allow=allow, allowPublishers=allowPublishers)]
