"""Accuracy of the comment sentiment models on the labelled sample shipped in the repo.

``online_models/data/comments_labelled.tsv`` holds hand-written live-shopping comments (Chinese,
English and mixed; praise, complaints, checkout failures, questions, chatter, negation, mild
sarcasm, emoji), one ``text<TAB>label`` per line with ``label`` in positive / negative / neutral.
It was written for this evaluation; no row is in the simulator's comment pools.

Four measurements, all deterministic for a seed (accuracy and macro-F1 over the 3 classes):

(a) ``lexicon``: :class:`~online_models.sentiment.LexiconSentiment` untrained, i.e. the lexicon.
(b) ``self_trained``: :class:`~online_models.sentiment.NgramSentiment` after self-training
    (``learn_weak``) on the comments of a simulator stream, then scored on the sample, which
    it never learns from (held out).
(c) ``prequential``: a fresh NgramSentiment streamed over the sample in a seeded random order,
    predicting each comment before its label is revealed and learnt (``learn_one``); averaged
    over ``--orders`` orders. ``prequential_after_self_training`` starts from (b)'s model;
    ``prequential_lexicon_sentiment`` is the same protocol for LexiconSentiment's own online
    correction, for comparison.
(d) ``cross_validated``: each of 5 folds scored by a fresh NgramSentiment that learnt the
    labels of the other 4 folds once.

Figures (``python -m online_models.evaluation.sentiment``: seed 7, 20 000 simulator comments, 5
orders; 319 labelled comments: 125 positive, 110 negative, 84 neutral)::

                           accuracy  macro-F1
    (a) lexicon               0.730     0.728
    (b) self_trained          0.746     0.744   (5 316 weak steps of 20 000 comments)
    (c) prequential           0.730     0.728   (second half of each order: 0.741)
        after self-training   0.742     0.740   (second half: 0.749)
        LexiconSentiment      0.704     0.699
    (d) cross_validated       0.734     0.732

Seeds 1-3 give the same picture: (b) 0.746, (c) 0.732-0.733, after self-training
0.743-0.748, (d) 0.730-0.746. The lexicon's errors are mostly comments it has no word for
("踩雷了", "shipping took forever", "回头客") and literal readings of sarcasm ("wow two weeks to
ship, amazing service"). Self-training transfers the lexicon's verdicts to n-grams that
co-occur with its cue words, a gain of 1.5 points on comments never learnt from; 319 distinct
comments are too few labels for the n-grams to add more than that (one pass each). The
model's design (a residual on the lexicon's logits, no class bias from weak labels) was chosen
after a plain linear blend lost accuracy on this very sample, so treat the figures as
optimistic by a point or so until a second labelled sample confirms them.

>>> rows = load_labelled()
>>> len(rows) > 250 and {tone for _, tone in rows} == {"positive", "negative", "neutral"}
True
>>> scores(["positive", "neutral", "negative"], ["positive", "negative", "negative"])
{'accuracy': 0.6667, 'macro_f1': 0.5556, 'n': 3}
"""

from __future__ import annotations

import argparse
import pickle
import random
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import Any

import orjson

from online_models.sentiment import LexiconSentiment, NgramSentiment, label

LABELS = ("positive", "negative", "neutral")
LABEL_VALUES = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}
SAMPLE = "comments_labelled.tsv"


def load_labelled(name: str = SAMPLE) -> list[tuple[str, str]]:
    """``(text, label)`` rows of a labelled sample in ``online_models/data`` (header skipped)."""
    text = resources.files("online_models").joinpath("data", name).read_text("utf-8")
    rows: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        if not line.strip():
            continue
        comment, _, tone = line.rpartition("\t")
        if tone not in LABEL_VALUES or not comment:
            raise ValueError(f"{name}:{number}: expected 'text<TAB>label', got {line!r}")
        rows.append((comment, tone))
    return rows


def scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 (mean F1 over the classes present in ``truth``)."""
    n = len(truth)
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    f1s = []
    for tone in LABELS:
        tp = sum(t == p == tone for t, p in zip(truth, predicted, strict=True))
        fp = sum(p == tone != t for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == tone != p for t, p in zip(truth, predicted, strict=True))
        if tp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": round(correct / n, 4) if n else 0.0,
            "macro_f1": round(sum(f1s) / len(f1s), 4) if f1s else 0.0, "n": n}


def simulator_comments(n: int, seed: int) -> Iterator[str]:
    """The first ``n`` comment texts of a simulator run (with a one-minute checkout outage)."""
    from streams.simulator import Simulator  # pulls in aiokafka: only when evaluating

    sim = Simulator(seed=seed, rooms=6, users=2_000, items=500)
    start_ms, produced, second = 1_700_000_000_000, 0, 0
    while produced < n:
        now_ms = start_ms + second * 1_000
        if second == 300:
            sim.inject("checkout_outage", None, 60, now_ms)
        for record in sim.next_events(now_ms, 200):
            if record.stream != "live":
                continue
            event = orjson.loads(record.value)
            if event.get("type") == "comment" and event.get("text") and produced < n:
                produced += 1
                yield event["text"]
        second += 1


def held_out(predict: Callable[[str], float], rows: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Scores of ``predict`` on ``rows`` without learning."""
    return scores([tone for _, tone in rows], [label(predict(text)) for text, _ in rows])


def _orders(rows: Sequence[tuple[str, str]], orders: int,
            seed: int) -> Iterator[list[tuple[str, str]]]:
    for order in range(orders):
        shuffled = list(rows)
        random.Random(seed * 1_000 + order).shuffle(shuffled)
        yield shuffled


def prequential(make: Callable[[], Any], rows: Sequence[tuple[str, str]], orders: int,
                seed: int) -> dict[str, Any]:
    """Predict-then-learn over ``orders`` seeded shuffles of ``rows``: mean scores, and the
    accuracy over the second half of each order (after half of the labels were revealed)."""
    runs, late_correct, late_total = [], 0, 0
    half = len(rows) // 2
    for shuffled in _orders(rows, orders, seed):
        model = make()
        predicted = []
        for index, (text, tone) in enumerate(shuffled):
            predicted.append(label(model.predict_one(text)))
            if index >= half:
                late_correct += predicted[-1] == tone
                late_total += 1
            model.learn_one(text, LABEL_VALUES[tone])
        runs.append(scores([tone for _, tone in shuffled], predicted))
    return {"accuracy": round(sum(r["accuracy"] for r in runs) / orders, 4),
            "macro_f1": round(sum(r["macro_f1"] for r in runs) / orders, 4),
            "second_half_accuracy": round(late_correct / late_total, 4) if late_total else 0.0,
            "n": len(rows), "orders": orders}


def cross_validated(make: Callable[[], Any], rows: Sequence[tuple[str, str]], folds: int,
                    seed: int) -> dict[str, Any]:
    """Each fold of a seeded shuffle scored by a model that learnt the other folds once."""
    shuffled = next(_orders(rows, 1, seed))
    truth, predicted = [], []
    for fold in range(folds):
        model = make()
        for index, (text, tone) in enumerate(shuffled):
            if index % folds != fold:
                model.learn_one(text, LABEL_VALUES[tone])
        for text, tone in shuffled[fold::folds]:
            truth.append(tone)
            predicted.append(label(model.predict_one(text)))
    return {**scores(truth, predicted), "folds": folds}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (a), (b) and (c); print a summary and, as the last line, one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m online_models.evaluation.sentiment",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stream", type=int, default=20_000,
                        help="simulator comments to self-train on")
    parser.add_argument("--orders", type=int, default=5, help="shuffles for (c)")
    parser.add_argument("--folds", type=int, default=5, help="folds for (d)")
    args = parser.parse_args(argv)
    rows = load_labelled()

    lexicon = LexiconSentiment()
    self_trained = NgramSentiment()
    weak = {1.0: 0, -1.0: 0, 0.0: 0, None: 0}
    for text in simulator_comments(args.stream, args.seed):
        self_trained.predict_one(text)
        weak[self_trained.learn_weak(text)] += 1
    frozen = pickle.dumps(self_trained)

    result = {
        "sample": {"comments": len(rows),
                   **{tone: sum(t == tone for _, t in rows) for tone in LABELS}},
        "lexicon": held_out(lexicon.predict_one, rows),
        "self_trained": {**held_out(self_trained.predict_one, rows),
                         "stream_comments": args.stream,
                         "weak_labels": {"positive": weak[1.0], "negative": weak[-1.0],
                                         "neutral": weak[0.0], "skipped": weak[None]},
                         "model_version": self_trained.model_version},
        "prequential": prequential(NgramSentiment, rows, args.orders, args.seed),
        "prequential_after_self_training": prequential(lambda: pickle.loads(frozen), rows,
                                                       args.orders, args.seed),
        "prequential_lexicon_sentiment": prequential(LexiconSentiment, rows, args.orders,
                                                     args.seed),
        "cross_validated": cross_validated(NgramSentiment, rows, args.folds, args.seed),
        "seed": args.seed,
    }
    for key, value in result.items():
        if isinstance(value, dict) and "accuracy" in value:
            print(f"{key:>32}: accuracy {value['accuracy']:.3f}  "
                  f"macro-F1 {value['macro_f1']:.3f}")
    print(orjson.dumps(result).decode())
    return result


if __name__ == "__main__":
    main()
