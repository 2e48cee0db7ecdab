"""
Fleet visibility (docs/architecture.md): what each device runs, device
groups, what a refresh would change, and the record of deliveries.

Nothing here speaks HTTP: the store endpoint feeds it what devices sent and
got (L{inventory}, L{deliveries}), rules ask it for a device's groups
(L{groups}), and the admin API (L{snapstore.admin.fleet}) asks it
questions.
"""
