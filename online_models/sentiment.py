"""Comment mood for live rooms: a lexicon scorer that keeps learning, and a sliding mood window.

:class:`LexiconSentiment` scores one comment in ``[-1, 1]``. A hand-written bilingual lexicon
of e-commerce words (Chinese and English), emoji, negation, intensifiers, contrast ("but",
"但是") and exclamation gives a prior; a small online linear model over the comment's tokens
(words, CJK bigrams, emoji) corrects it from labelled comments, with a bounded vocabulary.

:class:`NgramSentiment` is the online classifier the rooms use: the same lexicon as a prior,
corrected by a three-class linear model over hashed character n-grams (CJK 1-3 grams; English
words, word bigrams and character 3-grams) in a fixed-size array. It improves from explicit
labels and, self-training, from the lexicon's confident verdicts; its accuracy on a labelled
sample is measured by :mod:`online_models.evaluation.sentiment`.

:class:`MoodWindow` keeps one room's comment mood over the last ``window_s`` seconds of event
time in fixed-size buckets, as JSON-ready state.

Scores are labelled by :func:`label` with the symmetric neutral band :data:`NEUTRAL_THRESHOLD`.
"""

from __future__ import annotations

import math
import re
import zlib
from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np

from online_models.text import BANG, BREAK, CJK, EMOJI, WORD, segments

NEUTRAL_THRESHOLD = 0.15
"""Scores with ``abs(score) < NEUTRAL_THRESHOLD`` are neutral (one weak cue such as "ok" stays
neutral; one clear sentiment word such as "good" or "贵" does not)."""

NEGATION_FACTOR = -0.75       # "not good" is weaker than "bad" (as in VADER)
BLOCKED_ACTION = -0.5         # a negated shopping action: "can't pay", "没收到", "别买"
CONTRAST_BEFORE, CONTRAST_AFTER = 0.5, 1.5   # "…, but …": the clause after it dominates
BANG_BOOST, MAX_BANGS = 0.1, 3
QUESTION_FACTOR = 0.5         # "is it good?", "好用吗": a question mostly asks, it does not judge
NEGATION_SCOPE = 3            # words (English) or characters (Chinese) a negator reaches
BOOST_SCOPE = 1               # words an intensifier may skip before its sentiment word

# Entry kinds of the lexicons.
_SENT, _NEG, _BOOST, _DUAL, _CONTRAST, _ACTION, _SKIP = range(7)

_EN_POSITIVE = {
    "love": 0.8, "loved": 0.7, "loving": 0.7, "lovely": 0.7, "like": 0.3, "liked": 0.4,
    "likes": 0.3, "great": 0.7, "good": 0.5, "nice": 0.5, "pretty": 0.6, "beautiful": 0.8,
    "gorgeous": 0.8, "stunning": 0.8, "cute": 0.6, "adorable": 0.7, "amazing": 0.8,
    "awesome": 0.8, "perfect": 0.8, "best": 0.7, "better": 0.4, "excellent": 0.8,
    "fantastic": 0.8, "wonderful": 0.8, "fabulous": 0.8, "incredible": 0.7, "obsessed": 0.6,
    "slay": 0.6, "fire": 0.5, "lit": 0.4, "cool": 0.4, "comfy": 0.5, "comfortable": 0.5,
    "soft": 0.3, "elegant": 0.6, "classy": 0.5, "chic": 0.5, "stylish": 0.5, "smooth": 0.3,
    "durable": 0.5, "sturdy": 0.4, "legit": 0.5, "authentic": 0.4, "genuine": 0.4,
    "delicious": 0.7, "tasty": 0.6, "yummy": 0.6, "fresh": 0.3, "favorite": 0.6,
    "favourite": 0.6, "fav": 0.5, "worth": 0.5, "recommend": 0.6, "recommended": 0.6,
    "happy": 0.6, "glad": 0.5, "satisfied": 0.6, "impressed": 0.6, "excited": 0.6,
    "thanks": 0.4, "thank": 0.4, "thx": 0.4, "yay": 0.6, "yes": 0.3, "yesss": 0.5, "wow": 0.5,
    "omg": 0.3, "bargain": 0.6, "deal": 0.3, "steal": 0.3, "affordable": 0.5, "cheaper": 0.3,
    "cheap": 0.2, "fast": 0.4, "quick": 0.3, "ordered": 0.5, "bought": 0.4, "buying": 0.4,
    "purchased": 0.4, "want": 0.3, "need": 0.3, "fits": 0.3, "win": 0.5, "winner": 0.5,
    "gem": 0.5, "goat": 0.6, "yyds": 0.8, "666": 0.6, "ok": 0.1, "okay": 0.1, "fine": 0.2,
    "helpful": 0.5, "fun": 0.5, "enjoy": 0.5, "enjoyed": 0.5, "wonderfully": 0.7,
}
_EN_NEGATIVE = {
    "hate": 0.8, "hated": 0.8, "bad": 0.6, "terrible": 0.8, "awful": 0.8, "horrible": 0.8,
    "worst": 0.8, "worse": 0.6, "poor": 0.5, "ugly": 0.7, "broken": 0.7, "broke": 0.6,
    "breaks": 0.5, "damaged": 0.7, "defective": 0.8, "cheaply": 0.5, "flimsy": 0.6,
    "slow": 0.5, "late": 0.4, "delayed": 0.5, "expensive": 0.5, "overpriced": 0.7,
    "pricey": 0.4, "scam": 0.9, "scammed": 0.9, "scammer": 0.9, "fake": 0.8, "fraud": 0.9,
    "ripoff": 0.8, "refund": 0.5, "returned": 0.4, "returning": 0.4, "waste": 0.7,
    "wasted": 0.7, "useless": 0.7, "disappointed": 0.7, "disappointing": 0.7,
    "disappointment": 0.7, "annoying": 0.5, "angry": 0.6, "upset": 0.5, "sad": 0.4,
    "boring": 0.5, "meh": 0.3, "wrong": 0.5, "missing": 0.5, "lost": 0.4, "fail": 0.6,
    "failed": 0.6, "failing": 0.6, "fails": 0.6, "failure": 0.6, "error": 0.6, "bug": 0.4,
    "buggy": 0.5, "glitch": 0.5, "stuck": 0.5, "crash": 0.6, "crashed": 0.6, "crashes": 0.6,
    "declined": 0.5, "lag": 0.4, "laggy": 0.5, "misleading": 0.6, "itchy": 0.5,
    "uncomfortable": 0.5, "faded": 0.4, "ripped": 0.5, "torn": 0.5, "stained": 0.5,
    "problem": 0.4, "issue": 0.3, "sucks": 0.7, "suck": 0.6, "trash": 0.7, "garbage": 0.7,
    "rubbish": 0.7, "junk": 0.7, "lies": 0.6, "lying": 0.6, "liar": 0.7, "shady": 0.6,
    "sketchy": 0.5, "complaint": 0.5, "rude": 0.6, "smells": 0.4, "unacceptable": 0.7,
}
_EN_NEGATORS = (
    "not", "no", "never", "nothing", "nobody", "none", "neither", "nor", "without", "hardly",
    "barely", "don't", "dont", "doesn't", "doesnt", "didn't", "didnt", "isn't", "isnt", "wasn't",
    "wasnt", "aren't", "arent", "weren't", "werent", "can't", "cant", "cannot", "couldn't",
    "couldnt", "won't", "wouldn't", "wouldnt", "shouldn't", "shouldnt", "haven't", "havent",
    "hasn't", "hasnt", "hadn't", "ain't"
)
_EN_BOOSTERS = {
    "very": 1.5, "so": 1.5, "soo": 1.5, "really": 1.4, "super": 1.5, "too": 1.3,
    "extremely": 1.7, "totally": 1.4, "absolutely": 1.5, "incredibly": 1.6, "most": 1.3,
    "such": 1.3, "literally": 1.3, "definitely": 1.3, "def": 1.3, "hella": 1.5, "quite": 1.2,
    "truly": 1.4, "highly": 1.4, "kinda": 0.6, "somewhat": 0.6, "slightly": 0.6,
    "little": 0.7, "bit": 0.7,
}
_EN_DUAL = {"pretty": 1.3}   # "pretty" is praise alone but an intensifier before "expensive"
_EN_CONTRAST = ("but", "however", "although")
# Neutral alone; negated they report a blocked purchase or a failed app step.
_EN_ACTIONS = (
    "order", "place", "buy", "pay", "checkout", "check", "purchase", "load", "loading", "open",
    "click", "add", "login", "log", "work", "works", "working", "find", "see", "get", "receive",
    "received", "arrive", "arrived", "ship", "shipped", "deliver", "delivered", "use", "connect",
    "submit", "track"
)
_EN_PHRASES = {
    "looks cheap": -0.6, "look cheap": -0.6, "looked cheap": -0.6, "feels cheap": -0.6,
    "feel cheap": -0.6, "felt cheap": -0.6, "seems cheap": -0.6, "cheap quality": -0.6,
    "cheap material": -0.6, "cheap plastic": -0.6, "cheap looking": -0.6, "made cheap": -0.6,
    "can't wait": 0.6, "cant wait": 0.6, "must have": 0.5, "rip off": -0.8,
    "ripped off": -0.8, "never again": -0.6, "sold out": -0.2, "too small": -0.4,
    "too big": -0.4, "too short": -0.4, "too long": -0.3,
}

_ZH_POSITIVE = {
    "好": 0.5, "好看": 0.7, "漂亮": 0.7, "美": 0.6, "美丽": 0.7, "帅": 0.6, "可爱": 0.6,
    "喜欢": 0.7, "爱": 0.6, "爱了": 0.7, "棒": 0.7, "赞": 0.6, "点赞": 0.5, "不错": 0.6,
    "满意": 0.7, "好用": 0.6, "好吃": 0.7, "好穿": 0.6, "舒服": 0.6, "划算": 0.6, "超值": 0.7,
    "实惠": 0.5, "便宜": 0.3, "性价比": 0.5, "值得": 0.6, "绝了": 0.8, "绝绝子": 0.8,
    "好评": 0.7, "推荐": 0.5, "回购": 0.6, "下单": 0.5, "已拍": 0.5, "拍了": 0.4, "买了": 0.4,
    "入手": 0.5, "种草": 0.5, "上车": 0.4, "冲": 0.4, "求": 0.3, "喜提": 0.5, "抢到": 0.5,
    "心动": 0.6, "惊艳": 0.8, "优秀": 0.7, "完美": 0.8, "精致": 0.6, "高级": 0.5, "质感": 0.4,
    "质量好": 0.7, "正品": 0.5, "结实": 0.5, "耐用": 0.5, "显瘦": 0.5, "合身": 0.5, "百搭": 0.5,
    "牛": 0.6, "厉害": 0.6, "开心": 0.6, "感谢": 0.5, "谢谢": 0.4, "支持": 0.5, "期待": 0.5,
    "快": 0.3, "及时": 0.4, "给力": 0.7, "靠谱": 0.6, "放心": 0.5, "物美价廉": 0.8,
    "物超所值": 0.8, "香": 0.4, "无敌": 0.6, "没毛病": 0.6, "没问题": 0.4, "没得说": 0.6,
    "别致": 0.5, "行": 0.3, "可以": 0.3, "温柔": 0.5, "专业": 0.5, "贴心": 0.6, "惊喜": 0.7,
}
_ZH_NEGATIVE = {
    "差": 0.6, "差评": 0.8, "差劲": 0.7, "贵": 0.5, "坏": 0.6, "坏了": 0.7, "破": 0.4,
    "破损": 0.7, "慢": 0.5, "退货": 0.6, "退款": 0.6, "骗": 0.8, "骗子": 0.9, "骗人": 0.8,
    "假": 0.6, "假货": 0.9, "假的": 0.7, "山寨": 0.7, "垃圾": 0.8, "难看": 0.7, "丑": 0.7,
    "难用": 0.6, "难吃": 0.7, "失望": 0.7, "后悔": 0.6, "坑": 0.6, "坑人": 0.8, "忽悠": 0.6,
    "智商税": 0.7, "不值": 0.6, "不行": 0.5, "一般": 0.2, "失败": 0.7, "卡住": 0.5, "卡顿": 0.5,
    "卡死": 0.6, "转圈": 0.4, "闪退": 0.6, "报错": 0.6, "打不开": 0.6, "不了": 0.4, "不到": 0.3,
    "没反应": 0.5, "无语": 0.6, "无聊": 0.5, "生气": 0.6, "气死": 0.7, "投诉": 0.7, "举报": 0.6,
    "色差": 0.5, "不符": 0.6, "不一样": 0.4, "起球": 0.5, "掉色": 0.6, "褪色": 0.6, "开线": 0.5,
    "异味": 0.6, "过敏": 0.5, "延迟": 0.4, "久": 0.3, "敷衍": 0.6, "劣质": 0.8, "粗糙": 0.6,
    "廉价": 0.5, "缩水": 0.5, "发霉": 0.7, "过期": 0.7, "少发": 0.6, "漏发": 0.6, "错发": 0.6,
    "发错": 0.6, "烂": 0.7, "糟糕": 0.7, "恶心": 0.8, "割韭菜": 0.7, "套路": 0.5, "虚假": 0.7,
    "欺骗": 0.8, "假冒": 0.8, "盗版": 0.7, "不如": 0.4, "呵呵": 0.3, "拒绝": 0.4, "麻烦": 0.4,
    "难受": 0.6, "失效": 0.5, "扣款": 0.3, "不满": 0.6, "求助": 0.3, "离谱": 0.6,
}
_ZH_NEGATORS = ("不", "没", "没有", "别", "无", "未", "非", "不是", "并不", "从不", "从没",
                "毫不", "绝不", "不能", "没法", "无法", "不太", "不怎么", "不够", "不要")
_ZH_BOOSTERS = {
    "太": 1.5, "超": 1.5, "超级": 1.6, "很": 1.3, "非常": 1.6, "特别": 1.5, "真": 1.3,
    "真的": 1.3, "巨": 1.5, "贼": 1.4, "挺": 1.2, "蛮": 1.2, "相当": 1.4, "十分": 1.5,
    "极": 1.6, "极其": 1.7, "最": 1.5, "更": 1.2, "有点": 0.7, "有些": 0.7, "稍微": 0.6,
    "略": 0.7, "比较": 0.9, "一直": 1.2, "老是": 1.2, "总是": 1.2, "这么": 1.3, "那么": 1.2,
    "如此": 1.3, "实在": 1.4, "简直": 1.4, "确实": 1.2,
}
_ZH_DUAL = {"好": 1.5}   # "好" is praise alone but an intensifier in "好美", "好贵"
_ZH_CONTRAST = ("但是", "但", "可是", "不过", "然而")
_ZH_ACTIONS = ("发货", "到货", "收到", "到", "付款", "支付", "付", "买", "拍", "用", "打开",
               "加载", "显示", "回复", "理", "退", "发", "下")
# Words that contain a negator character but do not negate.
_ZH_SKIP = ("不少", "不断", "不管", "不仅", "不用", "不然", "没事", "别的", "别人", "区别",
            "分别", "级别", "类别", "性别", "告别", "无论", "除非", "是非", "未来", "并且",
            "要求", "需求", "请求", "追求")

_EMOJI_VALUES = {
    "❤️": 0.7, "♥️": 0.6, "💕": 0.6, "💖": 0.6, "💗": 0.6, "💓": 0.6, "💘": 0.6, "😍": 0.8,
    "🥰": 0.8, "😘": 0.5, "🤩": 0.7, "😊": 0.5, "😁": 0.5, "😀": 0.4, "😃": 0.4, "😄": 0.5,
    "🙂": 0.2, "👍": 0.6, "👏": 0.5, "🙌": 0.5, "💯": 0.6, "🔥": 0.6, "🎉": 0.5, "🥳": 0.5,
    "✨": 0.3, "⭐️": 0.3, "🌟": 0.3, "💪": 0.3, "👌": 0.4, "🤑": 0.3, "😋": 0.5, "🛒": 0.2,
    "🙄": -0.5, "😡": -0.8, "😠": -0.7, "🤬": -0.9, "👎": -0.7, "😤": -0.5, "💩": -0.6,
    "😞": -0.5, "😒": -0.5, "😑": -0.3, "😢": -0.4, "😩": -0.4, "😫": -0.4, "🤮": -0.8,
    "🤢": -0.6, "💔": -0.6, "🤡": -0.4, "😕": -0.3, "🙁": -0.4, "☹️": -0.4, "😣": -0.4,
}


def _entries(pairs: Iterable[tuple[Iterable[str], int, Any]]) -> dict[str, tuple[int, float]]:
    table: dict[str, tuple[int, float]] = {}
    for words, kind, values in pairs:
        for word in words:
            table[word] = (kind, float(values[word]) if isinstance(values, dict) else values)
    return table


# Later groups override earlier ones: dual words and skips win over plain entries.
_EN = _entries([
    (_EN_ACTIONS, _ACTION, 0.0), (_EN_POSITIVE, _SENT, _EN_POSITIVE),
    (_EN_NEGATIVE, _SENT, {w: -v for w, v in _EN_NEGATIVE.items()}),
    (_EN_NEGATORS, _NEG, 0.0), (_EN_BOOSTERS, _BOOST, _EN_BOOSTERS),
    (_EN_DUAL, _DUAL, _EN_POSITIVE), (_EN_CONTRAST, _CONTRAST, 0.0),
])
_ZH = _entries([
    (_ZH_ACTIONS, _ACTION, 0.0), (_ZH_POSITIVE, _SENT, _ZH_POSITIVE),
    (_ZH_NEGATIVE, _SENT, {w: -v for w, v in _ZH_NEGATIVE.items()}),
    (_ZH_NEGATORS, _NEG, 0.0), (_ZH_BOOSTERS, _BOOST, _ZH_BOOSTERS),
    (_ZH_DUAL, _DUAL, _ZH_POSITIVE), (_ZH_CONTRAST, _CONTRAST, 0.0), (_ZH_SKIP, _SKIP, 0.0),
])
_ZH_MAX_LEN = max(map(len, _ZH))
_BOOSTS = {**_EN_BOOSTERS, **_ZH_BOOSTERS}
_DUAL_BOOSTS = {**_EN_DUAL, **_ZH_DUAL}
_REPEATS = re.compile(r"(.)\1{2,}")


def _lookup_word(word: str) -> tuple[int, float] | None:
    entry = _EN.get(word)
    if entry is None and len(word) > 3 and _REPEATS.search(word):   # "soooo", "loooove"
        entry = (_EN.get(_REPEATS.sub(r"\1\1\1", word)) or _EN.get(_REPEATS.sub(r"\1\1", word))
                 or _EN.get(_REPEATS.sub(r"\1", word)))
    return entry


def _zh_match(run: str, i: int) -> tuple[int, tuple[int, float]] | None:
    """Longest lexicon entry starting at ``run[i]``, as (length, entry)."""
    for size in range(min(_ZH_MAX_LEN, len(run) - i), 0, -1):
        entry = _ZH.get(run[i:i + size])
        if entry is not None:
            return size, entry
    return None


class _Scorer:
    """One left-to-right pass: the lexicon's raw score and the comment's learning features."""

    __slots__ = ("asks", "boost", "boost_left", "features", "negated_left", "total", "weight")

    def __init__(self) -> None:
        self.total = 0.0
        self.weight = 1.0          # clause weight, raised after "but"
        self.boost = 1.0
        self.boost_left = 0
        self.negated_left = 0
        self.features: list[str] = []
        self.asks = False          # saw an A-not-A question ("有没有", "好不好")

    def sentiment(self, value: float, negatable: bool = True) -> None:
        value *= self.boost
        if negatable and self.negated_left > 0:
            value *= NEGATION_FACTOR
        self.total += value * self.weight
        self.boost, self.boost_left, self.negated_left = 1.0, 0, 0

    def action(self) -> None:
        if self.negated_left > 0:
            self.sentiment(BLOCKED_ACTION, negatable=False)
        else:
            self.step()

    def step(self) -> None:
        """A token that carries no sentiment: modifiers fade."""
        if self.negated_left > 0:
            self.negated_left -= 1
        if self.boost_left > 0:
            self.boost_left -= 1
        else:
            self.boost = 1.0

    def intensify(self, factor: float) -> None:
        self.boost = min(self.boost * factor, 2.5)
        self.boost_left = BOOST_SCOPE

    def clause_break(self) -> None:
        self.boost, self.boost_left, self.negated_left = 1.0, 0, 0

    def contrast(self) -> None:
        self.total *= CONTRAST_BEFORE
        self.weight = CONTRAST_AFTER
        self.clause_break()

    def words(self, items: list[tuple[str, str]], start: int) -> int:
        """Score the word at ``items[start]`` (and the next one if they form a phrase)."""
        word = items[start][1]
        self.features.append("~" + word if self.negated_left > 0 else word)
        if start + 1 < len(items) and items[start + 1][0] == WORD:
            phrase = _EN_PHRASES.get(word + " " + items[start + 1][1])
            if phrase is not None:
                self.features.append(items[start + 1][1])
                if phrase:
                    self.sentiment(phrase)
                return 2
        entry = _lookup_word(word)
        if entry is None:
            self.step()
            return 1
        kind, value = entry
        dual_boost = None
        if kind == _DUAL:
            following = (_lookup_word(items[start + 1][1])
                         if start + 1 < len(items) and items[start + 1][0] == WORD else None)
            if following is not None and following[0] == _SENT:
                dual_boost = _DUAL_BOOSTS[word]
        self.cue(kind, value, dual_boost)
        return 1

    def cue(self, kind: int, value: float, dual_boost: float | None = None) -> None:
        """Apply one lexicon cue; a dual word intensifies when a sentiment word follows."""
        if kind == _SENT:
            self.sentiment(value)
        elif kind == _NEG:
            self.negated_left = NEGATION_SCOPE
            self.boost, self.boost_left = 1.0, 0
        elif kind == _BOOST:
            self.intensify(value)
        elif kind == _DUAL:
            if dual_boost is not None:
                self.intensify(dual_boost)
            else:
                self.sentiment(value)
        elif kind == _CONTRAST:
            self.contrast()
        elif kind == _ACTION:
            self.action()
        else:
            self.step()

    def cjk(self, run: str) -> None:
        if len(run) == 1:
            self.features.append(run)
        else:
            self.features.extend(run[i:i + 2] for i in range(len(run) - 1))
        i, n = 0, len(run)
        while i < n:
            # A-not-A questions ("有没有", "好不好看", "能不能") ask, they do not negate.
            if i + 2 < n and run[i + 1] in "不没" and run[i + 2] == run[i]:
                self.asks = True
                self.step()
                i += 3
                continue
            match = _zh_match(run, i)
            if match is None:
                self.step()
                i += 1
                continue
            size, (kind, value) = match
            dual_boost = None
            if kind == _DUAL:
                following = _zh_match(run, i + size) if i + size < n else None
                if following is not None and following[1][0] == _SENT:
                    dual_boost = _DUAL_BOOSTS[run[i:i + size]]
            self.cue(kind, value, dual_boost)
            i += size


def lexicon_score(text: str) -> tuple[float, list[str]]:
    """The lexicon's raw (unbounded) score of ``text`` and its learning features.

    Features are the comment's tokens (see :func:`online_models.text.tokenize`), with English
    words inside a negation scope prefixed by ``~``.

    >>> lexicon_score("not good")
    (-0.375, ['not', '~good'])
    """
    scorer = _Scorer()
    items = segments(text)
    bangs, i, n = 0, 0, len(items)
    last: tuple[str, str] = (BREAK, "")   # the last segment that is not an emoji or a "!"
    while i < n:
        kind, value = items[i]
        if kind == WORD:
            last = items[i]
            i += scorer.words(items, i)
            continue
        if kind == CJK:
            last = items[i]
            scorer.cjk(value)
        elif kind == EMOJI:
            scorer.features.append(value)
            emoji_value = _EMOJI_VALUES.get(value)
            if emoji_value is not None:
                scorer.total += emoji_value * scorer.weight
        elif kind == BANG:
            bangs += 1
        elif kind == BREAK:
            last = items[i]
            scorer.clause_break()
        i += 1
    total = scorer.total
    if scorer.asks or last[1] == "?" or (last[0] == CJK and last[1][-1] == "吗"):
        total *= QUESTION_FACTOR
    if bangs and total:
        total += math.copysign(BANG_BOOST * min(bangs, MAX_BANGS), total)
    return round(total, 12), scorer.features


def label(score: float, threshold: float = NEUTRAL_THRESHOLD) -> str:
    """``"positive"`` if ``score >= threshold``, ``"negative"`` if ``score <= -threshold``,
    else ``"neutral"``.

    >>> label(0.4), label(-0.2), label(0.05)
    ('positive', 'negative', 'neutral')
    """
    if score >= threshold:
        return "positive"
    if score <= -threshold:
        return "negative"
    return "neutral"


class LexiconSentiment:
    """Comment sentiment in ``[-1, 1]``: a bilingual lexicon prior plus an online correction.

    The score is ``tanh(z)`` with ``z = prior_weight * lexicon + bias + sum(w[t] * x)`` over
    the comment's distinct tokens ``t`` (``x = 1 / sqrt(#tokens)``). ``lexicon`` is
    :func:`lexicon_score`: e-commerce words in English and Chinese, emoji, negation ("not",
    "不", "没", "别"), intensifiers ("so", "太", "超", "好" before a sentiment word), "but" and
    "但是" (the clause after dominates), exclamation marks and blocked actions ("can't pay",
    "没收到"). ``learn_one`` takes a label in ``[-1, 1]`` and does one SGD step on the
    logistic loss of ``(label + 1) / 2`` (its gradient in ``z`` is ``score - label``); token
    weights start at 0, so an untrained model is the lexicon alone, and ``prior_weight``
    stays non-negative so learning never inverts the lexicon.

    Memory is bounded: at most ``max_vocab`` token weights. When a new token would exceed
    it, the least-used tenth is evicted and the remaining use counts are halved, so tokens
    that were frequent long ago can age out.

    Parameters
    ----------
    learning_rate
        SGD step size.
    l2
        L2 penalty on the token weights a step touches.
    max_vocab
        Most token weights kept.

    Examples
    --------
    >>> model = LexiconSentiment()
    >>> model.predict_one("love this!") > 0.5, model.predict_one("质量很差") < -0.5
    (True, True)
    >>> model.predict_label("not worth it"), model.predict_label("不好看")
    ('negative', 'negative')
    >>> model.predict_label("多少钱?"), model.predict_label("ship to Canada?")
    ('neutral', 'neutral')
    >>> before = model.predict_one("mid")
    >>> for _ in range(20):
    ...     model.learn_one("mid", -1.0)
    >>> model.predict_one("mid") < before
    True
    >>> LexiconSentiment.from_dict(model.to_dict()).predict_one("mid") == model.predict_one("mid")
    True
    """

    def __init__(self, learning_rate: float = 0.05, l2: float = 1e-4,
                 max_vocab: int = 20_000) -> None:
        if max_vocab < 1:
            raise ValueError("max_vocab must be at least 1")
        self.learning_rate = learning_rate
        self.l2 = l2
        self.max_vocab = max_vocab
        self.bias = 0.0
        self.prior_weight = 1.0
        self.n_learned = 0
        self._weights: dict[str, float] = {}
        self._uses: dict[str, int] = {}

    def __len__(self) -> int:
        """Number of token weights held."""
        return len(self._weights)

    def _z(self, text: str) -> tuple[float, float, list[str], float]:
        prior, features = lexicon_score(text)
        distinct = list(dict.fromkeys(features))
        x = 1.0 / math.sqrt(len(distinct)) if distinct else 0.0
        weights = self._weights
        z = self.prior_weight * prior + self.bias
        if weights:
            z += x * sum(weights.get(t, 0.0) for t in distinct)
        return z, prior, distinct, x

    def predict_one(self, text: str) -> float:
        """Sentiment of one comment in ``[-1, 1]``; 0 is neutral."""
        return round(math.tanh(self._z(text)[0]), 6)

    def predict_label(self, text: str, threshold: float = NEUTRAL_THRESHOLD) -> str:
        """``"positive"``, ``"negative"`` or ``"neutral"``; see :func:`label`."""
        return label(self.predict_one(text), threshold)

    def learn_one(self, text: str, label: float) -> None:
        """One SGD step towards ``label`` (clipped to ``[-1, 1]``; -1 negative, 1 positive)."""
        target = max(-1.0, min(1.0, float(label)))
        z, prior, distinct, x = self._z(text)
        gradient = math.tanh(z) - target
        rate = self.learning_rate
        self.bias -= rate * gradient
        self.prior_weight = max(0.0, self.prior_weight - rate * gradient * prior)
        weights, uses = self._weights, self._uses
        for token in distinct:
            if token not in weights:
                if len(weights) >= self.max_vocab:
                    self._evict()
                weights[token] = 0.0
                uses[token] = 0
            weights[token] -= rate * (gradient * x + self.l2 * weights[token])
            uses[token] += 1
        self.n_learned += 1

    def _evict(self) -> None:
        by_use = sorted(self._uses, key=self._uses.__getitem__)
        for token in by_use[:max(1, self.max_vocab // 10)]:
            del self._weights[token], self._uses[token]
        for token, count in self._uses.items():
            self._uses[token] = count // 2

    def weight(self, token: str) -> float:
        """Learned weight of one token (0.0 if not held)."""
        return self._weights.get(token, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready snapshot (string keys only)."""
        return {
            "learning_rate": self.learning_rate, "l2": self.l2, "max_vocab": self.max_vocab,
            "bias": self.bias, "prior_weight": self.prior_weight, "n_learned": self.n_learned,
            "weights": dict(self._weights), "uses": dict(self._uses),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LexiconSentiment:
        """Restore a :meth:`to_dict` snapshot."""
        model = cls(data.get("learning_rate", 0.05), data.get("l2", 1e-4),
                    data.get("max_vocab", 20_000))
        model.bias = float(data.get("bias", 0.0))
        model.prior_weight = float(data.get("prior_weight", 1.0))
        model.n_learned = int(data.get("n_learned", 0))
        model._weights = {str(k): float(v) for k, v in data.get("weights", {}).items()}
        uses = data.get("uses", {})
        model._uses = {k: int(uses.get(k, 1)) for k in model._weights}
        return model

    def __repr__(self) -> str:
        return (f"LexiconSentiment(vocab={len(self)}/{self.max_vocab}, "
                f"n_learned={self.n_learned})")


class MoodWindow:
    """A room's comment mood over the last ``window_s`` seconds of event time.

    Comments go into ``bucket_s``-second buckets of ``[sum of scores, comments, positive,
    negative, {word: count}]``; buckets that end before the window are dropped, so at most
    ``window_s // bucket_s + 1`` buckets are held. Each bucket counts at most ``max_words``
    words with the Space-Saving algorithm (a new word in a full bucket replaces the least
    counted one and inherits its count + 1), so any word with more than ``1 / max_words`` of
    a bucket's words is kept and memory stays bounded. The window is bucket-aligned: a summary
    covers the buckets that overlap the last ``window_s`` seconds. Events older than that are
    ignored; state is JSON-ready (:meth:`to_dict`, string keys).

    Parameters
    ----------
    window_s
        Window length in seconds of event time.
    bucket_s
        Bucket width in seconds.
    max_words
        Words counted per bucket.
    threshold
        Scores ``>= threshold`` are positive, ``<= -threshold`` negative (see :func:`label`).

    Examples
    --------
    >>> mood = MoodWindow()
    >>> mood.add(1_000, 0.8, ["好看", "颜色"])
    >>> mood.add(2_000, -0.6, ["太贵", "颜色"])
    >>> mood.add(400_000, 0.5, ["链接"])      # 399 s later: the first two have left the window
    >>> mood.summary(400_000)["comments"]
    1
    >>> mood.add(401_000, 0.0, ["链接", "尺码"])
    >>> summary = MoodWindow.from_dict(mood.to_dict()).summary(401_000)
    >>> summary["sentiment"], summary["positive_share"], summary["keywords"][0]
    (0.25, 0.5, {'word': '链接', 'count': 2})
    """

    MAX_WORD_CHARS = 32

    def __init__(self, window_s: int = 300, bucket_s: int = 10, max_words: int = 50,
                 threshold: float = NEUTRAL_THRESHOLD) -> None:
        if window_s <= 0 or bucket_s <= 0 or max_words <= 0:
            raise ValueError("window_s, bucket_s and max_words must be positive")
        self.window_s = window_s
        self.bucket_s = bucket_s
        self.max_words = max_words
        self.threshold = threshold
        self.watermark_ms = 0
        self.buckets: dict[int, list[Any]] = {}   # bucket start (epoch s) -> bucket

    def _evict(self, now_ms: int) -> None:
        horizon = now_ms // 1000 - self.window_s
        for start in [s for s in self.buckets if s + self.bucket_s <= horizon]:
            del self.buckets[start]

    def add(self, ts_ms: int, score: float, words: Iterable[str]) -> None:
        """Count one comment with sentiment ``score`` and its keywords at event time ``ts_ms``."""
        if ts_ms > self.watermark_ms:
            self.watermark_ms = ts_ms
            self._evict(ts_ms)
        start = ts_ms // 1000 // self.bucket_s * self.bucket_s
        if start + self.bucket_s <= self.watermark_ms // 1000 - self.window_s:
            return   # older than the window
        bucket = self.buckets.get(start)
        if bucket is None:
            bucket = self.buckets[start] = [0.0, 0, 0, 0, {}]
        bucket[0] += score
        bucket[1] += 1
        if score >= self.threshold:
            bucket[2] += 1
        elif score <= -self.threshold:
            bucket[3] += 1
        counts: dict[str, int] = bucket[4]
        for word in words:
            if word in counts:
                counts[word] += 1
            elif len(word) > self.MAX_WORD_CHARS:
                continue
            elif len(counts) < self.max_words:
                counts[word] = 1
            else:
                least = min(counts, key=counts.__getitem__)
                counts[word] = counts.pop(least) + 1

    def summary(self, now_ms: int, top: int = 10) -> dict[str, Any]:
        """Mood of the window ending at ``now_ms``: mean sentiment, shares, count, keywords."""
        self._evict(max(now_ms, self.watermark_ms))
        horizon, now_s = now_ms // 1000 - self.window_s, now_ms // 1000
        total, n, positive, negative = 0.0, 0, 0, 0
        words: dict[str, int] = {}
        for start, (score_sum, count, pos, neg, counts) in self.buckets.items():
            if start + self.bucket_s <= horizon or start > now_s:
                continue
            total += score_sum
            n += count
            positive += pos
            negative += neg
            for word, c in counts.items():
                words[word] = words.get(word, 0) + c
        ranked = sorted(words.items(), key=lambda item: (-item[1], item[0]))[:top]
        return {
            "sentiment": round(total / n, 3) if n else 0.0,
            "positive_share": round(positive / n, 3) if n else 0.0,
            "negative_share": round(negative / n, 3) if n else 0.0,
            "comments": n,
            "keywords": [{"word": w, "count": c} for w, c in ranked],
            "window_s": self.window_s,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready snapshot (string keys only)."""
        return {
            "window_s": self.window_s, "bucket_s": self.bucket_s, "max_words": self.max_words,
            "threshold": self.threshold, "watermark_ms": self.watermark_ms,
            "buckets": {str(start): [b[0], b[1], b[2], b[3], dict(b[4])]
                        for start, b in self.buckets.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoodWindow:
        """Restore a :meth:`to_dict` snapshot."""
        window = cls(data.get("window_s", 300), data.get("bucket_s", 10),
                     data.get("max_words", 50), data.get("threshold", NEUTRAL_THRESHOLD))
        window.watermark_ms = int(data.get("watermark_ms", 0))
        window.buckets = {int(start): [float(b[0]), int(b[1]), int(b[2]), int(b[3]),
                                       {str(w): int(c) for w, c in b[4].items()}]
                          for start, b in data.get("buckets", {}).items()}
        return window

    def __repr__(self) -> str:
        return (f"MoodWindow(window_s={self.window_s}, buckets={len(self.buckets)}, "
                f"watermark_ms={self.watermark_ms})")


def ngram_features(text: str) -> list[str]:
    """Distinct n-gram features of a comment, in reading order (before hashing).

    CJK runs give their character 1-, 2- and 3-grams (no dictionary segmentation); Latin words
    give the word (``w:``), the bigram with the previous word of the clause (``b:``) and the
    word's character 3-grams with ``<`` ``>`` boundary marks (``c:``, robust to "soooo" and
    typos); emoji, ``!`` and a question mark are features of their own.

    >>> ngram_features("好看吗?")
    ['好', '看', '吗', '好看', '看吗', '好看吗', '?']
    >>> ngram_features("so good!")[:5]
    ['w:so', 'c:<so', 'c:so>', 'w:good', 'b:so good']
    """
    features: list[str] = []
    previous_word = ""
    for kind, value in segments(text):
        if kind is CJK:
            for size in (1, 2, 3):
                features.extend(value[i:i + size] for i in range(len(value) - size + 1))
            previous_word = ""
        elif kind is WORD:
            features.append("w:" + value)
            if previous_word:
                features.append(f"b:{previous_word} {value}")
            padded = f"<{value}>"
            features.extend("c:" + padded[i:i + 3] for i in range(len(padded) - 2))
            previous_word = value
        elif kind is EMOJI:
            features.append(value)
        elif kind is BANG:
            features.append("!")
        else:
            if value == "?":
                features.append("?")
            previous_word = ""
    return list(dict.fromkeys(features))


class NgramSentiment:
    """Online comment sentiment over hashed character n-grams, bootstrapped from the lexicon.

    A three-class model (positive, negative, neutral) whose logits are the lexicon's verdict
    plus a learned correction. The lexicon score ``s = tanh(lexicon_score)`` (what an
    untrained :class:`LexiconSentiment` says) becomes the prior
    ``q = (1 - PRIOR_SMOOTHING) * (max(s, 0), max(-s, 0), 1 - |s|) + PRIOR_SMOOTHING / 3``;
    a linear model over the hashed features of :func:`ngram_features` adds ``learned`` logits::

        p = softmax(log q + a * learned),   a = max_learned_weight * n / (n + warmup)
        score = (p_positive - p_negative) / (1 - PRIOR_SMOOTHING), clipped to [-1, 1]

    ``n`` counts learning steps, so a new model is exactly the lexicon and the learned part's
    say rises with the examples seen. Learning is one SGD step on the cross-entropy of
    ``softmax(log q + learned)``, i.e. the model learns what the lexicon gets wrong (a
    residual): comments the lexicon already gets right barely move it.

    Each feature is hashed with CRC-32 into one of ``n_buckets`` rows of three float32
    weights, with a sign from another bit of the hash (the hashing trick: a fixed array,
    ``12 * n_buckets`` bytes whatever the vocabulary; collisions cancel out on average).

    It learns from explicit labels (:meth:`learn_one`: ``label`` in ``[-1, 1]`` is the target
    ``(max(label, 0), max(-label, 0), 1 - |label|)``, so 1 positive, -1 negative, 0 neutral)
    and from weak labels (:meth:`learn_weak`, self-training): the lexicon's confident
    verdicts (``|s| >= weak_threshold``) and comments with no lexicon cue at all (neutral),
    each step scaled by ``weak_weight`` and leaving the class bias alone (the mix of the
    lexicon's confident verdicts is not the mix of the comments). Deterministic (no
    randomness, no salted ``hash``) and picklable.

    Parameters
    ----------
    n_buckets
        Hashed feature rows (a power of two).
    learning_rate
        SGD step size.
    l2
        L2 penalty on the weights a step touches.
    warmup
        Learning steps after which the learned model has half of its maximum say.
    max_learned_weight
        Scale of the learned logits once warmed up.
    weak_threshold
        Smallest ``|s|`` taken as a weak positive/negative label.
    weak_weight
        Step scale of a weak label relative to an explicit one.
    weak_confidence
        A weak label is skipped once the model gives its class this probability, so repeated
        comments (templates, spam) cannot drive it to certainty.

    Examples
    --------
    >>> model = NgramSentiment(n_buckets=2**12)
    >>> model.predict_one("质量很差") == round(math.tanh(lexicon_score("质量很差")[0]), 6)
    True
    >>> model.predict_label("踩雷了"), model.predict_label("回头客")   # no lexicon cue
    ('neutral', 'neutral')
    >>> for _ in range(15):
    ...     model.learn_one("又踩雷了", -1.0)
    ...     model.learn_one("第三单了 回头客", 1.0)
    >>> model.predict_label("踩雷了"), model.predict_label("回头客")
    ('negative', 'positive')
    >>> model.learn_weak("太好看了!"), model.learn_weak("多少钱"), model.learn_weak("还行吧 ok")
    (1.0, 0.0, None)
    >>> model.n_learned, model.model_version
    (32, 'ngram-sentiment-1.32')
    """

    MODEL_NAME = "ngram-sentiment"
    ALGORITHM_VERSION = 1
    PRIOR_SMOOTHING = 0.1
    CLASSES = ("positive", "negative", "neutral")
    ANALYSES_CACHED = 1024   # distinct texts whose analysis is kept (live comments repeat)

    def __init__(self, n_buckets: int = 2**17, learning_rate: float = 0.5, l2: float = 1e-6,
                 warmup: int = 20, max_learned_weight: float = 1.0,
                 weak_threshold: float = 0.45, weak_weight: float = 0.3,
                 weak_confidence: float = 0.95) -> None:
        if n_buckets < 2 or n_buckets & (n_buckets - 1) or n_buckets > 2**30:
            raise ValueError("n_buckets must be a power of two in [2, 2**30]")
        if learning_rate <= 0 or l2 < 0 or warmup < 0 or max_learned_weight < 0 \
                or weak_weight < 0:
            raise ValueError("learning_rate must be > 0; l2, warmup, max_learned_weight and "
                             "weak_weight >= 0")
        self.n_buckets = n_buckets
        self.learning_rate = learning_rate
        self.l2 = l2
        self.warmup = warmup
        self.max_learned_weight = max_learned_weight
        self.weak_threshold = weak_threshold
        self.weak_weight = weak_weight
        self.weak_confidence = weak_confidence
        self.bias = [0.0, 0.0, 0.0]
        self.n_learned = 0
        self.n_weak = 0
        # Row b holds the positive, negative and neutral weights of bucket b.
        self.weights = array("f", bytes(4 * 3 * n_buckets))
        self._clear_caches()

    # ------------------------------------------------------------------ internals
    def _clear_caches(self) -> None:
        self._last: tuple[str, float, dict[int, float]] | None = None
        # text -> (raw lexicon score, feature vector, prior logits): a function of the text
        # alone, kept for the last ANALYSES_CACHED distinct texts
        self._analyses: dict[str, tuple[float, dict[int, float], list[float]]] = {}
        # (vector, n_learned, learned logits) of the last vector scored: the weights change
        # only in a learning step, which counts in n_learned
        self._logits: tuple[dict[int, float], int, list[float]] | None = None

    def _analysis(self, text: str) -> tuple[float, dict[int, float], list[float]]:
        """(raw lexicon score, {bucket: signed feature value}, prior logits), cached: the
        room agent predicts and then learns from the same comment, and comments repeat."""
        cached = self._analyses.get(text)
        if cached is None:
            raw, vector = self._analyse(text)
            analyses = self._analyses
            if analyses and len(analyses) >= self.ANALYSES_CACHED:
                del analyses[next(iter(analyses))]  # the oldest
            cached = analyses[text] = (raw, vector, self._prior_logits(raw))
        return cached

    def _analyse(self, text: str) -> tuple[float, dict[int, float]]:
        """(raw lexicon score, {bucket: signed feature value}); the last comment's analysis is
        cached."""
        last = self._last
        if last is not None and last[0] == text:
            return last[1], last[2]
        raw = lexicon_score(text)[0]
        features = ngram_features(text)
        x = 1.0 / math.sqrt(len(features)) if features else 0.0
        mask = self.n_buckets - 1
        vector: dict[int, float] = {}
        for feature in features:
            hashed = zlib.crc32(feature.encode())
            bucket = hashed & mask
            # Bit 31 is not among the index bits (n_buckets <= 2**30): an independent sign.
            vector[bucket] = vector.get(bucket, 0.0) + (x if hashed >> 31 else -x)
        self._last = (text, raw, vector)
        return raw, vector

    def _prior_logits(self, raw: float) -> list[float]:
        s = math.tanh(raw)
        keep, spread = 1.0 - self.PRIOR_SMOOTHING, self.PRIOR_SMOOTHING / 3
        return [math.log(keep * q + spread) for q in (max(s, 0.0), max(-s, 0.0), 1.0 - abs(s))]

    def _learned_logits(self, vector: dict[int, float]) -> list[float]:
        """Learned logits of ``vector`` (the list returned must not be changed)."""
        cached, n = self._logits, self.n_learned
        if cached is not None and cached[0] is vector and cached[1] == n:
            return cached[2]
        weights = self.weights
        pos, neg, neu = self.bias
        for bucket, value in vector.items():
            row = 3 * bucket
            pos += weights[row] * value
            neg += weights[row + 1] * value
            neu += weights[row + 2] * value
        logits = [pos, neg, neu]
        self._logits = (vector, n, logits)
        return logits

    @staticmethod
    def _softmax(logits: list[float]) -> list[float]:
        top = max(logits)
        exps = [math.exp(z - top) for z in logits]
        total = sum(exps)
        return [e / total for e in exps]

    @property
    def learned_share(self) -> float:
        """Scale of the learned logits now: ``max_learned_weight * n / (n + warmup)``."""
        n = self.n_learned
        return self.max_learned_weight * n / (n + self.warmup) if n else 0.0

    # ------------------------------------------------------------------ API
    def predict_proba_one(self, text: str) -> dict[str, float]:
        """Probabilities of positive, negative and neutral."""
        return dict(zip(self.CLASSES, self._proba(text), strict=True))

    def _proba(self, text: str) -> list[float]:
        _, vector, prior = self._analysis(text)
        share = self.learned_share
        if share:
            learned = self._learned_logits(vector)
            prior = [p + share * z for p, z in zip(prior, learned, strict=True)]
        return self._softmax(prior)

    def predict_one(self, text: str) -> float:
        """Sentiment of one comment in ``[-1, 1]``; 0 is neutral."""
        if not self.n_learned:
            return round(math.tanh(self._analysis(text)[0]), 6)
        positive, negative, _ = self._proba(text)
        score = (positive - negative) / (1.0 - self.PRIOR_SMOOTHING)
        return round(max(-1.0, min(1.0, score)), 6)

    def predict_label(self, text: str, threshold: float = NEUTRAL_THRESHOLD) -> str:
        """``"positive"``, ``"negative"`` or ``"neutral"``; see :func:`label`."""
        return label(self.predict_one(text), threshold)

    def learn_one(self, text: str, label: float, weight: float = 1.0) -> None:
        """One SGD step towards ``label`` in ``[-1, 1]`` (clipped), scaled by ``weight``."""
        self._step(text, label, weight, learn_bias=True)

    def _step(self, text: str, label: float, weight: float, learn_bias: bool,
              until: float = 1.0) -> bool:
        """One SGD step; skipped (False) if the target class already has ``until``."""
        target = float(label)
        if math.isnan(target):
            raise ValueError("label must be a number in [-1, 1]")
        target = max(-1.0, min(1.0, target))
        _, vector, prior = self._analysis(text)
        learned = self._learned_logits(vector)
        proba = self._softmax([p + z for p, z in zip(prior, learned, strict=True)])
        wanted = (max(target, 0.0), max(-target, 0.0), 1.0 - abs(target))
        if until < 1.0 and max(p for p, t in zip(proba, wanted, strict=True) if t >= 0.5) \
                >= until:
            return False
        gradient = [(p - t) * weight for p, t in zip(proba, wanted, strict=True)]
        rate, l2, weights = self.learning_rate, self.l2, self.weights
        if learn_bias:
            # Slow, since it shifts every comment.
            for k in range(3):
                self.bias[k] -= 0.1 * rate * gradient[k]
        g0, g1, g2 = gradient
        for bucket, value in vector.items():
            row = 3 * bucket
            w = weights[row]
            weights[row] = w - rate * (g0 * value + l2 * w)
            w = weights[row + 1]
            weights[row + 1] = w - rate * (g1 * value + l2 * w)
            w = weights[row + 2]
            weights[row + 2] = w - rate * (g2 * value + l2 * w)
        self.n_learned += 1
        return True

    def learn_weak(self, text: str) -> float | None:
        """Self-training: learn the lexicon's own verdict where it is sure.

        Returns the weak label learnt (1.0, -1.0, or 0.0 for a comment without any lexicon
        cue), or None when the lexicon is unsure and nothing was learnt.
        """
        raw, vector, _ = self._analysis(text)
        if not vector:
            return None
        s = math.tanh(raw)
        if abs(s) >= self.weak_threshold:
            target = 1.0 if s > 0 else -1.0
        elif raw == 0.0:
            target = 0.0
        else:
            return None
        # No bias step: the mix of the lexicon's confident verdicts is not the comments' mix.
        if not self._step(text, target, self.weak_weight, learn_bias=False,
                          until=self.weak_confidence):
            return None
        self.n_weak += 1
        return target

    @property
    def model_version(self) -> str:
        """``ngram-sentiment-<algorithm version>.<learning steps>``."""
        return f"{self.MODEL_NAME}-{self.ALGORITHM_VERSION}.{self.n_learned}"

    def stats(self) -> dict[str, int]:
        """Size figures: feature rows (fixed: the memory cap), rows trained so far, weight
        bytes, learning steps (explicit and weak)."""
        weights = self.weights
        rows = np.frombuffer(weights, dtype=np.float32).reshape(-1, 3)
        trained = int(np.count_nonzero(rows.any(axis=1)))  # a Python loop took ~60 ms
        return {"buckets": len(weights) // 3, "trained_buckets": trained,
                "bytes": weights.itemsize * len(weights),
                "n_learned": self.n_learned, "n_weak": self.n_weak}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for cache in ("_analyses", "_logits"):  # caches, not state
            state.pop(cache, None)
        state["_last"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clear_caches()

    def __repr__(self) -> str:
        return (f"NgramSentiment(n_buckets={self.n_buckets}, n_learned={self.n_learned}, "
                f"n_weak={self.n_weak})")
