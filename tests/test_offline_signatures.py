"""
Tests for L{snapstore.offline.signatures} and L{snapstore.offline.roots}:
assertion signatures checked up to trusted root keys.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from snapstore.offline.roots import CANONICAL_ROOT_ACCOUNT_KEY, trustedRoots
from snapstore.offline.signatures import (
    ChainVerifier,
    SignatureError,
    accountKeyOf,
    loadTrustedKeys,
    splitAssertions,
    verifySignature,
)
from tests.fakestore.assertions import Assertions, formatAssertion, signingKey, \
    testRootAssertion, testRootKey
from tests.fakestore.catalogue import Catalogue

CANONICAL_ROOT = "-CvQKAwRQ5h3Ffn10FILJoEZUXOv6km9FwA80-Rcj-f-6jadQ89VRswHNiEB9Lxk"


def _flip(text: bytes, old: bytes, new: bytes) -> bytes:
    assert old in text
    return text.replace(old, new, 1)


class CanonicalRootTests(SynchronousTestCase):
    """
    The built-in root is snapd's real one: its self-signature, made by
    Canonical, verifies, so the decoding is snapd's.
    """

    def test_selfSignature(self) -> None:
        accountID, key = accountKeyOf(CANONICAL_ROOT_ACCOUNT_KEY)
        self.assertEqual((accountID, key.keyID), ("canonical", CANONICAL_ROOT))
        self.assertEqual(key.key.key_size, 8192)
        verifySignature(CANONICAL_ROOT_ACCOUNT_KEY, key)

    def test_changedContentFails(self) -> None:
        _, key = accountKeyOf(CANONICAL_ROOT_ACCOUNT_KEY)
        changed = _flip(CANONICAL_ROOT_ACCOUNT_KEY, b"since: 2016-04-01", b"since: 2016-04-02")
        error = self.assertRaises(SignatureError, verifySignature, changed, key)
        self.assertEqual(str(error), "the signature does not verify")

    def test_builtIn(self) -> None:
        self.assertEqual(list(trustedRoots()), [CANONICAL_ROOT])


def _run(d: object) -> None:
    result = Deferred.fromCoroutine(d)  # type: ignore[arg-type]
    failures: list = []
    result.addErrback(failures.append)
    if failures:
        failures[0].raiseException()


class ChainTests(SynchronousTestCase):
    """
    L{ChainVerifier} over the signing fake store's assertions.
    """

    def setUp(self) -> None:
        catalogue = Catalogue()
        self.assertions = Assertions(catalogue, signed=True)
        self.roots = loadTrustedKeys([testRootAssertion()], "test")
        self.storeKey = self.assertions.lookup("account-key", [signingKey()[1]])
        self.rootKey = self.assertions.lookup("account-key", [testRootKey()[1]])
        self.extra: dict[tuple[str, tuple[str, ...]], bytes] = {}

    async def find(self, kind: str, key: tuple[str, ...]) -> Optional[bytes]:
        if (kind, key) in self.extra:
            return self.extra[(kind, key)]
        return self.assertions.lookup(kind, list(key))

    def verify(self, text: bytes, roots: Optional[dict] = None) -> None:
        verifier = ChainVerifier(self.roots if roots is None else roots, self.find)
        _run(verifier.verify(text))

    def account(self, signer: Optional[str] = "store") -> bytes:
        return formatAssertion("account", {"account-id": "someone", "display-name": "S",
                                           "timestamp": "2016-01-01T00:00:00Z",
                                           "username": "someone", "validation": "unproven"},
                               signer=signer)

    def test_signedChainVerifies(self) -> None:
        """
        An assertion signed by the store key, whose account-key the test
        root signed, verifies; so do the two account-keys.
        """
        self.assertIsNotNone(self.storeKey)
        self.assertIn(b"sign-key-sha3-384: " + testRootKey()[1].encode(), self.storeKey)
        self.verify(self.account())
        self.verify(self.storeKey)
        self.verify(self.rootKey)

    def test_untrustedRoot(self) -> None:
        """
        Without the test root among the roots (stock trust), the chain ends
        in a key that signs itself and is refused.
        """
        error = self.assertRaises(SignatureError, self.verify, self.account(), trustedRoots())
        self.assertIn(f"key {testRootKey()[1]} signs itself and is not a trusted root",
                      str(error))

    def test_fillerSignature(self) -> None:
        error = self.assertRaises(SignatureError, self.verify, self.account(signer=None))
        self.assertIn("does not verify", str(error))

    def test_changedHeader(self) -> None:
        forged = _flip(self.account(), b"validation: unproven", b"validation: verified")
        error = self.assertRaises(SignatureError, self.verify, forged)
        self.assertIn(f"the signature does not verify with key {signingKey()[1]}", str(error))

    def test_missingKey(self) -> None:
        async def nothing(kind: str, key: tuple[str, ...]) -> None:
            return None

        verifier = ChainVerifier(self.roots, nothing)
        error = self.assertRaises(SignatureError, _run, verifier.verify(self.account()))
        self.assertIn(f"signed by key {signingKey()[1]}, whose account-key is neither",
                      str(error))

    def test_wrongAuthority(self) -> None:
        """
        A key signs only for its own account: an assertion claiming another
        authority-id is refused even though the signature is good.
        """
        text = formatAssertion("account", {"account-id": "x", "timestamp": "t",
                                           "display-name": "x", "username": "x",
                                           "validation": "unproven"}, signer="store")
        text = _flip(text, b"authority-id: canonical", b"authority-id: other")
        error = self.assertRaises(SignatureError, self.verify, text)
        self.assertIn("cannot sign for authority 'other'", str(error))

    def test_keyMismatch(self) -> None:
        """
        An account-key whose body is not the key its header names is
        refused.
        """
        forged = _flip(self.storeKey, signingKey()[0][:40].encode(),
                       testRootKey()[0][:40].encode())
        self.extra[("account-key", (signingKey()[1],))] = forged
        self.assertRaises(SignatureError, self.verify, self.account())


class TrustedKeysFileTests(SynchronousTestCase):
    def test_file(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as keys:
            keys.write(testRootAssertion() + b"\n" + CANONICAL_ROOT_ACCOUNT_KEY)
        self.assertEqual(sorted(trustedRoots(path)), sorted([CANONICAL_ROOT, testRootKey()[1]]))

    def test_split(self) -> None:
        texts = splitAssertions(testRootAssertion() + b"\n" + CANONICAL_ROOT_ACCOUNT_KEY)
        self.assertEqual(texts, [testRootAssertion(), CANONICAL_ROOT_ACCOUNT_KEY])

    def test_damaged(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as keys:
            keys.write(_flip(testRootAssertion(), b"name: test-root", b"name: test-rooT"))
        error = self.assertRaises(SignatureError, trustedRoots, path)
        self.assertIn(f"{path}: an account-key cannot be trusted", str(error))

    def test_missingOrEmpty(self) -> None:
        self.assertIn("cannot read it", str(self.assertRaises(
            SignatureError, trustedRoots, "/nonexistent/keys")))
        path = self.mktemp()
        open(path, "w").close()
        self.assertIn("holds no account-key", str(self.assertRaises(
            SignatureError, trustedRoots, path)))


class TrustedKeysOptionTests(SynchronousTestCase):
    def test_unusableFileStopsStartUp(self) -> None:
        """
        C{--trusted-keys} naming a missing or damaged file is a usage error
        naming the option and the file, before anything starts.
        """
        from twisted.python import usage

        from snapstore.tap import Options

        damaged = self.mktemp()
        with open(damaged, "wb") as keys:
            keys.write(_flip(testRootAssertion(), b"name: test-root", b"name: test-rooT"))
        for path, problem in (("/nonexistent/keys", "cannot read it"),
                              (damaged, "an account-key cannot be trusted")):
            error = self.assertRaises(usage.UsageError, Options().parseOptions,
                                      ["--trusted-keys", path, "--config", "/dev/null",
                                       "--data-dir", self.mktemp()])
            self.assertIn(f"--trusted-keys: {path}: {problem}", str(error))
