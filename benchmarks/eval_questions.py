"""Precision and recall of the chat question detector on the hand-labelled comments.

    python -m benchmarks.eval_questions [--split dev|test|all] [--errors]

Reads ``tests/data/questions_labelled.tsv`` (text, question 1/0, topic, split: ``dev`` is
what the rules were tuned on, ``test`` is held out) and scores
:func:`online_models.questions.classify`: precision, recall and F1 of "is a question", and
topic accuracy over the true questions that were detected (and over all true questions, a
missed question counting as wrong). Prints one JSON document per split, then the median
(of 5 passes over all comments) cost of one uncached :func:`classify` call in microseconds.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from online_models.questions import classify

LABELLED = Path(__file__).resolve().parent.parent / "tests" / "data" / "questions_labelled.tsv"


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    question: bool
    topic: str | None
    split: str


def load(path: Path = LABELLED) -> list[Labelled]:
    """The labelled comments (lines starting with ``#`` are notes)."""
    with path.open(encoding="utf-8", newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    return [Labelled(r["text"], r["question"] == "1", None if r["topic"] == "-" else r["topic"],
                     r["split"]) for r in rows]


def score(rows: list[Labelled]) -> dict[str, Any]:
    """Detection precision/recall/F1 and topic accuracy of :func:`classify` on ``rows``."""
    tp = fp = fn = tn = topic_right = 0
    errors = []
    for row in rows:
        found = classify(row.text)
        if found is not None and row.question:
            tp += 1
            topic_right += found == row.topic
            if found != row.topic:
                errors.append(f"topic {found} != {row.topic}: {row.text}")
        elif found is not None:
            fp += 1
            errors.append(f"false question ({found}): {row.text}")
        elif row.question:
            fn += 1
            errors.append(f"missed ({row.topic}): {row.text}")
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "comments": len(rows), "questions": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3),
        "topic_accuracy_detected": round(topic_right / tp, 3) if tp else 0.0,
        "topic_accuracy_all_questions": round(topic_right / (tp + fn), 3) if tp + fn else 0.0,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=("dev", "test", "all"), default="all")
    parser.add_argument("--errors", action="store_true", help="list the misclassified comments")
    args = parser.parse_args(argv)
    rows = load()
    splits = ("dev", "test") if args.split == "all" else (args.split,)
    for split in splits:
        result = score([r for r in rows if r.split == split])
        errors = result.pop("errors")
        print(orjson.dumps({"split": split, **result}).decode())
        if args.errors:
            print("\n".join("  " + e for e in errors))
    uncached = classify.__wrapped__  # the lru_cache would time dict lookups
    passes = []
    for _ in range(5):
        started = time.perf_counter()
        for row in rows:
            uncached(row.text)
        passes.append((time.perf_counter() - started) / len(rows) * 1e6)
    print(orjson.dumps({"classify_us_per_comment": round(statistics.median(passes), 1)}).decode())


if __name__ == "__main__":
    main()
