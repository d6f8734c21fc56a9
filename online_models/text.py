"""Tokenising live-room comments in Chinese and English (pure Python, one regex pass).

A comment is split into *segments*: English/Latin words (lower-cased, inner apostrophes kept:
``can't``), runs of CJK characters (Han and kana), emoji, exclamation marks and clause breaks
(``, . ; ? …`` and their full-width forms). :func:`tokenize` turns the segments into model
tokens, :func:`keywords` into the words worth showing a host, and
:mod:`online_models.sentiment` scores them.

For the sentiment model a CJK run becomes its overlapping character bigrams (the standard
dictionary-free representation for short Chinese text; a run of one character stays that
character). The keywords a host reads are real words: :func:`keywords` segments a CJK run
with jieba's dictionary (its HMM guesses words the dictionary lacks, e.g. ``主播``) and
drops :data:`CHINESE_STOP_WORDS`. jieba loads its dictionary (~1 s, and ~1.5 s the first
time, when it writes its cache) on first use: :func:`warm_up` does it ahead.

>>> tokenize("Love this!! 太好看了❤")
['love', 'this', '太好', '好看', '看了', '❤️']
>>> keywords("I don't love THIS colour, it's the host's pick 🔥🔥")
['love', 'colour', 'host', 'pick', '🔥']
"""

from __future__ import annotations

import logging
import re
import unicodedata

import jieba

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
# Pictographs, emoticons, transport, supplemental symbols; misc symbols and dingbats
# (❤ ☀ ✨ ✔); misc technical (⌚ ⏰); stars and arrows block (⭐ ⬆).
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf\u2300-\u23ff\u2b00-\u2bff"
_SEGMENT = re.compile(
    rf"([{_CJK}]+)"                                  # 1: CJK run
    rf"|([\U0001f1e6-\U0001f1ff]{{2}}|[{_EMOJI}])"   # 2: flag pair or one emoji
    rf"|((?:[^\W_{_CJK}])+(?:'(?:[^\W_{_CJK}])+)*)"  # 3: word, inner apostrophes kept
    r"|(!)"                                          # 4: exclamation
    r"|([,.;:?\u2026\u3001\u3002~\u2014]|\s-\s)"     # 5: clause break
)
# Presentation selectors, zero-width joiner, skin tones and the keycap mark carry no meaning
# for mood; curly quotes and similar marks are apostrophes.
_NORMALISE = {
    0xFE0E: None, 0xFE0F: None, 0x200D: None, 0x20E3: None,
    **{cp: None for cp in range(0x1F3FB, 0x1F400)},
    **{cp: "'" for cp in (0x2018, 0x2019, 0x201B, 0x02BC, 0x0060, 0x00B4)},
}

WORD, CJK, EMOJI, BANG, BREAK = "w", "h", "e", "!", ","
MAX_KEYWORD_CHARS = 30   # longer "words" are links, hashes or key-mashing
# Chinese characters of one comment given to the segmenter (~4 µs each): a long comment
# costs at most ~0.15 ms, whatever its length (benchmarks/bench_keywords.py)
MAX_SEGMENTED_CHARS = 32
_KINDS = (CJK, EMOJI, WORD, BANG, BREAK)

ENGLISH_STOP_WORDS = frozenset((
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
    "aren't", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
    "but", "by", "can", "could", "couldn't", "did", "didn't", "do", "does", "doesn't", "doing",
    "don't", "down", "during", "each", "few", "for", "from", "further", "had", "hadn't", "has",
    "hasn't", "have", "haven't", "having", "he", "he'd", "he'll", "he's", "her", "here", "here's",
    "hers", "herself", "him", "himself", "his", "how", "how's", "i", "i'd", "i'll", "i'm", "i've",
    "if", "in", "into", "is", "isn't", "it", "it's", "its", "itself", "just", "let's", "me", "more",
    "most", "mustn't", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only",
    "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same", "shan't",
    "she", "she'd", "she'll", "she's", "should", "shouldn't", "so", "some", "such", "than", "that",
    "that's", "the", "their", "theirs", "them", "themselves", "then", "there", "there's", "these",
    "they", "they'd", "they'll", "they're", "they've", "this", "those", "through", "to", "too",
    "under", "until", "up", "very", "was", "wasn't", "we", "we'd", "we'll", "we're", "we've",
    "were", "weren't", "what", "what's", "when", "when's", "where", "where's", "which", "while",
    "who", "who's", "whom", "why", "why's", "will", "with", "won't", "would", "wouldn't", "you",
    "you'd", "you'll", "you're", "you've", "your", "yours", "yourself", "yourselves", "also", "got",
    "get", "gets", "im", "ive", "dont", "cant", "can't", "cannot", "ain't", "its", "u", "ur", "pls",
    "plz", "really"
))

# Particles, pronouns, the copula, the measure word 个 and the commonest function adverbs: a
# bigram containing one is almost always a fragment ("看了", "这个", "有优"), not a topic word.
CHINESE_FUNCTION_CHARS = frozenset(
    "的了吗呢吧啊呀哦嘛么我你他她它们这那个是在和把被给让得地着过就都也还又一有"
)
# Degree adverbs and negators come right before the word they modify, so as the first
# character they make a meaningful bigram ("太贵", "很差", "不值") and as the second a
# fragment across words ("货太", "量很", "片不").
CHINESE_PREFIX_CHARS = frozenset("很太不没别超最真挺更非")
# Words of two or more characters that carry no topic: pronouns, demonstratives, question
# words, conjunctions, auxiliaries and fillers of live-room chat (the question detector
# reads questions from the whole comment, not from these keywords).
_CHINESE_STOP_WORDS = """
    我们 你们 他们 她们 它们 咱们 大家 自己 别人 人家 这个 那个 这些 那些 这里 那里 这儿 那儿
    这样 那样 这么 那么 这种 那种 这件 那件 这款 那款 这次 那次 一个 一件 一下 一点 一些 一直
    一起 一样 什么 怎么 怎样 怎么样 为什么 为啥 多少 哪里 哪儿 哪个 哪些 几个 是不是 有没有
    能不能 可不可以 会不会 要不要 行不行 好不好 可以 可能 应该 已经 还是 就是 但是 可是 不过
    因为 所以 如果 虽然 而且 然后 或者 还有 只是 只有 而已 真的 确实 其实 现在 今天 刚才 时候
    起来 不了 一次 几次 上次 这次 那条 这条
    的话 之类 之前 之后 以后 以前 没有 不是 不会 不要 不能 知道 觉得 感觉 看看 想要 需要 一定
    宝宝 宝宝们 亲们 姐妹 姐妹们 家人们 主播 哈哈 哈哈哈 啊啊 嗯嗯 呵呵 吗吗
"""
CHINESE_STOP_WORDS = frozenset(_CHINESE_STOP_WORDS.split())
jieba.setLogLevel(logging.WARNING)  # not a line per dictionary load on the worker's log
_SEGMENTER = jieba.Tokenizer()


def _normalise(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text.translate(_NORMALISE))
    return text.lower()


def segments(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into ``(kind, value)`` pairs in reading order.

    ``kind`` is one of ``"w"`` (word), ``"h"`` (CJK run), ``"e"`` (emoji), ``"!"`` or ``","``
    (clause break). Text is NFKC-normalised (full-width ``\uff01`` becomes ``!``) and lower-cased;
    emoji from the text-default blocks get U+FE0F so ``❤`` and ``❤️`` are one token.

    >>> segments("GOOD\uff01质量好\uff0c但是贵👍")  # full-width "!" and ","
    [('w', 'good'), ('!', '!'), ('h', '质量好'), (',', ','), ('h', '但是贵'), ('e', '👍')]
    """
    out: list[tuple[str, str]] = []
    for match in _SEGMENT.finditer(_normalise(text)):
        group = match.lastindex or 0
        value = match[group]
        if group == 2 and value < "\U0001f000":
            value += "\ufe0f"
        out.append((_KINDS[group - 1], value))
    return out


def cjk_tokens(run: str) -> list[str]:
    """Overlapping character bigrams of a CJK run; a one-character run is itself.

    >>> cjk_tokens("太好看了"), cjk_tokens("好")
    (['太好', '好看', '看了'], ['好'])
    """
    if len(run) == 1:
        return [run]
    return [run[i:i + 2] for i in range(len(run) - 1)]


def warm_up() -> None:
    """Load the Chinese word dictionary now rather than on the first comment (a worker
    calls this before it consumes; first call ~1 s).

    >>> warm_up()
    """
    if not _SEGMENTER.initialized:
        _SEGMENTER.initialize()


def chinese_words(run: str) -> list[str]:
    """The topic words of a CJK run: jieba's words of two characters or more, except
    :data:`CHINESE_STOP_WORDS`; a degree adverb or negator of
    :data:`CHINESE_PREFIX_CHARS` is kept with the one-character word it modifies
    (``很`` + ``高``). A run of one character is itself unless a function character.

    >>> chinese_words("这个颜色绝了"), chinese_words("性价比很高"), chinese_words("冲")
    (['颜色'], ['性价比', '很高'], ['冲'])
    """
    if len(run) == 1:
        return [] if run in CHINESE_FUNCTION_CHARS else [run]
    words: list[str] = []
    pending = ""   # a lone degree adverb / negator waiting for its word
    for word in _SEGMENTER.lcut(run, HMM=True):
        if len(word) == 1:
            if pending:
                if word not in CHINESE_FUNCTION_CHARS:
                    words.append(pending + word)
                pending = ""
            elif word in CHINESE_PREFIX_CHARS:
                pending = word
            continue
        pending = ""
        if word not in CHINESE_STOP_WORDS:
            words.append(word)
    return words


def tokenize(text: str) -> list[str]:
    """Model tokens of a comment: words, CJK bigrams and emoji; punctuation dropped.

    >>> tokenize("Can\u2019t WAIT!!! 冲🔥🔥")  # a typographic apostrophe
    ["can't", 'wait', '冲', '🔥', '🔥']
    """
    tokens: list[str] = []
    for kind, value in segments(text):
        if kind is CJK:
            if len(value) == 1:
                tokens.append(value)
            else:
                tokens.extend(value[i:i + 2] for i in range(len(value) - 1))
        elif kind is WORD or kind is EMOJI:
            tokens.append(value)
    return tokens


def keywords(text: str) -> list[str]:
    """Tokens of a comment worth listing as a host's "top recent keywords", each once.

    English: stop-words, numbers and words under 2 or over 30 characters are dropped and a
    possessive ``'s`` is cut. Chinese: the words of :func:`chinese_words` in the first
    :data:`MAX_SEGMENTED_CHARS` Chinese characters. Emoji are kept.

    >>> keywords("质量很差, 发货太慢")
    ['质量', '很差', '发货', '太慢']
    >>> keywords("这个颜色绝了🔥 什么时候发货?")
    ['颜色', '🔥', '发货']
    >>> keywords("the price is 99 and it's a steal")
    ['price', 'steal']
    """
    words: list[str] = []
    seen: set[str] = set()
    budget = MAX_SEGMENTED_CHARS
    for kind, value in segments(text):
        if kind is WORD:
            if value in ENGLISH_STOP_WORDS or value.isdigit():
                continue
            if value.endswith("'s"):
                value = value[:-2]
            if not 2 <= len(value) <= MAX_KEYWORD_CHARS:
                continue
            candidates: list[str] | tuple[str] = (value,)
        elif kind is CJK:
            if budget <= 0:
                continue
            candidates = chinese_words(value[:budget])
            budget -= len(value)
        elif kind is EMOJI:
            candidates = (value,)
        else:
            continue
        for word in candidates:
            if word not in seen:
                seen.add(word)
                words.append(word)
    return words
