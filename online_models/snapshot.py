"""Signed, versioned model snapshots: a JSON header, a pickled payload and an HMAC-SHA256 tag.

Layout of a snapshot (all of it covered by the tag)::

    4 bytes   header length H (big-endian)
    H bytes   header: UTF-8 JSON {"format": "livepulse-snapshot", "format_version": 1,
              "model": name, "model_version": ..., "created_at": ISO-8601 UTC,
              "offsets": {"topic:partition": offset, ...}, "payload_sha256": hex,
              "payload_bytes": n, "pickle_protocol": 5}
    n bytes   payload: the pickled model
    32 bytes  HMAC-SHA256(key, everything above)

:func:`load_snapshot` checks the length fields, then the tag with :func:`hmac.compare_digest`,
and only then reads the header and unpickles the payload; a truncated, modified, foreign
(another model's) or differently keyed snapshot raises :class:`SnapshotError` and its payload
is never unpickled. Pickle is only as safe as the key: whoever holds the key can make a worker
run code, so keep it secret (at least 32 random bytes).

:class:`SnapshotStore` keeps the last ``keep`` snapshots of each model in a directory, written
atomically (temporary file, fsync, :func:`os.replace`).

>>> key = b"k" * 32
>>> blob = save_snapshot({"weights": [1, 2]}, None, key=key, model_name="demo", version="3",
...                      offsets={"livepulse.clicks:0": 42})
>>> model, meta = load_snapshot(blob, key=key, expected_model="demo")
>>> model, meta["model_version"], meta["offsets"]
({'weights': [1, 2]}, '3', {'livepulse.clicks:0': 42})
>>> load_snapshot(blob, key=b"x" * 32, expected_model="demo")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
online_models.snapshot.SnapshotError: snapshot signature mismatch: it was modified, ...
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT_ID = "livepulse-snapshot"
FORMAT_VERSION = 1
PICKLE_PROTOCOL = 5
TAG_BYTES = 32                     # HMAC-SHA256
LENGTH_BYTES = 4
MAX_HEADER_BYTES = 1 << 20         # a header is a few hundred bytes; offsets of many partitions
SUFFIX = ".lpsnap"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")


class SnapshotError(ValueError):
    """A snapshot that cannot be trusted or read; it was not unpickled.

    ``reason`` is one of :data:`REFUSAL_REASONS` (a bounded metric label).
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


REFUSAL_REASONS = ("unreadable", "truncated", "signature", "format", "model", "payload",
                   "unpickle", "invalid")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or not key:
        raise SnapshotError("snapshot key must be non-empty bytes (set LIVEPULSE_SNAPSHOT_KEY)")


def _tag(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()


def _check_offsets(offsets: Mapping[str, int] | None) -> dict[str, int]:
    checked: dict[str, int] = {}
    for where, offset in (offsets or {}).items():
        topic, _, partition = str(where).rpartition(":")
        if not topic or not partition.isdigit():
            raise SnapshotError(f"offset key {where!r} is not 'topic:partition'")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise SnapshotError(f"offset of {where!r} must be an int >= 0, got {offset!r}")
        checked[str(where)] = offset
    return checked


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
    >>> write_atomic(target, b"one"); write_atomic(target, b"two"); target.read_bytes()
    b'two'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):   # make the rename durable (not possible everywhere)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_snapshot(model: Any, path_or_none: str | os.PathLike[str] | None, *, key: bytes,
                  model_name: str, version: str, offsets: Mapping[str, int] | None = None,
                  created_at: datetime | None = None) -> bytes:
    """Serialise and sign ``model``; also write it atomically to ``path_or_none`` if given.

    ``offsets`` are the input offsets the model's state covers (``{"topic:partition": next
    offset}``); ``created_at`` defaults to now (UTC). Returns the snapshot bytes.
    """
    _check_key(key)
    if not isinstance(model_name, str) or not model_name:
        raise SnapshotError("model_name must be a non-empty string")
    payload = pickle.dumps(model, protocol=PICKLE_PROTOCOL)
    when = (created_at or datetime.now(UTC)).astimezone(UTC)
    header = {
        "format": FORMAT_ID, "format_version": FORMAT_VERSION, "model": model_name,
        "model_version": str(version), "created_at": when.isoformat(timespec="milliseconds"),
        "offsets": _check_offsets(offsets), "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload), "pickle_protocol": PICKLE_PROTOCOL,
    }
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise SnapshotError(f"snapshot header over {MAX_HEADER_BYTES} bytes (too many offsets)")
    signed = len(header_bytes).to_bytes(LENGTH_BYTES, "big") + header_bytes + payload
    blob = signed + _tag(bytes(key), signed)
    if path_or_none is not None:
        write_atomic(path_or_none, blob)
    return blob


def _read(blob_or_path: bytes | bytearray | memoryview | str | os.PathLike[str]) -> bytes:
    if isinstance(blob_or_path, bytes | bytearray | memoryview):
        return bytes(blob_or_path)
    try:
        return Path(blob_or_path).read_bytes()
    except OSError as error:
        raise SnapshotError(f"cannot read snapshot {os.fspath(blob_or_path)!r}: {error}",
                            "unreadable") from None


def load_snapshot(blob_or_path: bytes | bytearray | memoryview | str | os.PathLike[str], *,
                  key: bytes, expected_model: str) -> tuple[Any, dict[str, Any]]:
    """Verify and restore a snapshot: ``(model, header)``.

    Raises :class:`SnapshotError` (without unpickling anything) when the snapshot is
    truncated, not a snapshot, signed with another key or modified, of an unknown format
    version, or of a model other than ``expected_model``.
    """
    _check_key(key)
    blob = _read(blob_or_path)
    if len(blob) < LENGTH_BYTES + TAG_BYTES:
        raise SnapshotError(f"snapshot truncated or not a snapshot ({len(blob)} bytes)",
                            "truncated")
    header_length = int.from_bytes(blob[:LENGTH_BYTES], "big")
    if header_length > MAX_HEADER_BYTES or LENGTH_BYTES + header_length + TAG_BYTES > len(blob):
        raise SnapshotError("snapshot truncated or not a snapshot (bad header length)",
                            "truncated")
    signed, tag = blob[:-TAG_BYTES], blob[-TAG_BYTES:]
    if not hmac.compare_digest(_tag(bytes(key), signed), tag):
        raise SnapshotError("snapshot signature mismatch: it was modified, truncated or signed "
                            "with another key", "signature")
    # Signed by a key holder from here on; the checks below catch foreign or newer snapshots.
    try:
        header = json.loads(signed[LENGTH_BYTES:LENGTH_BYTES + header_length])
    except ValueError as error:
        raise SnapshotError(f"snapshot header is not JSON: {error}", "format") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_ID:
        raise SnapshotError("not a livepulse snapshot (format id missing)", "format")
    if header.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(f"snapshot format version {header.get('format_version')!r} is not "
                            f"supported (this build reads {FORMAT_VERSION})", "format")
    if header.get("model") != expected_model:
        raise SnapshotError(f"snapshot is of model {header.get('model')!r}, "
                            f"expected {expected_model!r}", "model")
    payload = signed[LENGTH_BYTES + header_length:]
    if len(payload) != header.get("payload_bytes") or \
            hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise SnapshotError("snapshot payload does not match its header (length or sha256)",
                            "payload")
    try:
        model = pickle.loads(payload)
    except Exception as error:   # e.g. a class renamed since the snapshot was taken
        raise SnapshotError(f"cannot restore the {expected_model!r} payload: "
                            f"{type(error).__name__}: {error}", "unpickle") from None
    return model, header


def load_newest(store: SnapshotStore, name: str, *, key: bytes,
                refused: Callable[[Path, SnapshotError], None] | None = None,
                ) -> tuple[Any, dict[str, Any], Path] | None:
    """The newest snapshot of ``name`` in ``store`` that verifies: ``(model, header, path)``.

    Older snapshots are tried in turn when newer ones are refused (corrupt, truncated, forged
    or of another key), so one bad file does not make the model start cold; ``refused`` is
    called with each refused file and its error. None: no snapshot verifies (or none exists).

    >>> import tempfile
    >>> store, key = SnapshotStore(tempfile.mkdtemp()), b"k" * 32
    >>> _ = store.save("m", save_snapshot([1], None, key=key, model_name="m", version="1"))
    >>> _ = store.save("m", b"garbage")
    >>> model, header, path = load_newest(store, "m", key=key,
    ...                                   refused=lambda p, e: print(p.name, e.reason))
    m.0000000002.lpsnap truncated
    >>> model, path.name
    ([1], 'm.0000000001.lpsnap')
    """
    for path in store.history(name):
        try:
            model, header = load_snapshot(path, key=key, expected_model=name)
        except SnapshotError as error:
            if refused is not None:
                refused(path, error)
            continue
        return model, header, path
    return None


class SnapshotStore:
    """The last ``keep`` snapshots of each model, as files in ``directory``.

    Files are ``<name>.<sequence>.lpsnap`` (sequence: 10+ digits, rising), written
    atomically; other files in the directory are ignored. The store holds bytes and does not
    verify them: :func:`load_snapshot` does.

    >>> import tempfile
    >>> store = SnapshotStore(tempfile.mkdtemp(), keep=2)
    >>> for blob in (b"one", b"two", b"three"):
    ...     path = store.save("recommender", blob)
    >>> store.latest("recommender"), [p.name for p in store.history("recommender")]
    (b'three', ['recommender.0000000003.lpsnap', 'recommender.0000000002.lpsnap'])
    >>> store.latest("propensity") is None
    True
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"snapshot name must match {_NAME.pattern}, got {name!r}")

    def _sequenced(self, name: str) -> list[tuple[int, Path]]:
        self._check_name(name)
        pattern = re.compile(rf"{re.escape(name)}\.(\d{{10,}}){re.escape(SUFFIX)}")
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = pattern.fullmatch(path.name)
            if match is not None and path.is_file():
                found.append((int(match[1]), path))
        return sorted(found, reverse=True)

    def history(self, name: str) -> list[Path]:
        """Snapshot files of ``name``, newest first."""
        return [path for _, path in self._sequenced(name)]

    def save(self, name: str, blob: bytes) -> Path:
        """Write ``blob`` as the newest snapshot of ``name``; drop all but the last ``keep``."""
        existing = self._sequenced(name)
        sequence = existing[0][0] + 1 if existing else 1
        path = self.directory / f"{name}.{sequence:010d}{SUFFIX}"
        write_atomic(path, blob)
        for _, old in existing[self.keep - 1:]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return path

    def prune(self, name: str, keep: int = 1) -> list[Path]:
        """Delete all but the newest ``keep`` snapshots of ``name``, and the temporary files
        of its unfinished writes (a writer killed mid-write); return the paths deleted.

        Erasure uses it: once a snapshot without the user is written, no older file of the
        model may stay restorable. Call it with no writer of ``name`` in flight.

        >>> import tempfile
        >>> store = SnapshotStore(tempfile.mkdtemp(), keep=3)
        >>> for blob in (b"one", b"two"):
        ...     path = store.save("recommender", blob)
        >>> _ = (store.directory / ".recommender.0000000003.lpsnap.x1.tmp").write_bytes(b"t")
        >>> [p.name for p in store.prune("recommender")]
        ['recommender.0000000001.lpsnap', '.recommender.0000000003.lpsnap.x1.tmp']
        >>> [p.name for p in store.history("recommender")], store.latest("recommender")
        (['recommender.0000000002.lpsnap'], b'two')
        """
        if keep < 1:
            raise ValueError("keep must be at least 1")
        doomed = [path for _, path in self._sequenced(name)[keep:]]
        if self.directory.is_dir():
            partial = re.compile(rf"\.{re.escape(name)}\.\d{{10,}}{re.escape(SUFFIX)}\..*\.tmp")
            doomed += sorted(p for p in self.directory.iterdir() if partial.fullmatch(p.name))
        deleted = []
        for path in doomed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted.append(path)
        return deleted

    def latest(self, name: str) -> bytes | None:
        """Bytes of the newest snapshot of ``name``, or None if there is none."""
        for path in self.history(name):
            try:
                return path.read_bytes()
            except FileNotFoundError:   # pruned by another writer meanwhile
                continue
        return None

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.directory)!r}, keep={self.keep})"
