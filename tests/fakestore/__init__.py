# -*- test-case-name: tests.test_fakestore -*-
"""
A fake upstream Snap Store for snapstore's tests (store-api.md is its spec).

See C{README.md} in this directory for what C{snap download} does against
it.
"""

from tests.fakestore.store import DeviceSession, FakeStore

__all__ = ["FakeStore", "DeviceSession"]
