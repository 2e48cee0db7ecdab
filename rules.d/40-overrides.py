# Revision overrides: serve a pinned revision on a channel.
#
# Nothing to edit here: pins live in the state store and are managed with
#     snapstore override SNAP CHANNEL=REVISION [CHANNEL=REVISION...]
#     snapstore list-overrides SNAP
#     snapstore delete-override SNAP CHANNEL
# Remove this file (and reload) to ignore every pin.

from snapstore.rules.overrides import OverrideRule


def rules(env):
    return [OverrideRule(env.state, env.upstream)]
