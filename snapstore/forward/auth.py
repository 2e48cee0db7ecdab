# -*- test-case-name: tests.test_forward_rules -*-
"""
The forward proxy's password file, for C{Proxy-Authorization: Basic}.

One C{user:hash} line per user; blank lines and C{#} comments are ignored.
Two hash formats are accepted, so an admin can write the file with a tool
at hand:

  - C{$pbkdf2-sha256$ITERATIONS$SALT$HASH} (salt and hash unpadded
    base64), salted and slow; print a line with
    C{python3 -m snapstore.forward.auth USER} (asks for the password).
  - C{{SHA}BASE64} as written by C{htpasswd -s} or
    C{printf %s PASSWORD | openssl dgst -sha1 -binary | base64}: unsalted,
    accepted for compatibility only.

The file is re-read when its modification time changes, so adding a user
needs no restart.  Successful checks are remembered (by a digest of the
credentials, not the password) so that a PBKDF2 hash is computed once per
user and password, not once per request.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import sys
from base64 import b64decode, b64encode
from typing import Optional

from twisted.logger import Logger

PBKDF2_ITERATIONS = 260000


def _b64(data: bytes) -> str:
    return b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return b64decode(text + "=" * (-len(text) % 4))


def hashPassword(password: str, salt: Optional[bytes] = None,
                 iterations: int = PBKDF2_ITERATIONS) -> str:
    """
    The C{$pbkdf2-sha256$...} form of C{password}, with a random salt.
    """
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"$pbkdf2-sha256${iterations}${_b64(salt)}${_b64(digest)}"


def verifyPassword(password: str, stored: str) -> bool:
    """
    Whether C{password} matches a stored hash in one of the accepted
    formats; unknown formats never match.
    """
    encoded = password.encode("utf-8")
    if stored.startswith("{SHA}"):
        expected = _unb64(stored[5:])
        return hmac.compare_digest(hashlib.sha1(encoded).digest(), expected)
    parts = stored.split("$")
    if len(parts) == 5 and parts[0] == "" and parts[1] == "pbkdf2-sha256":
        try:
            iterations = int(parts[2])
            salt, expected = _unb64(parts[3]), _unb64(parts[4])
        except ValueError:
            return False
        actual = hashlib.pbkdf2_hmac("sha256", encoded, salt, iterations)
        return hmac.compare_digest(actual, expected)
    return False


class PasswordFile:
    """
    A password file checked on demand, re-read when it changes.

    @ivar path: the file's path.
    """

    log = Logger()

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime: Optional[float] = None
        self._hashes: dict[str, str] = {}
        self._good: set[bytes] = set()
        self._load()

    def _load(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as error:
            if self._mtime is None:
                raise ValueError(f"cannot read proxy password file {self.path}: {error.strerror}")
            self.log.error("cannot re-read proxy password file {path}: {why}",
                           path=self.path, why=error.strerror)
            return
        if mtime == self._mtime:
            return
        hashes = {}
        with open(self.path, encoding="utf-8") as passwords:
            for number, line in enumerate(passwords, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                user, sep, stored = line.partition(":")
                if not sep or not user:
                    self.log.warn("{path}:{number}: not a user:hash line, ignored",
                                  path=self.path, number=number)
                    continue
                hashes[user] = stored
        self._hashes, self._good, self._mtime = hashes, set(), mtime

    def check(self, user: str, password: str) -> bool:
        """
        Whether C{user} exists and C{password} is theirs.
        """
        self._load()
        stored = self._hashes.get(user)
        if stored is None:
            return False
        key = hashlib.sha256(f"{user}\0{password}\0{stored}".encode("utf-8")).digest()
        if key in self._good:
            return True
        if verifyPassword(password, stored):
            if len(self._good) > 1024:
                self._good.clear()
            self._good.add(key)
            return True
        return False


def main(argv: list[str]) -> int:
    """
    C{python3 -m snapstore.forward.auth USER}: ask for a password twice and
    print the password-file line for it.
    """
    if len(argv) != 1 or ":" in argv[0]:
        print("usage: python3 -m snapstore.forward.auth USER  (appends nothing; "
              "add the printed line to the --proxy-auth-file)", file=sys.stderr)
        return 2
    password = getpass.getpass(f"password for {argv[0]}: ")
    if password != getpass.getpass("again: "):
        print("passwords differ", file=sys.stderr)
        return 1
    print(f"{argv[0]}:{hashPassword(password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
