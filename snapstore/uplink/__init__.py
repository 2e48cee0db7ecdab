"""
The uplink: how snapstore behaves towards its upstream store when the link
is down (stale answers, L{snapstore.uplink.stale}), before devices ask
(follows and prefetch, L{snapstore.uplink.follow}) and when the link is
slow (rate caps, L{snapstore.uplink.rate}).  L{snapstore.uplink.wiring}
fits them into the store parts.
"""
