"""
Change control (design.md section 9): scoped and expiring pins, cool-down
and approval holds, and the per-device decision between them and upstream.

Nothing here speaks HTTP: the override rule (L{snapstore.rules.overrides})
applies the decisions to refresh results and C{info} channel maps, the
admin routes (L{snapstore.admin.policy}) and the command
(L{snapstore.policycli}) manage the rows kept by L{snapstore.state.policy}.
"""
