# -*- test-case-name: tests.test_admin -*-
"""
Operating snapstore: the admin HTTP API and C{/metrics}.

L{snapstore.admin.resource} authenticates, routes and encodes; each area
is one module registering its routes on a L{snapstore.admin.router.Router}
(L{status}, L{overrides}, L{devices}, L{cache}, L{audit}, L{imports});
L{snapstore.admin.service} checks the endpoint's settings and makes its
site; L{snapstore.admin.clientconfig} describes the device setup.  The
composition root (C{snapstore.tap}) builds the areas and registers them.

The C{snapstore} command (L{snapstore.cli}) is the API's client.
"""
