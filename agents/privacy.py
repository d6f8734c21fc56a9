"""Pseudonymous user ids: the one place that turns a user id into the id stored in history.

A pseudonym is the first 128 bits of HMAC-SHA256(key, user id), as 32 hex characters: the
same user always gets the same pseudonym under one key (history can be joined and counted
per user), and without the key a pseudonym cannot be turned back into the user id, not even
by hashing every plausible id. The key comes from ``LIVEPULSE_PSEUDONYM_KEY``; rotating it
starts new pseudonyms, so old history is no longer linkable to new.

>>> key = b"k" * 32
>>> pseudonymize("u1", key)
'4b3cc1583c6d0617acde108c31b20bc7'
>>> pseudonymize("u1", key) != pseudonymize("u2", key) != pseudonymize("u1", b"other")
True
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from config.settings import Settings

KEY_FILE = ".pseudonym-key"
PSEUDONYM_HEX = 32  # 128 bits: collisions are negligible below ~10^18 users


def pseudonymize(user_id: str, key: bytes) -> str:
    """The stored pseudonym of ``user_id`` under ``key`` (32 lowercase hex characters)."""
    return hmac.digest(key, user_id.encode("utf-8", "surrogatepass"), "sha256").hex()[
        :PSEUDONYM_HEX]


def pseudonym_key(settings: Settings) -> bytes:
    """The key of :func:`pseudonymize`: ``LIVEPULSE_PSEUDONYM_KEY``, or else a random key
    kept in ``<LIVEPULSE_DATA_DIR>/.pseudonym-key`` (created on first use, mode 0600), which
    suits one host only: workers that write the same history must share the setting (settings
    refuse an empty key with ClickHouse or the web server beyond loopback)."""
    if settings.pseudonym_key:
        return settings.pseudonym_key.encode()
    path = Path(settings.data_dir) / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    tmp = path.with_name(f"{KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    try:
        os.link(tmp, path)  # atomic: exactly one process's key wins
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        tmp.unlink()
    return key
