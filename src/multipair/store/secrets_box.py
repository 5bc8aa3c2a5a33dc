"""Secrets at rest: AES-256-GCM under one master key (DESIGN.md "Guarantees", "Secrets").

Rules this module keeps:

- The master key is 32 random bytes, given as base64 (``MULTIPAIR_MASTER_KEY``)
  or in a file (``--master-key-file``) that only its owner may read;
  ``multipair keygen`` makes one with :mod:`secrets`. :class:`MasterKey`
  never shows the key in ``repr`` or ``str``; :meth:`MasterKey.fingerprint`
  is what logs and ops compare.
- A sealed value is ``v1:`` + base64(nonce || ciphertext || tag) with a fresh
  random 12-byte nonce per seal. A 96-bit random nonce stays safe for far
  more seals than a lane makes (one per pairing or key roll).
- The associated data binds a value to its lane and field
  (:func:`lane_aad`), so a sealed value copied to another lane, or into
  another field, does not open.
- A value that does not open raises :class:`CryptoError` here; the store turns
  it into :class:`ConfigurationError` naming the lane: a wrong master key is
  a configuration fault and must stop the lane, never lead to a silent
  re-pair.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import os
import secrets
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from multipair.exceptions import ConfigurationError, CryptoError

__all__ = [
    "KEY_BYTES",
    "SEALED_PREFIX",
    "MasterKey",
    "keygen_main",
    "lane_aad",
]

KEY_BYTES: Final = 32
SEALED_PREFIX: Final = "v1:"
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16


def lane_aad(instance_id: str, field: str) -> bytes:
    """The associated data that binds a sealed value to one lane and one profile field."""
    return f"multipair/v1|lane={instance_id}|field={field}".encode()


class MasterKey:
    """The service's master key (32 bytes); seals and opens secrets with AES-256-GCM."""

    __slots__ = ("_aead", "_fingerprint", "_key")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ConfigurationError(f"the master key must be exactly {KEY_BYTES} bytes")
        self._key = key
        self._aead = AESGCM(key)
        self._fingerprint = hashlib.sha256(b"multipair-master-key:" + key).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"MasterKey(fingerprint={self._fingerprint!r})"

    __str__ = __repr__

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_base64(cls, text: str | bytes, *, source: str = "MULTIPAIR_MASTER_KEY") -> MasterKey:
        """Decode standard or URL-safe base64 of 32 bytes; surrounding whitespace is ignored.

        ``source`` names where the text came from in the error (never the text).
        """
        raw = text.encode("ascii", "replace") if isinstance(text, str) else text
        raw = raw.strip().replace(b"-", b"+").replace(b"_", b"/")
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"{source} is not base64 (make one with `multipair keygen`)"
            ) from None
        if len(key) != KEY_BYTES:
            raise ConfigurationError(
                f"{source} must be base64 of {KEY_BYTES} bytes, it decodes to {len(key)} bytes"
            )
        return cls(key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MasterKey:
        """Read a key file holding the base64 text (as ``multipair keygen`` writes it).

        On POSIX systems the file must be readable by its owner only (``0600``
        or ``0400``, as ``multipair keygen`` makes it): a key file that group
        or others may read is refused, naming the ``chmod`` that fixes it.
        The mode is checked on the file as opened, so it cannot change in between.
        """
        try:
            with Path(path).open("rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise ConfigurationError(
                        f"master key file {path} may be read by group or others "
                        f"(mode {stat.S_IMODE(mode):04o}); make it private to its owner: "
                        f"chmod 600 {path}"
                    )
                text = handle.read()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read master key file {path}: {exc.strerror}"
            ) from None
        return cls.from_base64(text, source=f"master key file {path}")

    def fingerprint(self) -> str:
        """12 hex digits that identify the key without revealing it (for logs and ops)."""
        return self._fingerprint

    def seal(self, plaintext: bytes, *, aad: bytes) -> str:
        """Encrypt and authenticate ``plaintext``; ``aad`` must be given again to open it."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, aad)
        return SEALED_PREFIX + base64.b64encode(sealed).decode("ascii")

    def open(self, sealed: str | bytes, *, aad: bytes) -> bytes:
        """Decrypt a value from :meth:`seal`.

        Raises :class:`CryptoError` when the value is not in the sealed format,
        or when it does not open: wrong key, other ``aad`` (another lane or
        field), or tampered.
        """
        text = sealed.decode("ascii", "replace") if isinstance(sealed, bytes) else sealed
        if not text.startswith(SEALED_PREFIX):
            raise CryptoError("sealed value has an unknown format (expected 'v1:')")
        try:
            blob = base64.b64decode(text[len(SEALED_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise CryptoError("sealed value is not valid base64") from None
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise CryptoError("sealed value is too short")
        try:
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise CryptoError("sealed value does not open with this master key") from None

    def to_base64(self) -> str:
        """The key as base64 text, for ``multipair keygen`` only. Never log it."""
        return base64.b64encode(self._key).decode("ascii")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MasterKey) and secrets.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self._fingerprint)


def keygen_main(argv: Sequence[str] | None = None) -> int:
    """``multipair keygen [--output FILE]``: print (or write) a new master key as base64.

    With ``--output`` the file is created with mode 0600 and never
    overwritten; without it the key goes to standard output, one line.
    Returns the exit code.
    """
    parser = argparse.ArgumentParser(
        prog="multipair keygen",
        description="Print a new random master key (base64 of 32 bytes).",
    )
    parser.add_argument(
        "--output", type=Path, help="write the key to this new file (mode 0600) instead"
    )
    args = parser.parse_args(argv)
    text = MasterKey.generate().to_base64() + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"multipair keygen: {args.output} exists; not overwriting", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"multipair keygen: cannot create {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)
    return 0
