"""Tokenising live-room comments in Chinese and English (pure Python, one regex pass).

A comment is split into *segments*: English/Latin words (lower-cased, inner apostrophes kept:
``can't``), runs of CJK characters (Han and kana), emoji, exclamation marks and clause breaks
(``, . ; ? …`` and their full-width forms). :func:`tokenize` turns the segments into model
tokens, :func:`keywords` into the words worth showing a host, and
:mod:`online_models.sentiment` scores them.

Chinese is not segmented into words (no dictionary): a CJK run becomes its overlapping
character bigrams, which is the standard dictionary-free representation for short Chinese
text, and a run of one character stays that character.

>>> tokenize("Love this!! 太好看了❤")
['love', 'this', '太好', '好看', '看了', '❤️']
>>> keywords("I don't love THIS colour, it's the host's pick 🔥🔥")
['love', 'colour', 'host', 'pick', '🔥']
"""

from __future__ import annotations

import re
import unicodedata

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
    possessive ``'s`` is cut. Chinese: bigrams (or a lone character) are dropped when they
    contain a character of :data:`CHINESE_FUNCTION_CHARS` or end in one of
    :data:`CHINESE_PREFIX_CHARS`. Emoji are kept.

    >>> keywords("质量很差, 发货太慢")
    ['质量', '很差', '发货', '太慢']
    >>> keywords("the price is 99 and it's a steal")
    ['price', 'steal']
    """
    words: list[str] = []
    seen: set[str] = set()
    function_chars, prefix_chars = CHINESE_FUNCTION_CHARS, CHINESE_PREFIX_CHARS
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
            candidates = [gram for gram in cjk_tokens(value)
                          if gram[0] not in function_chars and gram[-1] not in function_chars
                          and gram[-1] not in prefix_chars]
        elif kind is EMOJI:
            candidates = (value,)
        else:
            continue
        for word in candidates:
            if word not in seen:
                seen.add(word)
                words.append(word)
    return words
