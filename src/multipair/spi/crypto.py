"""SPI cryptography (PROTOCOL.md §3), exactly as the terminals expect it.

Rules this module keeps:

- AES-256-CBC with a zero IV and PKCS#7 over the UTF-8 inner JSON (§3.1). The
  zero IV is the protocol's, not our choice; it makes encryption deterministic
  (§3.8), which is why the HMAC, not the ciphertext, carries integrity.
- HMAC-SHA256 over the ``enc`` *text* as it stands in the envelope, put on the
  wire in upper case (§3.2), and compared in constant time.
- Diffie-Hellman over RFC 3526 group 14 (§3.3) with private keys drawn from
  :mod:`secrets`, uniform in [2, P-2] (§3.4, §13.5: never the reference
  client's ``P >> k`` keys). A peer's public value outside [2, P-2] is refused.
- Key derivation (§3.5), key rolling (§3.6) and the confirmation code (§3.7).

Keys travel as hex strings of either case, as the protocol writes them.
Hex is read strictly: ASCII ``0-9``, ``a-f``, ``A-F`` and nothing else, so no
whitespace, ``0x``, ``_`` or non-ASCII digits (Python's ``int(text, 16)`` and
``bytes.fromhex`` accept some of those; a peer must not be able to smuggle
two spellings of one value past us).
:class:`Secrets` never shows its keys in ``repr``; use :meth:`Secrets.fingerprint`
in logs (§13.15: not the last hex digits, which leak key bits).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import re
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from multipair.exceptions import CryptoError

__all__ = [
    "DH_G",
    "DH_P",
    "ZERO_IV",
    "Secrets",
    "aes_decrypt",
    "aes_encrypt",
    "confirmation_code",
    "dh_public_key",
    "dh_secret_to_key",
    "dh_shared_secret",
    "generate_private_key",
    "hex_to_bytes",
    "hmac_sha256_hex",
    "hmac_verify",
    "int_to_hex",
    "parse_public_key",
    "roll_key",
    "sha256_hex",
]

# RFC 3526 group 14, generator 2 (PROTOCOL.md §3.3, Appendix A).
DH_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
DH_G = 2
ZERO_IV = bytes(16)
_KEY_HEX_DIGITS = 64
_SECRET_HEX_DIGITS = 512  # §3.5: the DH secret is left-padded to 256 bytes
# A DH public value is below P (512 hex digits); leading zeros are allowed but
# bounded, so a peer cannot make us parse a megabyte of digits.
_MAX_PUBLIC_HEX_DIGITS = 1024
_HEX = re.compile(r"[0-9A-Fa-f]*")


def hex_to_bytes(text: str, *, what: str = "hex") -> bytes:
    """Decode hex of either case; raise :class:`CryptoError` on anything else.

    Strict: an even number of ASCII hex digits, nothing else (``bytes.fromhex``
    alone would take spaces).
    """
    if not isinstance(text, str) or len(text) % 2 or not _HEX.fullmatch(text):
        raise CryptoError(f"{what} is not valid hex")
    return bytes.fromhex(text)


def _key_bytes(key_hex: str) -> bytes:
    key = hex_to_bytes(key_hex, what="key")
    if len(key) != 32:
        raise CryptoError(f"key must be 32 bytes (64 hex digits), got {len(key)} bytes")
    return key


@dataclass(frozen=True, slots=True)
class Secrets:
    """The pair of keys a POS and a terminal share after pairing (§4.7).

    Both are 64 hex digits; case is kept as received (the JS client writes
    lower case after pairing and upper case after rolling) and ignored when
    the keys are used.
    """

    enc_key: str
    hmac_key: str

    def __post_init__(self) -> None:
        _key_bytes(self.enc_key)
        _key_bytes(self.hmac_key)

    def __repr__(self) -> str:
        return f"Secrets(fingerprint={self.fingerprint()!r})"

    __str__ = __repr__

    def fingerprint(self) -> str:
        """A short, non-reversible tag for logs: 12 hex digits of SHA-256 over both keys."""
        material = (self.enc_key.upper() + ":" + self.hmac_key.upper()).encode()
        return hashlib.sha256(b"multipair-fingerprint:" + material).hexdigest()[:12]

    def rolled(self) -> Secrets:
        """The next keys after ``request_use_next_keys`` (§3.6, §5.7)."""
        return Secrets(enc_key=roll_key(self.enc_key), hmac_key=roll_key(self.hmac_key))

    def same_as(self, other: Secrets) -> bool:
        """True when both keys are equal, whatever their hex case."""
        return _hmac.compare_digest(
            self.enc_key.upper().encode(), other.enc_key.upper().encode()
        ) and _hmac.compare_digest(self.hmac_key.upper().encode(), other.hmac_key.upper().encode())


def aes_encrypt(key_hex: str, plaintext: bytes) -> bytes:
    """AES-256-CBC, zero IV, PKCS#7 (a full block is added to aligned input)."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(_key_bytes(key_hex)), modes.CBC(ZERO_IV)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def aes_decrypt(key_hex: str, ciphertext: bytes) -> bytes:
    """Inverse of :func:`aes_encrypt`; bad length or padding raises :class:`CryptoError`."""
    if not ciphertext or len(ciphertext) % 16:
        raise CryptoError("ciphertext length is not a positive multiple of 16 bytes")
    decryptor = Cipher(algorithms.AES(_key_bytes(key_hex)), modes.CBC(ZERO_IV)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise CryptoError("bad PKCS#7 padding") from exc


def hmac_sha256_hex(key_hex: str, text: str) -> str:
    """HMAC-SHA256 of ``text`` (the ``enc`` hex as sent), upper-case hex (§3.2)."""
    mac = crypto_hmac.HMAC(_key_bytes(key_hex), hashes.SHA256())
    mac.update(text.encode("ascii", errors="strict"))
    return mac.finalize().hex().upper()


def hmac_verify(key_hex: str, text: str, received: str, *, strict_case: bool = False) -> bool:
    """Check a received ``hmac`` against ``text`` in constant time.

    ``strict_case`` reproduces the JS client, which only accepts upper case;
    the terminal side compares case-insensitively (§3.2).
    """
    try:
        expected = hmac_sha256_hex(key_hex, text).encode("ascii")
        # Encode before upper-casing: str.upper maps some non-ASCII characters
        # to hex digits ('\ufb00' becomes 'FF'), which would make the
        # signature malleable.
        candidate = received.encode("ascii")
    except UnicodeEncodeError:
        return False
    if not strict_case:
        candidate = candidate.upper()
    return _hmac.compare_digest(expected, candidate)


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as lower-case hex."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize().hex()


def int_to_hex(value: int) -> str:
    """Unpadded lower-case hex of a non-negative integer, as JS writes ``B``."""
    return format(value, "x")


def parse_public_key(text: object) -> int:
    """Read a peer's DH public value (unsigned hex) and check it is in [2, P-2] (§13.5)."""
    if not isinstance(text, str) or not text:
        raise CryptoError("DH public value is missing or not a string")
    if len(text) > _MAX_PUBLIC_HEX_DIGITS:
        raise CryptoError(f"DH public value is longer than {_MAX_PUBLIC_HEX_DIGITS} hex digits")
    if not _HEX.fullmatch(text):
        # int(text, 16) would also take " 0x1f", "1_f" and non-ASCII digits.
        raise CryptoError("DH public value is not plain hex (only 0-9, a-f, A-F)")
    value = int(text, 16)
    if not 2 <= value <= DH_P - 2:
        raise CryptoError("DH public value is outside [2, P-2]")
    return value


def generate_private_key() -> int:
    """A fresh DH private key, uniform in [2, P-2], from the OS CSPRNG."""
    return secrets.randbelow(DH_P - 3) + 2


def dh_public_key(private_key: int, *, p: int = DH_P, g: int = DH_G) -> int:
    """``g^x mod p``."""
    return pow(g, private_key, p)


def dh_shared_secret(their_public: int, private_key: int, *, p: int = DH_P) -> int:
    """``their_public^x mod p``."""
    return pow(their_public, private_key, p)


def dh_secret_to_key(shared_secret: int) -> str:
    """§3.5: hex, pad to 512 digits, hex-decode, SHA-256; lower-case hex as JS returns."""
    digits = format(shared_secret, "X")
    if len(digits) % 2:
        digits = "0" + digits
    digits = digits.rjust(_SECRET_HEX_DIGITS, "0")
    return sha256_hex(bytes.fromhex(digits))


def roll_key(key_hex: str) -> str:
    """§3.6: the next key is SHA-256 of the current key's bytes, upper-case hex."""
    return sha256_hex(_key_bytes(key_hex)).upper()


def confirmation_code(key_check_hmac: str) -> str:
    """§3.7: the first 6 characters of the terminal's ``key_check`` hmac."""
    return key_check_hmac[:6].upper()
