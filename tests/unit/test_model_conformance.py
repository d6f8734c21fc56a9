"""One conformance suite for every online model in :data:`online_models.registry.MODELS`.

Each model must: restore from a signed snapshot with identical predictions (and keep learning
identically), handle inputs it never saw, be deterministic for a seed, and keep its memory
under its caps on a long stream (read from its own size hook, not RSS).
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from online_models.registry import MODELS, ModelSpec
from online_models.snapshot import load_snapshot, save_snapshot

KEY = b"conformance-test-key-0123456789ab"
SEED = 11
SHORT_STREAM = 400
FILLED = 0.9   # a saturating bound must reach this share of its cap (evictions may free 10 %)

specs = pytest.mark.parametrize("spec", MODELS, ids=[spec.name for spec in MODELS])


def trained(spec: ModelSpec, seed: int = SEED, n: int = SHORT_STREAM) -> Any:
    model = spec.factory(seed)
    for event in spec.stream(seed, n):
        spec.learn(model, event)
    return model


def predictions(spec: ModelSpec, model: Any, probes: list[Any]) -> list[Any]:
    return [spec.predict(model, probe) for probe in probes]


def test_registry_names_are_unique_and_every_spec_is_complete() -> None:
    names = [spec.name for spec in MODELS]
    assert len(names) == len(set(names)) >= 2
    for spec in MODELS:
        assert spec.probes(SEED) and spec.unseen(SEED)
        assert spec.long_stream > SHORT_STREAM
        assert set(spec.saturates) <= set(spec.bounds(spec.factory(SEED)))


@specs
def test_snapshot_round_trip_gives_identical_predictions(spec: ModelSpec) -> None:
    model = trained(spec)
    probes = spec.probes(SEED) + spec.unseen(SEED)
    blob = save_snapshot(model, None, key=KEY, model_name=spec.name,
                         version=str(getattr(model, "model_version", "1")),
                         offsets={"livepulse.test:0": SHORT_STREAM})
    restored, meta = load_snapshot(blob, key=KEY, expected_model=spec.name)
    assert type(restored) is type(model) and meta["offsets"] == {"livepulse.test:0": SHORT_STREAM}
    assert predictions(spec, restored, probes) == predictions(spec, model, probes)
    # ... and both go on learning the same way.
    for event in spec.stream(SEED + 1, 100):
        spec.learn(model, event)
        spec.learn(restored, event)
    assert predictions(spec, restored, probes) == predictions(spec, model, probes)


@specs
def test_unseen_inputs_are_handled(spec: ModelSpec) -> None:
    fresh, model = spec.factory(SEED), trained(spec)
    for probe in spec.unseen(SEED):
        for candidate in (fresh, model):
            prediction = spec.predict(candidate, probe)
            assert spec.valid(prediction), (spec.name, probe, prediction)


@specs
def test_deterministic_for_a_seed(spec: ModelSpec) -> None:
    probes = spec.probes(SEED) + spec.unseen(SEED)
    first, second = trained(spec), trained(spec)
    assert predictions(spec, first, probes) == predictions(spec, second, probes)
    assert pickle.loads(pickle.dumps(first)).__class__ is first.__class__
    # The stream is what changes the model: a different stream gives other predictions.
    other = trained(spec, seed=SEED + 5)
    assert predictions(spec, other, probes) != predictions(spec, first, probes)


@specs
def test_memory_stays_under_its_caps_on_a_long_stream(spec: ModelSpec) -> None:
    model = spec.factory(SEED)
    peak: dict[str, int] = {}
    check_every = max(1, spec.long_stream // 50)
    for index, event in enumerate(spec.stream(SEED, spec.long_stream), start=1):
        spec.learn(model, event)
        if index % check_every == 0 or index == spec.long_stream:
            for measure, (size, cap) in spec.bounds(model).items():
                assert size <= cap, f"{spec.name}: {measure} {size} over its cap {cap}"
                peak[measure] = max(peak.get(measure, 0), size)
    caps = {measure: cap for measure, (_, cap) in spec.bounds(model).items()}
    for measure in spec.saturates:
        assert peak[measure] >= FILLED * caps[measure], \
            f"{spec.name}: the stream never filled {measure} ({peak[measure]}/{caps[measure]})"
