# Device limit: how many devices may use this proxy.
#
# A device is counted from its serial (brand/model/serial, learnt from the
# device session it opens through the proxy) or, without one, its address.
# Devices seen within `window` seconds are "connected"; once `limit` of
# them are, a new device is refused with HTTP 403 and the store error
# "device-limit-exceeded", while connected devices carry on.
#
# Edit the two lines below, then reload: systemctl reload snapstore.

limit = None           # None: no limit; e.g. 25 to serve at most 25 devices
window = 24 * 3600     # seconds a device counts as connected after its last call

from snapstore.rules.devices import DeviceLimitRule


def rules(env):
    return [DeviceLimitRule(env.state, env.clock, limit=limit, window=window)]
