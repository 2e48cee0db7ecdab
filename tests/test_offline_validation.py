"""
The pure parts of validation sets offline (L{snapstore.offline.validationsets});
the end-to-end export, import and serving is
L{tests.test_offline.OfflineEndToEndTests.test_validationSetOffline}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from snapstore.offline.bundle import parseAssertion
from snapstore.offline.validationsets import (
    Requirement,
    ValidationSetError,
    ValidationSetSpec,
    parseSpec,
    requirements,
)
from tests.fakestore.assertions import Assertions
from tests.fakestore.catalogue import Catalogue


class SpecTests(SynchronousTestCase):
    def test_specs(self):
        self.assertEqual(parseSpec("acme/base-set"), ValidationSetSpec("acme", "base-set"))
        self.assertEqual(parseSpec("acme/base-set=3"), ValidationSetSpec("acme", "base-set", 3))
        self.assertEqual(parseSpec("acme/base-set=3").key, ("16", "acme", "base-set"))
        for bad in ("base-set", "acme/", "/x", "acme/Base", "acme/x=0", "acme/x=latest",
                    "ac me/x", "acme/x/y"):
            self.assertRaises(ValidationSetError, parseSpec, bad)


class RequirementTests(SynchronousTestCase):
    def test_fromAssertion(self):
        """
        The C{snaps} list of a validation-set assertion as the fake store
        lays it out (snapd's nested header format); the primary key
        includes the sequence.
        """
        assertions = Assertions(Catalogue())
        assertions.addValidationSet("canonical", "set", 4, [
            {"name": "hello", "id": "a" * 32, "presence": "required", "revision": "10"},
            {"name": "tool", "id": "b" * 32},
            {"name": "bad", "id": "c" * 32, "presence": "invalid"}])
        text = assertions.validationSet("16", "canonical", "set", "latest")
        self.assertEqual(requirements(text), [
            Requirement("hello", "a" * 32, "required", 10),
            Requirement("tool", "b" * 32, "required", None),
            Requirement("bad", "c" * 32, "invalid", None)])
        self.assertEqual(parseAssertion(text).primaryKey, ("16", "canonical", "set", "4"))
        self.assertIsNone(assertions.validationSet("16", "canonical", "set", "5"))

    def test_bad(self):
        self.assertRaises(ValidationSetError, requirements,
                          b"type: validation-set\nsequence: 1\n\nsig")
        self.assertRaises(ValidationSetError, requirements,
                          b"type: validation-set\nsnaps:\n  -\n    revision: 3\n\nsig")
