# Revision overrides and holds: serve a pinned revision on a channel, keep
# new revisions from held devices (pin > hold > upstream, groups first).
#
# Nothing to edit here: pins and holds live in the state store and are
# managed with
#     snapstore override SNAP CHANNEL=REVISION [CHANNEL=REVISION...] [--group G] [--until TIME]
#     snapstore list-overrides SNAP
#     snapstore delete-override SNAP CHANNEL [--group G]
#     snapstore hold (SNAP | --all) (--for DURATION | --until-approved) [--group G]
#     snapstore holds / release-hold / approve
# Remove this file (and reload) to ignore every pin and hold.

from snapstore.rules.overrides import OverrideRule


def rules(env):
    return [OverrideRule(env.state, env.upstream, clock=env.clock)]
