"""Signed model snapshots: round trips, refusals without unpickling, atomic files, the store."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from online_models import snapshot as snapshot_module
from online_models.sentiment import NgramSentiment
from online_models.snapshot import (
    FORMAT_ID,
    FORMAT_VERSION,
    SnapshotError,
    SnapshotStore,
    load_snapshot,
    save_snapshot,
)

KEY = b"0123456789abcdef0123456789abcdef"
OFFSETS = {"livepulse.live-events:0": 1_200, "livepulse.live-events:3": 7, "a:b:c:1": 0}
COMMENTS = ["太好看了", "发货太慢", "how much?", "love it 😍", "踩雷了", ""]


def trained_model() -> NgramSentiment:
    model = NgramSentiment(n_buckets=2**10)
    for text in COMMENTS * 3:
        model.learn_weak(text)
    model.learn_one("回头客", 1.0)
    return model


def sign(key: bytes, header: dict[str, Any], payload: bytes) -> bytes:
    """A snapshot built by hand, signed like save_snapshot signs (for crafted headers)."""
    header_bytes = json.dumps(header).encode()
    signed = len(header_bytes).to_bytes(4, "big") + header_bytes + payload
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test if anything is unpickled (even if the loader swallowed the error)."""
    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append("unpickled")
        raise AssertionError("pickle.loads was called on an untrusted snapshot")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    yield
    assert not calls, "a refused snapshot was unpickled"


# ---------------------------------------------------------------------------- round trips


def test_round_trip_in_memory_keeps_predictions_and_metadata() -> None:
    model = trained_model()
    created = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    blob = save_snapshot(model, None, key=KEY, model_name="sentiment",
                         version=model.model_version, offsets=OFFSETS, created_at=created)
    restored, meta = load_snapshot(blob, key=KEY, expected_model="sentiment")
    texts = [*COMMENTS, "never seen before 完全没见过"]
    assert [restored.predict_one(t) for t in texts] == [model.predict_one(t) for t in texts]
    assert meta["format"] == FORMAT_ID and meta["format_version"] == FORMAT_VERSION
    assert meta["model"] == "sentiment" and meta["model_version"] == model.model_version
    assert meta["offsets"] == OFFSETS
    assert datetime.fromisoformat(meta["created_at"]) == created
    payload = pickle.dumps(model, protocol=meta["pickle_protocol"])
    assert meta["payload_bytes"] == len(payload)
    assert meta["payload_sha256"] == hashlib.sha256(payload).hexdigest()


def test_round_trip_through_a_file_and_default_metadata(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "model.lpsnap"
    blob = save_snapshot({"a": [1, 2.5, "三"]}, path, key=KEY, model_name="m", version="7",
                         offsets=None)
    assert path.read_bytes() == blob
    for source in (path, str(path), bytearray(blob), memoryview(blob)):
        model, meta = load_snapshot(source, key=KEY, expected_model="m")
        assert model == {"a": [1, 2.5, "三"]} and meta["offsets"] == {}
    age = datetime.now(UTC) - datetime.fromisoformat(meta["created_at"])
    assert 0 <= age.total_seconds() < 60


def test_restored_model_keeps_learning_like_the_original() -> None:
    model = trained_model()
    blob = save_snapshot(model, None, key=KEY, model_name="s", version="1", offsets={})
    restored, _ = load_snapshot(blob, key=KEY, expected_model="s")
    for copy in (model, restored):
        copy.learn_one("又踩雷了", -1.0)
    assert restored.predict_one("踩雷了") == model.predict_one("踩雷了")
    assert restored.n_learned == model.n_learned


# ---------------------------------------------------------------------------- refusals


def flip(blob: bytes, index: int) -> bytes:
    changed = bytearray(blob)
    changed[index] ^= 0x01
    return bytes(changed)


def good_blob() -> bytes:
    return save_snapshot(trained_model(), None, key=KEY, model_name="sentiment", version="1",
                         offsets=OFFSETS)


def test_every_single_bit_region_tampered_is_refused(no_unpickling: None) -> None:
    blob = good_blob()
    header_length = int.from_bytes(blob[:4], "big")
    # length field, header start and end, payload start/middle/end, the tag itself
    for index in (0, 3, 4, 4 + header_length - 1, 4 + header_length, len(blob) // 2,
                  len(blob) - 33, len(blob) - 32, len(blob) - 1):
        with pytest.raises(SnapshotError, match=r"signature mismatch|truncated"):
            load_snapshot(flip(blob, index), key=KEY, expected_model="sentiment")


def test_edited_header_is_refused(no_unpickling: None) -> None:
    blob = good_blob()
    edited = blob.replace(b'"model":"sentiment"', b'"model":"sentimenX"', 1)
    assert edited != blob
    with pytest.raises(SnapshotError, match="signature mismatch"):
        load_snapshot(edited, key=KEY, expected_model="sentimenX")


@pytest.mark.parametrize("keep", [0, 1, 4, 35, 100, -100, -33, -1])
def test_truncated_snapshot_is_refused(no_unpickling: None, keep: int) -> None:
    blob = good_blob()
    with pytest.raises(SnapshotError, match=r"truncated|signature mismatch"):
        load_snapshot(blob[:keep], key=KEY, expected_model="sentiment")


def test_extra_bytes_are_refused(no_unpickling: None) -> None:
    with pytest.raises(SnapshotError, match="signature mismatch"):
        load_snapshot(good_blob() + b"\x00", key=KEY, expected_model="sentiment")


def test_wrong_key_is_refused(no_unpickling: None) -> None:
    with pytest.raises(SnapshotError, match="another key"):
        load_snapshot(good_blob(), key=KEY[:-1] + b"X", expected_model="sentiment")


def test_foreign_model_is_refused_even_when_correctly_signed(no_unpickling: None) -> None:
    with pytest.raises(SnapshotError, match="of model 'sentiment', expected 'recommender'"):
        load_snapshot(good_blob(), key=KEY, expected_model="recommender")


def test_arbitrary_pickle_that_is_not_a_snapshot_is_refused(no_unpickling: None,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "evil.lpsnap"
    path.write_bytes(pickle.dumps({"looks": "like a model"}))
    with pytest.raises(SnapshotError):
        load_snapshot(path, key=KEY, expected_model="sentiment")


def test_signed_but_unsupported_or_inconsistent_headers_are_refused(no_unpickling: None) -> None:
    payload = pickle.dumps([1, 2, 3])
    header = {"format": FORMAT_ID, "format_version": FORMAT_VERSION, "model": "m",
              "model_version": "1", "created_at": "2024-01-01T00:00:00.000+00:00",
              "offsets": {}, "payload_sha256": hashlib.sha256(payload).hexdigest(),
              "payload_bytes": len(payload), "pickle_protocol": 5}
    cases = [
        ({**header, "format_version": FORMAT_VERSION + 1}, "format version"),
        ({**header, "format": "something-else"}, "not a livepulse snapshot"),
        ({**header, "payload_bytes": len(payload) + 1}, "does not match its header"),
        ({**header, "payload_sha256": "0" * 64}, "does not match its header"),
    ]
    for crafted, message in cases:
        with pytest.raises(SnapshotError, match=message):
            load_snapshot(sign(KEY, crafted, payload), key=KEY, expected_model="m")
    header_bytes = b"not json"
    signed = len(header_bytes).to_bytes(4, "big") + header_bytes + payload
    blob = signed + hmac.new(KEY, signed, hashlib.sha256).digest()
    with pytest.raises(SnapshotError, match="not JSON"):
        load_snapshot(blob, key=KEY, expected_model="m")


def test_hand_signed_snapshot_with_a_good_header_loads() -> None:
    """The layout documented in the module is the one the loader reads."""
    payload = pickle.dumps({"w": 1})
    header = {"format": FORMAT_ID, "format_version": FORMAT_VERSION, "model": "m",
              "model_version": "1", "created_at": "2024-01-01T00:00:00.000+00:00",
              "offsets": {"t:0": 5}, "payload_sha256": hashlib.sha256(payload).hexdigest(),
              "payload_bytes": len(payload), "pickle_protocol": 5}
    model, meta = load_snapshot(sign(KEY, header, payload), key=KEY, expected_model="m")
    assert model == {"w": 1} and meta["offsets"] == {"t:0": 5}


class Renamed:
    """A model class that a later build renames."""


def test_payload_that_cannot_be_restored_raises_snapshot_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    blob = save_snapshot(Renamed(), None, key=KEY, model_name="m", version="1", offsets={})
    monkeypatch.delattr(sys.modules[__name__], "Renamed")
    with pytest.raises(SnapshotError, match="cannot restore the 'm' payload"):
        load_snapshot(blob, key=KEY, expected_model="m")


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot read"):
        load_snapshot(tmp_path / "absent.lpsnap", key=KEY, expected_model="m")
    with pytest.raises(SnapshotError, match="key"):
        save_snapshot({}, None, key=b"", model_name="m", version="1", offsets={})
    with pytest.raises(SnapshotError, match="key"):
        load_snapshot(good_blob(), key=b"", expected_model="sentiment")
    with pytest.raises(SnapshotError, match="model_name"):
        save_snapshot({}, None, key=KEY, model_name="", version="1", offsets={})
    for offsets in ({"no-partition": 1}, {"t:x": 1}, {"t:0": -1}, {"t:0": 1.5}, {"t:0": True}):
        with pytest.raises(SnapshotError, match="offset"):
            save_snapshot({}, None, key=KEY, model_name="m", version="1", offsets=offsets)


# ---------------------------------------------------------------------------- files


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.lpsnap"
    first = save_snapshot([1], path, key=KEY, model_name="m", version="1", offsets={})

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(snapshot_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_snapshot([2], path, key=KEY, model_name="m", version="2", offsets={})
    assert path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lpsnap"]


def test_store_keeps_the_last_n_and_serves_the_newest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=3)
    (tmp_path / ".key").write_text("not a snapshot")
    (tmp_path / "recommender.notes.txt").write_text("not a snapshot either")
    blobs = [f"blob {i}".encode() for i in range(7)]
    for blob in blobs:
        store.save("recommender", blob)
        store.save("propensity", blob + b"!")
    assert store.latest("recommender") == blobs[-1]
    assert store.latest("propensity") == blobs[-1] + b"!"
    history = store.history("recommender")
    assert [p.read_bytes() for p in history] == blobs[:-4:-1]
    assert len(list(tmp_path.glob("*.lpsnap"))) == 6
    assert (tmp_path / ".key").exists() and store.latest("leave_risk") is None
    # A new store on the same directory (a restarted worker) continues the sequence.
    again = SnapshotStore(tmp_path, keep=3)
    again.save("recommender", b"after restart")
    assert again.latest("recommender") == b"after restart"
    assert [p.read_bytes() for p in again.history("recommender")][1] == blobs[-1]


def test_store_with_signed_snapshots_end_to_end(tmp_path: Path, no_unpickling: None) -> None:
    store = SnapshotStore(tmp_path / "snapshots", keep=2)
    assert store.latest("sentiment") is None       # directory does not exist yet
    store.save("sentiment", good_blob())
    latest = store.latest("sentiment")
    assert latest is not None
    path = store.history("sentiment")[0]
    path.write_bytes(flip(latest, len(latest) // 2))
    with pytest.raises(SnapshotError):
        load_snapshot(store.latest("sentiment") or b"", key=KEY, expected_model="sentiment")


def test_store_rejects_unsafe_names_and_bad_keep(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for name in ("../escape", "a/b", "", "a.b", "x" * 101):
        with pytest.raises(ValueError, match="snapshot name"):
            store.save(name, b"")
    with pytest.raises(ValueError, match="keep"):
        SnapshotStore(tmp_path, keep=0)
    assert not any(tmp_path.iterdir())


def test_snapshot_files_are_written_with_default_permissions_only(tmp_path: Path) -> None:
    """mkstemp creates 0600 files; the snapshot keeps them private to the worker's user."""
    path = SnapshotStore(tmp_path).save("m", good_blob())
    assert os.stat(path).st_mode & 0o077 == 0


# ------------------------------------------------- restore falls back; the key sits apart


def two_snapshots(store: SnapshotStore) -> list[Path]:
    """An older and a newer valid snapshot of ``sentiment`` (different payloads)."""
    for version in ("old", "new"):
        store.save("sentiment", save_snapshot({"v": version}, None, key=KEY,
                                              model_name="sentiment", version=version))
    return store.history("sentiment")


def test_restore_falls_back_to_the_newest_snapshot_that_verifies(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    newest, older = two_snapshots(store)
    newest.write_bytes(flip(newest.read_bytes(), 60))  # corrupt the newest
    refused: list[tuple[str, str]] = []
    model, header, path = snapshot_module.load_newest(
        store, "sentiment", key=KEY, refused=lambda p, e: refused.append((p.name, e.reason)))
    assert (model, header["model_version"], path) == ({"v": "old"}, "old", older)
    assert refused == [(newest.name, "signature")]


def test_a_forged_newest_snapshot_is_refused_and_never_unpickled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(tmp_path)
    two_snapshots(store)

    class Boom:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    forged = store.save("sentiment", save_snapshot(Boom(), None, key=b"attacker-key" * 3,
                                                   model_name="sentiment", version="9"))
    reasons: list[str] = []
    model, _, path = snapshot_module.load_newest(store, "sentiment", key=KEY,
                                                 refused=lambda p, e: reasons.append(e.reason))
    assert model == {"v": "new"} and path != forged and reasons == ["signature"]
    assert not (tmp_path / "pwned").exists()
    for path in store.history("sentiment"):  # nothing verifies: None, each refusal reported
        path.write_bytes(b"not a snapshot")
    assert snapshot_module.load_newest(store, "sentiment", key=KEY) is None


def test_model_host_restores_the_older_snapshot_logs_and_counts_the_refusal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agents.models import ModelHost
    from agents.stats import EngineMetrics
    from config.settings import Settings

    settings = Settings(data_dir=str(tmp_path), snapshot_key=KEY.decode())
    first = ModelHost(settings)
    first.snapshot()
    first.recommender.learn_one({"session_id": "s", "item_id": "i1", "ts": 1})
    first.snapshot()  # the newest recommender snapshot knows item i1
    newest = first.store.history("recommender")[0]
    newest.write_bytes(newest.read_bytes()[:-1])  # truncated tag
    metrics = EngineMetrics()
    again = ModelHost(settings, metrics)
    with caplog.at_level("WARNING", logger="livepulse.models"):
        restored = again.restore()
    assert restored["recommender"]["file"] != newest.name
    assert restored["recommender"]["skipped_files"][0].startswith(newest.name)
    assert "refused" not in restored["sentiment"]
    assert f"refusing recommender snapshot {newest.name}" in caplog.text
    assert KEY.decode() not in caplog.text

    def refused(model: str, reason: str) -> float | None:
        return metrics.registry.get_sample_value(
            "livepulse_snapshot_refused_total", {"model": model, "reason": reason})

    assert refused("recommender", "signature") == 1.0
    # the next restore on the same metrics (the worker's one registry) counts on the same
    # series; another model and reason get a series of their own
    first.store.history("sentiment")[0].write_bytes(b"not a snapshot")
    ModelHost(settings, metrics).restore()
    assert refused("recommender", "signature") == 2.0
    assert refused("sentiment", "truncated") == 1.0
    assert refused("mf", "signature") is None  # nothing refused: no series


def test_snapshot_key_file_is_outside_the_snapshots_and_private(tmp_path: Path) -> None:
    from agents.models import snapshot_dir, snapshot_key
    from config.settings import Settings

    settings = Settings(data_dir=str(tmp_path))
    key = snapshot_key(settings)
    path = tmp_path / "keys" / "snapshot.key"
    assert len(key) >= 32 and path.read_bytes() == key and snapshot_key(settings) == key
    assert (path.stat().st_mode & 0o777) == 0o600
    assert not list(snapshot_dir(settings).glob(".key"))
    custom = Settings(data_dir=str(tmp_path), snapshot_key_file=str(tmp_path / "k" / "s.key"))
    assert snapshot_key(custom) != key and (tmp_path / "k" / "s.key").exists()


def test_an_old_key_beside_the_snapshots_is_moved_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agents.models import ModelHost, snapshot_key
    from config.settings import Settings

    settings = Settings(data_dir=str(tmp_path))
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    old_key = b"an-old-random-key-0123456789abcdefABCDEF"
    (snapshots / ".key").write_bytes(old_key)
    SnapshotStore(snapshots).save("sentiment", save_snapshot(
        {"v": "before the upgrade"}, None, key=old_key, model_name="sentiment", version="1"))
    with caplog.at_level("WARNING", logger="livepulse.models"):
        host = ModelHost(settings)
    assert host.key == old_key and "moving the snapshot key" in caplog.text
    assert not (snapshots / ".key").exists()
    assert (tmp_path / "keys" / "snapshot.key").read_bytes() == old_key
    found = snapshot_module.load_newest(host.store, "sentiment", key=host.key)
    assert found is not None and found[0] == {"v": "before the upgrade"}
    (snapshots / ".key").write_bytes(b"planted-later-by-someone-else-0123456789")
    assert snapshot_key(settings) == old_key  # the key file wins; the planted one is removed
    assert not (snapshots / ".key").exists()


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    from agents.models import snapshot_key
    from config.settings import Settings

    short = tmp_path / "short.key"
    short.write_text("abc")
    with pytest.raises(SnapshotError, match="under 32 bytes"):
        snapshot_key(Settings(data_dir=str(tmp_path), snapshot_key_file=str(short)))
