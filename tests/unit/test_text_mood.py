"""Comment tokenising, the bilingual sentiment model and the per-room mood window."""

from __future__ import annotations

import pickle
from itertools import pairwise

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_models.sentiment import NEUTRAL_THRESHOLD, LexiconSentiment, MoodWindow, label
from online_models.text import CHINESE_STOP_WORDS, keywords, tokenize
from streams.simulator import CHECKOUT_COMPLAINTS, COMMENTS, EMOJI


@pytest.fixture
def model() -> LexiconSentiment:
    return LexiconSentiment()


def pool() -> list[tuple[str, str]]:
    """(text, tone) for every simulator comment; checkout complaints are negative."""
    rows = [(text, tone) for (_, tone), texts in COMMENTS.items() for text in texts]
    return rows + [(text, "negative") for text in CHECKOUT_COMPLAINTS]


# ---------------------------------------------------------------------------- text


def test_tokenize_english_words_are_lower_cased_with_apostrophes_kept() -> None:
    assert tokenize("Don't LOVE it, can\u2019t wait...") == ["don't", "love", "it", "can't", "wait"]


def test_tokenize_splits_cjk_runs_into_bigrams_and_keeps_lone_characters() -> None:
    assert tokenize("太好看了") == ["太好", "好看", "看了"]
    assert tokenize("冲! 好") == ["冲", "好"]
    assert tokenize("颜色ok吗") == ["颜色", "ok", "吗"]


def test_tokenize_keeps_emoji_drops_punctuation_and_unifies_emoji_variants() -> None:
    assert tokenize("❤❤️ 👍🏽!!! ?? ...") == ["❤️", "❤️", "👍"]
    assert tokenize("!?,.\u3002\uff0c\uff01") == []   # full-width punctuation too


def test_keywords_drop_stop_words_numbers_and_repeats() -> None:
    assert keywords("The color is SO pretty and the color fits, 99 dollars") == [
        "color", "pretty", "fits", "dollars"]
    assert keywords("it's the host's pick") == ["host", "pick"]


def test_keywords_drop_chinese_function_bigrams_but_keep_modified_words() -> None:
    words = keywords("这个颜色太好看了, 质量很差")
    assert "颜色" in words and "好看" in words and "很差" in words
    assert not {"这个", "个颜", "看了", "量很"} & set(words)


@pytest.mark.parametrize(("text", "expected"), [
    # the character pairs of issue 19 (少钱, 色绝, 候发) are gone: words or nothing
    ("多少钱?", []),
    ("这个颜色绝了", ["颜色"]),
    ("什么时候发货", ["发货"]),
    ("有优惠券吗", ["优惠券"]),
    ("性价比超高", ["性价比", "超高"]),
    ("尺码偏大吗", ["尺码", "偏大"]),
    ("支付一直转圈", ["支付", "转圈"]),
    ("冲", ["冲"]),
    ("的", []),
])
def test_chinese_keywords_are_dictionary_words(text: str, expected: list[str]) -> None:
    assert keywords(text) == expected


def test_chinese_keywords_never_straddle_a_word_boundary() -> None:
    pairs = {"少钱", "色绝", "候发", "么时", "优惠", "惠券", "价比"}
    for (language, _), texts in COMMENTS.items():
        for text in texts:
            words = keywords(text)
            assert not pairs & set(words), (text, words)
            if language == "zh":
                cjk = [w for w in words if not w.isascii()]
                assert all(w not in CHINESE_STOP_WORDS for w in cjk)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_tokenises_and_scores_within_bounds(text: str) -> None:
    tokens, words = tokenize(text), keywords(text)
    assert all(tokens) and len(words) == len(set(words))
    assert -1.0 <= LexiconSentiment().predict_one(text) <= 1.0


# ---------------------------------------------------------------------------- sentiment


@pytest.mark.parametrize("text", [
    "love this!", "so pretty", "great quality", "amazing deal 😍", "can't wait",
    "太好看了", "好喜欢", "质量真不错", "性价比超高", "主播推荐的都很好用", "❤️🔥",
])
def test_positive_comments_score_above_zero(model: LexiconSentiment, text: str) -> None:
    assert model.predict_one(text) > 0
    assert model.predict_label(text) == "positive"


@pytest.mark.parametrize("text", [
    "too expensive", "this is a scam", "fake!!", "shipping is so slow", "mine broke",
    "质量很差", "太贵了吧", "坏了", "发货太慢", "骗人的假货", "付款失败", "别买", "🙄😡",
])
def test_negative_comments_score_below_zero(model: LexiconSentiment, text: str) -> None:
    assert model.predict_one(text) < 0
    assert model.predict_label(text) == "negative"


@pytest.mark.parametrize(("positive", "negated"), [
    ("good", "not good"), ("worth it", "not worth it"), ("love it", "don't love it"),
    ("好看", "不好看"), ("喜欢", "不喜欢"), ("满意", "没有很满意"), ("值得", "别说值得"),
])
def test_negation_flips_a_positive(model: LexiconSentiment, positive: str, negated: str) -> None:
    assert model.predict_one(positive) > 0 > model.predict_one(negated)


def test_negated_negative_turns_mildly_positive(model: LexiconSentiment) -> None:
    assert 0 < model.predict_one("not bad") < model.predict_one("good")


def test_intensifiers_and_exclamation_strengthen(model: LexiconSentiment) -> None:
    assert model.predict_one("very good") > model.predict_one("good")
    assert model.predict_one("good!") > model.predict_one("good")
    assert model.predict_one("太贵") < model.predict_one("贵") < 0
    assert model.predict_one("好美") > model.predict_one("美") > 0      # 好 as intensifier


def test_clause_after_but_dominates(model: LexiconSentiment) -> None:
    assert model.predict_one("looks nice but the quality is terrible") < 0
    assert model.predict_one("好看但是太贵了") < 0
    assert model.predict_one("有点贵但是质量很好") > 0


def test_cheap_depends_on_context(model: LexiconSentiment) -> None:
    assert model.predict_one("looks cheap") < 0 < model.predict_one("so cheap!")


@pytest.mark.parametrize("text", [
    "how much?", "is there a discount code?", "what size are you wearing?", "多少钱?",
    "有没有黑色", "什么时候发货", "这个是什么材质", "好不好用啊", "",
])
def test_neutral_questions_stay_near_zero(model: LexiconSentiment, text: str) -> None:
    assert abs(model.predict_one(text)) < NEUTRAL_THRESHOLD
    assert model.predict_label(text) == "neutral"


def test_label_thresholds_are_symmetric() -> None:
    assert label(NEUTRAL_THRESHOLD) == "positive"
    assert label(-NEUTRAL_THRESHOLD) == "negative"
    assert label(NEUTRAL_THRESHOLD / 2) == label(-NEUTRAL_THRESHOLD / 2) == "neutral"


def test_simulator_pool_agrees_with_its_tones(model: LexiconSentiment) -> None:
    rows = pool()
    agree = sum(model.predict_label(text) == tone for text, tone in rows)
    assert agree / len(rows) >= 0.8
    assert all(model.predict_one(text) < 0 for text in CHECKOUT_COMPLAINTS)
    # The simulator appends emoji; a laughing face (mockery as often as joy) must not flip one.
    for text in COMMENTS["en", "negative"] + COMMENTS["zh", "negative"]:
        assert model.predict_one(text + "😂") < 0


@pytest.mark.parametrize("target", [1.0, -1.0])
def test_learn_one_moves_the_score_towards_the_label(model: LexiconSentiment,
                                                     target: float) -> None:
    text = "the drop is mid ngl"
    scores = [model.predict_one(text)]
    for _ in range(30):
        model.learn_one(text, target)
        scores.append(model.predict_one(text))
    assert all(abs(b - target) < abs(a - target) for a, b in pairwise(scores))
    assert label(scores[-1]) == label(target)
    assert model.n_learned == 30


def test_learning_a_new_token_generalises_to_other_comments(model: LexiconSentiment) -> None:
    for _ in range(50):
        model.learn_one("this is mid", -1.0)
        model.learn_one("this is great", 1.0)
    assert model.weight("mid") < 0
    assert model.predict_one("honestly mid") < model.predict_one("honestly") - NEUTRAL_THRESHOLD


def test_learning_keeps_the_lexicon_orientation(model: LexiconSentiment) -> None:
    for _ in range(200):
        model.learn_one("great", -1.0)
    assert model.prior_weight >= 0
    assert model.predict_one("great") < 0     # learnt: tokens can override the prior


def trained() -> LexiconSentiment:
    model = LexiconSentiment()
    values = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}
    for _ in range(3):
        for text, tone in pool():
            model.learn_one(text, values[tone])
    return model


def test_snapshot_round_trip_gives_identical_predictions() -> None:
    model = trained()
    restored = LexiconSentiment.from_dict(orjson.loads(orjson.dumps(model.to_dict())))
    texts = [text for text, _ in pool()] + ["unseen words 好评"]
    assert [restored.predict_one(t) for t in texts] == [model.predict_one(t) for t in texts]
    assert restored.to_dict() == model.to_dict()


def test_model_pickles() -> None:
    model = trained()
    clone = pickle.loads(pickle.dumps(model))
    texts = [text for text, _ in pool()]
    assert [clone.predict_one(t) for t in texts] == [model.predict_one(t) for t in texts]
    clone.learn_one("new comment", 1.0)
    assert clone.n_learned == model.n_learned + 1


def test_vocabulary_cap_is_respected_and_frequent_tokens_survive() -> None:
    cap = 40
    model = LexiconSentiment(max_vocab=cap)
    for i in range(2_000):
        model.learn_one(f"good token{i} other{i}", 1.0)
        assert len(model) <= cap
    assert model.weight("good") > 0          # seen in every comment, never evicted
    assert model.weight("token0") == 0.0     # seen once, long ago
    assert len(model.to_dict()["weights"]) <= cap


def test_invalid_vocabulary_cap_is_rejected() -> None:
    with pytest.raises(ValueError):
        LexiconSentiment(max_vocab=0)


# ---------------------------------------------------------------------------- mood window


def test_mood_window_summary_matches_the_comments_in_the_window() -> None:
    mood = MoodWindow(window_s=300)
    comments = [(1_000, 0.8, ["颜色", "好看"]), (5_000, -0.6, ["太贵"]),
                (9_000, 0.05, ["颜色"]), (200_000, 0.3, ["颜色", "尺码"])]
    for ts, score, words in comments:
        mood.add(ts, score, words)
    summary = mood.summary(200_000)
    scores = [score for _, score, _ in comments]
    assert summary["comments"] == len(comments)
    assert summary["sentiment"] == round(sum(scores) / len(scores), 3)
    assert summary["positive_share"] == round(sum(s >= NEUTRAL_THRESHOLD for s in scores) / 4, 3)
    assert summary["negative_share"] == round(sum(s <= -NEUTRAL_THRESHOLD for s in scores) / 4, 3)
    assert summary["keywords"][0] == {"word": "颜色", "count": 3}
    assert {k["word"] for k in summary["keywords"]} == {"颜色", "好看", "太贵", "尺码"}
    assert summary["window_s"] == 300


def test_mood_window_evicts_old_buckets_and_ignores_late_comments() -> None:
    mood = MoodWindow(window_s=60, bucket_s=10)
    mood.add(0, -1.0, ["old"])
    mood.add(100_000, 1.0, ["new"])
    assert mood.summary(100_000)["comments"] == 1
    mood.add(5_000, -1.0, ["late"])                       # 95 s behind the newest event
    summary = mood.summary(100_000)
    assert summary["comments"] == 1 and summary["sentiment"] == 1.0
    assert [k["word"] for k in summary["keywords"]] == ["new"]
    assert mood.summary(1_000_000)["comments"] == 0
    assert mood.summary(1_000_000)["keywords"] == [] and not mood.buckets


def test_mood_window_counts_out_of_order_comments_inside_the_window() -> None:
    mood = MoodWindow(window_s=60, bucket_s=10)
    mood.add(50_000, 1.0, [])
    mood.add(20_000, -1.0, [])
    assert mood.summary(50_000)["comments"] == 2


def test_mood_window_memory_is_bounded() -> None:
    mood = MoodWindow(window_s=300, bucket_s=10, max_words=20)
    for second in range(0, 3_600):
        words = [f"w{second}-{i}" for i in range(5)] + ["hot"]
        mood.add(second * 1_000, 0.5, words)
        assert len(mood.buckets) <= 300 // 10 + 1
        assert all(len(bucket[4]) <= 20 for bucket in mood.buckets.values())
    top = mood.summary(3_599_000)["keywords"]
    assert top[0]["word"] == "hot" and len(top) == 10


def test_mood_window_json_round_trip_keeps_the_summary() -> None:
    mood = MoodWindow()
    model = LexiconSentiment()
    for i, (text, _) in enumerate(pool()):
        mood.add(i * 3_000, model.predict_one(text), keywords(text))
    snapshot = mood.to_dict()
    assert all(isinstance(key, str) for key in snapshot["buckets"])
    restored = MoodWindow.from_dict(orjson.loads(orjson.dumps(snapshot)))
    now = len(pool()) * 3_000
    assert restored.summary(now) == mood.summary(now)
    assert restored.to_dict() == mood.to_dict()


def test_mood_window_on_simulated_traffic_reflects_the_tone_mix() -> None:
    model = LexiconSentiment()
    happy, angry = MoodWindow(), MoodWindow()
    for i, (text, tone) in enumerate(pool()):
        target = happy if tone == "positive" else angry if tone == "negative" else None
        if target is not None:
            target.add(i * 1_000, model.predict_one(text + EMOJI[i % len(EMOJI)]), keywords(text))
    assert happy.summary(60_000)["sentiment"] > 0 > angry.summary(60_000)["sentiment"]
    assert angry.summary(60_000)["negative_share"] > angry.summary(60_000)["positive_share"]


def test_a_long_comment_is_segmented_only_up_to_the_cap() -> None:
    from online_models.text import MAX_SEGMENTED_CHARS

    head = "质量很差" * (MAX_SEGMENTED_CHARS // 4)
    assert keywords(head + "发货太慢" * 50) == ["质量", "很差"]
    assert keywords("发货太慢 " + head) == ["发货", "太慢", "质量", "很差"]
