# -*- test-case-name: tests.test_fakestore -*-
"""
A fake upstream Snap Store for snapstore's tests (store-api.md is its spec).

L{FakeStore} listens on two loopback ports, an API and a CDN, serves a
catalogue built with C{addSnap}/C{addRevision}/C{release}, records every
request, and can be told to fail in the ways a real store and CDN do.

Stock C{snap download} (Debian snapd 2.57.6) run with
C{SNAPPY_FORCE_API_URL=<apiURL>} does, in order: C{POST /v2/snaps/refresh}
(one C{download} action), C{GET} of C{download.url} on the API (302),
C{GET} on the CDN (writes C{<name>_<rev>.snap.partial}, checks the sha3-384,
renames it to C{<name>_<rev>.snap}), then C{GET /v2/assertions/} for
C{snap-revision}, C{snap-declaration} and C{account-key}; it exits 1 with
C{error: cannot fetch snap signatures/assertions: ... failed signature
verification ...} because it trusts only Canonical, keeping the complete
C{.snap} and an empty C{.assert}.  Details, headers and fault behaviour are
in C{README.md} next to this file.
"""

from tests.fakestore.store import DeviceSession, FakeStore

__all__ = ["FakeStore", "DeviceSession"]
