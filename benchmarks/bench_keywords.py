"""Cost of a comment's keywords (what the room pipeline pays per comment for the host's page).

    python -m benchmarks.bench_keywords [--repeats 7] [--number 2000]

Times :func:`agents.rooms.state.comment_keywords` (redaction + :func:`online_models.text.
keywords`, no cache) with :mod:`timeit` over four sets of comments: the simulator's
Chinese comments, its English comments, longer Chinese sentences as real viewers write
them, and the longest comment the contract admits (2,000 Chinese characters; only the first
``MAX_SEGMENTED_CHARS`` are segmented). The room pipeline also remembers the keywords of
the last 4,096 distinct texts, so a repeated comment costs a dictionary look-up; these
figures are the cost of a new text.
Prints the median (and minimum) µs per comment of ``--repeats`` runs, then one JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit

import orjson

from agents.rooms.state import comment_keywords
from online_models.text import warm_up
from streams.simulator import COMMENTS

LONG_ZH = (
    "主播身上这件外套有没有黑色的，我身高一米六五穿什么码合适",
    "上次买的那条裙子洗了一次就起球了，质量真的一般，这次还敢买吗",
    "今天的优惠券怎么领不了啊，点了好几次都显示已经抢光了",
    "这个面料摸起来舒服吗，夏天穿会不会很热，有没有透气一点的款",
    "已经下单两件了，希望快点发货，上次等了一个星期才到",
)


def comment_sets() -> dict[str, list[str]]:
    zh = [t for (lang, _), texts in COMMENTS.items() if lang == "zh" for t in texts]
    en = [t for (lang, _), texts in COMMENTS.items() if lang == "en" for t in texts]
    longest = ("".join(LONG_ZH) * 20)[:2000]
    return {"zh_simulator": zh, "en_simulator": en, "zh_long": list(LONG_ZH),
            "zh_2000_chars": [longest]}


def time_set(texts: list[str], repeats: int, number: int) -> tuple[float, float]:
    """Median and minimum µs per comment over ``repeats`` runs of ``number`` comments."""
    rounds = max(1, number // len(texts))

    def run() -> None:
        for _ in range(rounds):
            for text in texts:
                comment_keywords(text)

    runs = timeit.repeat(run, repeat=repeats, number=1)
    per = [1e6 * r / (rounds * len(texts)) for r in runs]
    return statistics.median(per), min(per)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000, help="comments per run")
    args = parser.parse_args(argv)
    warm_up()
    out = {}
    for name, texts in comment_sets().items():
        median, best = time_set(texts, args.repeats, args.number)
        out[name] = {"median_us": round(median, 1), "min_us": round(best, 1)}
        print(f"{name:14s} {median:7.1f} µs/comment (min {best:.1f})  "
              f"e.g. {texts[0][:40]!r} -> {comment_keywords(texts[0])[:8]}")
    print(orjson.dumps({"keywords_us_per_comment": out}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
