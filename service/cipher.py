"""Encryption at rest of webhook secrets and webhook URLs (a Slack URL carries its token).

Values are Fernet tokens (AES-128-CBC with HMAC-SHA256, from the ``cryptography``
package) under the keys of ``ECSWATCH_SECRET_KEY``: comma-separated, newest first,
each 32 random bytes in URL-safe base64 (``ecswatch secrets generate-key`` prints
one). The newest key encrypts; every listed key decrypts, so a key is rotated by
putting a new one first, running ``ecswatch secrets rotate-key`` (which re-encrypts
every row under it), then dropping the old one (docs/runbook.md).

Without a key, a local key is derived from the data directory's absolute path and a
warning says so once. That key is for the demo and tests only: anyone who knows the
path can derive it, so it protects nothing (docs/configuration.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.errors import EcswatchError
from service.logging import get_logger

if TYPE_CHECKING:
    from service.config import Settings

log = get_logger(__name__)

KEY_ENV = "ECSWATCH_SECRET_KEY"
#: At most this many keys at once (the newest and the ones still being rotated out).
MAX_KEYS = 8
#: Longest value accepted for encryption (a URL is at most 2048 characters).
MAX_PLAINTEXT_CHARS = 8192

_DERIVED_CONTEXT = b"ecswatch local secret key, not secure:"
_warned: set[str] = set()
_warned_lock = threading.Lock()


class SecretDecryptError(EcswatchError):
    """A stored value that none of the configured keys decrypts (a key was dropped or
    ``ECSWATCH_SECRET_KEY`` differs between processes)."""

    problem_type = "secret-key"
    title = "Stored secret unreadable"


def generate_key() -> str:
    """A new key: 32 random bytes in URL-safe base64 (a Fernet key)."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(value: str) -> tuple[str, ...]:
    """The keys of an ``ECSWATCH_SECRET_KEY`` value, newest first; ValueError names the
    position of a bad one (never its text)."""
    keys = tuple(part.strip() for part in value.split(",") if part.strip())
    if not keys:
        raise ValueError("no key given")
    if len(keys) > MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS} keys")
    for position, key in enumerate(keys, start=1):
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raw = b""
        if len(raw) != 32 or len(key) != 44:
            raise ValueError(
                f"key {position} is not 32 bytes in URL-safe base64 "
                "(`ecswatch secrets generate-key` prints one)"
            )
    return keys


def looks_encrypted(value: str) -> bool:
    """True when ``value`` has the shape of a Fernet token (version byte 0x80, then a
    timestamp, IV, ciphertext and HMAC: at least 73 bytes), whichever key made it."""
    if not value.startswith("gAAAAA"):
        return False
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return len(raw) >= 73 and raw[0] == 0x80


def derived_key(data_dir: Path) -> str:
    """The local key of ``data_dir``: a hash of its absolute path. Not secret."""
    digest = hashlib.sha256(_DERIVED_CONTEXT + str(data_dir.resolve()).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


class SecretCipher:
    """Encrypts with the newest key; decrypts with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a cipher needs at least one key")
        self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys])
        self._newest = Fernet(keys[0].encode("ascii"))

    def encrypt(self, value: str) -> str:
        """The Fernet token of ``value`` under the newest key."""
        if len(value) > MAX_PLAINTEXT_CHARS:
            raise ValueError(f"at most {MAX_PLAINTEXT_CHARS} characters are encrypted")
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The value of a token; :class:`SecretDecryptError` when no key opens it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretDecryptError(
                f"a stored value cannot be decrypted with the keys of {KEY_ENV}"
            ) from exc

    def is_current(self, token: str) -> bool:
        """True when ``token`` is already under the newest key."""
        try:
            self._newest.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted under the newest key (any listed key may open it)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretDecryptError(
                f"a stored value cannot be decrypted with the keys of {KEY_ENV}"
            ) from exc


def cipher_for(settings: Settings) -> SecretCipher:
    """The cipher of ``settings``: its keys, or the data directory's derived key
    (with a warning, once per directory, that it is not secure)."""
    if settings.secret_key is not None:
        return SecretCipher(parse_keys(settings.secret_key.get_secret_value()))
    where = str(settings.data_dir.resolve())
    with _warned_lock:
        first = where not in _warned
        _warned.add(where)
    if first:
        log.warning(
            "secret_key_derived",
            detail=(
                f"no {KEY_ENV}: webhook secrets and URLs are encrypted with a key derived "
                "from the data directory, which is not secure; set a key in production"
            ),
        )
    return SecretCipher([derived_key(settings.data_dir)])
