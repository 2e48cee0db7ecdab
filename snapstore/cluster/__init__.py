"""
Several nodes, one cache: nodes sharing a PostgreSQL state store know each
other (L{membership}), know which node holds or fills which blob
(L{database}), and fill a missing blob from a peer before the uplink
(L{filler}), over a token-guarded peer endpoint (L{peer}).
"""
