# -*- test-case-name: tests.test_admin -*-
"""
Operating snapstore: the admin HTTP API and C{/metrics}
(L{snapstore.admin.api}, assembled by L{snapstore.admin.service}), the
metric objects every part counts in (L{snapstore.admin.metrics}), the
per-request access log (L{snapstore.admin.access}), log formats
(L{snapstore.admin.logs}) and the device setup (L{snapstore.admin.clientconfig}).

The C{snapstore} command (L{snapstore.cli}) is the API's client.
"""
