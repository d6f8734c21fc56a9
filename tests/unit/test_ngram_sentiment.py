"""NgramSentiment (hashed n-grams over a lexicon prior), the labelled sample, its evaluation."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import orjson
import pytest

from agents.rooms import state as room_state
from online_models.evaluation import sentiment as eval_sentiment
from online_models.evaluation.sentiment import LABEL_VALUES, load_labelled
from online_models.sentiment import (
    LexiconSentiment,
    NgramSentiment,
    label,
    ngram_features,
)
from streams.contracts import LiveEvent
from streams.simulator import CHECKOUT_COMPLAINTS, COMMENTS, EMOJI

ROOT = Path(__file__).resolve().parents[2]


def pool() -> list[tuple[str, str]]:
    rows = [(text, tone) for (_, tone), texts in COMMENTS.items() for text in texts]
    return rows + [(text, "negative") for text in CHECKOUT_COMPLAINTS]


def self_trained(repeats: int = 30) -> NgramSentiment:
    """A model that self-trained on the simulator's comment pool, with emoji noise."""
    model = NgramSentiment(n_buckets=2**14)
    for round_ in range(repeats):
        for index, (text, _) in enumerate(pool()):
            noisy = text + EMOJI[(index + round_) % len(EMOJI)] if (index + round_) % 5 == 0 \
                else text
            model.predict_one(noisy)
            model.learn_weak(noisy)
    return model


# ---------------------------------------------------------------------------- features


def test_features_are_cjk_1_to_3_grams_and_word_unigrams_bigrams_char_trigrams() -> None:
    assert ngram_features("太贵") == ["太", "贵", "太贵"]
    features = ngram_features("Not good, ok")
    assert {"w:not", "w:good", "b:not good", "c:<no", "c:not", "c:ot>", "w:ok"} <= set(features)
    assert "b:good ok" not in features           # a bigram does not cross a clause break
    assert ngram_features("好👍!?") == ["好", "👍", "!", "?"]
    assert ngram_features("") == [] and ngram_features("...") == []
    assert len(ngram_features("好好好好")) == len(set(ngram_features("好好好好")))


# ---------------------------------------------------------------------------- behaviour


def test_an_untrained_model_is_exactly_the_lexicon() -> None:
    model, lexicon = NgramSentiment(), LexiconSentiment()
    texts = [text for text, _ in pool()] + [text for text, _ in load_labelled()]
    assert all(model.predict_one(t) == lexicon.predict_one(t) for t in texts)
    assert model.learned_share == 0.0


@pytest.mark.parametrize("target", [1.0, -1.0, 0.0])
def test_explicit_labels_move_the_score_towards_them(target: float) -> None:
    model = NgramSentiment(n_buckets=2**12)
    text = "the drop is mid ngl 这波一般般"
    scores = [model.predict_one(text)]
    for _ in range(40):
        model.learn_one(text, target)
        scores.append(model.predict_one(text))
    assert abs(scores[-1] - target) < abs(scores[0] - target) or scores[0] == target
    assert label(scores[-1]) == label(target)
    distances = [abs(s - target) for s in scores[5:]]
    assert all(b <= a + 1e-6 for a, b in pairwise(distances))


def test_learning_generalises_through_shared_ngrams_not_whole_strings() -> None:
    model = NgramSentiment(n_buckets=2**14)
    for _ in range(20):
        model.learn_one("又踩雷了", -1.0)
        model.learn_one("踩雷 again", -1.0)
        model.learn_one("回头客来了", 1.0)
    assert model.predict_one("这次踩雷了") < -0.15 < 0.15 < model.predict_one("老回头客")
    assert model.predict_label("多少钱") == "neutral"   # untouched n-grams: still the lexicon


def test_weak_labels_follow_the_lexicons_confidence_and_leave_the_bias_alone() -> None:
    model = NgramSentiment(n_buckets=2**12)
    assert model.learn_weak("太好看了!") == 1.0
    assert model.learn_weak("质量很差") == -1.0
    assert model.learn_weak("多少钱") == 0.0        # no lexicon cue at all: neutral
    assert model.learn_weak("ok") is None            # a weak cue: not confident
    assert model.learn_weak("") is None and model.learn_weak("...") is None
    assert model.bias == [0.0, 0.0, 0.0] and model.n_weak == 3 == model.n_learned


def test_repeated_weak_labels_stop_once_the_model_is_sure() -> None:
    model = NgramSentiment(n_buckets=2**12)
    learnt = [model.learn_weak("checkout is broken") for _ in range(200)]
    assert learnt[0] == -1.0 and learnt[-1] is None
    assert model.n_weak == learnt.count(-1.0) < 200
    untrained = NgramSentiment(n_buckets=2**12).predict_proba_one("checkout is broken")
    assert model.predict_proba_one("checkout is broken")["negative"] > untrained["negative"]


def test_self_training_on_the_simulator_pool_keeps_every_tone() -> None:
    model = self_trained()
    assert model.n_weak > 0
    assert all(model.predict_label(text) == tone for text, tone in pool())
    for text in COMMENTS["en", "negative"] + COMMENTS["zh", "negative"]:
        assert model.predict_one(text + "😂") < 0
    assert sum(model.predict_proba_one("太好看了").values()) == pytest.approx(1.0)


def test_hashing_is_deterministic_across_processes() -> None:
    """CRC-32, not the per-process salted ``hash``: another hash seed, same predictions."""
    script = ("from tests.unit.test_ngram_sentiment import self_trained; "
              "m = self_trained(3); print([m.predict_one(t) for t in "
              "('太好看了', 'shipping is so slow', '有优惠券吗', 'brand new words')])")
    outputs = {
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, text=True,
                       capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_pickle_keeps_predictions_and_drops_the_cache() -> None:
    model = self_trained(3)
    model.predict_one("cached comment")
    clone = pickle.loads(pickle.dumps(model))
    assert clone._last is None
    texts = [text for text, _ in load_labelled()]
    assert [clone.predict_one(t) for t in texts] == [model.predict_one(t) for t in texts]
    assert clone.model_version == model.model_version == f"ngram-sentiment-1.{model.n_learned}"


def test_memory_is_the_fixed_weight_array() -> None:
    model = NgramSentiment(n_buckets=2**8)
    for index in range(2_000):
        model.learn_one(f"word{index} 字{chr(0x4E00 + index)}", (-1.0, 0.0, 1.0)[index % 3])
    stats = model.stats()
    assert len(model.weights) == 3 * 2**8 and stats["bytes"] == 4 * 3 * 2**8
    assert stats["trained_buckets"] == stats["buckets"] == 2**8


@pytest.mark.parametrize("kwargs", [
    {"n_buckets": 1000}, {"n_buckets": 1}, {"n_buckets": 2**31}, {"learning_rate": 0.0},
    {"l2": -1.0}, {"warmup": -1}, {"weak_weight": -0.5}, {"max_learned_weight": -1.0},
])
def test_invalid_parameters_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        NgramSentiment(**kwargs)


def test_nan_label_is_rejected_and_out_of_range_labels_are_clipped() -> None:
    model = NgramSentiment(n_buckets=2**10)
    with pytest.raises(ValueError):
        model.learn_one("x", math.nan)
    for _ in range(30):
        model.learn_one("超出范围", 7.0)
    assert model.predict_label("超出范围") == "positive"


# ---------------------------------------------------------------------------- the room


def test_room_mood_uses_the_ngram_model_and_self_trains_on_comments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(room_state._sentiment, NgramSentiment)
    # a fresh model: the worker-wide one has already seen other tests' comments
    monkeypatch.setattr(room_state, "_sentiment", NgramSentiment())
    before = room_state._sentiment.n_learned
    room = room_state.RoomState("r-sentiment")
    for index in range(5):
        room.apply(LiveEvent(f"c{index}", "comment", 60_000 + index, "r-sentiment", f"u{index}",
                             text="太好看了!"))
    assert room_state._sentiment.n_learned > before
    assert room.insight(61_000).mood["sentiment"] > 0.15


# ---------------------------------------------------------------------------- labelled sample


def test_labelled_sample_is_well_formed_bilingual_and_not_from_the_simulator() -> None:
    rows = load_labelled()
    texts = [text for text, _ in rows]
    assert len(rows) >= 280 and len(set(texts)) == len(texts)
    assert not set(texts) & {text for text, _ in pool()}
    for tone in LABEL_VALUES:
        in_class = [text for text, t in rows if t == tone]
        assert len(in_class) >= len(rows) // 5
        assert any(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in in_class)
        assert any(text.isascii() for text in in_class)
    raw = (ROOT / "online_models" / "data" / "comments_labelled.tsv").read_text("utf-8")
    assert raw.splitlines()[0] == "text\tlabel"
    assert all(line.count("\t") == 1 for line in raw.splitlines())


def test_loader_names_the_bad_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "online_models" / "data"
    data.mkdir(parents=True)
    (data / "bad.tsv").write_text("text\tlabel\nfine\tpositive\nbroken\tmaybe\n", "utf-8")
    monkeypatch.setattr(eval_sentiment.resources, "files", lambda package: tmp_path / package)
    with pytest.raises(ValueError, match=r"bad.tsv:3"):
        load_labelled("bad.tsv")


def test_evaluation_prints_its_result_as_the_last_json_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    result = eval_sentiment.main(["--stream", "3000", "--orders", "1", "--folds", "3"])
    assert orjson.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["sample"]["comments"] == len(load_labelled())
    for key in ("lexicon", "self_trained", "prequential", "prequential_after_self_training",
                "prequential_lexicon_sentiment", "cross_validated"):
        assert 0.0 < result[key]["macro_f1"] <= result[key]["accuracy"] + 0.05 <= 1.05
    weak = result["self_trained"]["weak_labels"]
    assert sum(weak.values()) == 3000 and weak["positive"] and weak["negative"]
    # Self-training never made the held-out sample worse than the lexicon it started from.
    assert result["self_trained"]["accuracy"] >= result["lexicon"]["accuracy"]
    # The untrained model is the lexicon, so the prequential run starts from it as well.
    assert result["prequential"]["n"] == result["lexicon"]["n"]


def test_cached_analyses_and_logits_give_the_uncached_model_exactly() -> None:
    """The per-text analysis and learned-logit caches change nothing: a model whose caches
    are emptied before every call predicts and learns the same floats."""
    cached, uncached = NgramSentiment(n_buckets=2**12), NgramSentiment(n_buckets=2**12)
    cached.ANALYSES_CACHED = 7  # small: evictions happen
    texts = [text for text, _ in pool()] + ["brand new words", "太好看了"]
    for round_ in range(4):
        for index, text in enumerate(texts):
            variant = text + EMOJI[(round_ + index) % len(EMOJI)] if index % 3 else text
            uncached._clear_caches()
            expected = (uncached.predict_one(variant), uncached.predict_proba_one(variant))
            assert (cached.predict_one(variant), cached.predict_proba_one(variant)) == expected
            uncached._clear_caches()
            assert cached.learn_weak(variant) == uncached.learn_weak(variant)
            if index % 5 == 0:
                cached.learn_one(variant, 1.0)
                uncached._clear_caches()
                uncached.learn_one(variant, 1.0)
    assert cached.weights == uncached.weights and cached.bias == uncached.bias
    assert len(cached._analyses) <= 7
    clone = pickle.loads(pickle.dumps(cached))
    assert clone._analyses == {} and clone._logits is None
    assert [clone.predict_one(t) for t in texts] == [cached.predict_one(t) for t in texts]
