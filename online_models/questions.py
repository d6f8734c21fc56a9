"""Questions in live-room chat: is a comment asking something, and about what (zh + en).

Rule-based, pure Python, no dictionary segmenter: a comment is a question when it carries an
interrogative cue -- a question mark, a Chinese question particle or question word (吗, 多少,
有没有, 怎么, 能不能, 什么时候, 几天, 哪 ...) or an English question opening (how much, do you
have, can I, is it, when ...) -- and is not one of the chat's exclamations dressed as a
question (太好看了吧?, 怎么这么好看, who cares?, how cute!) or a social call (有没有人一起).
Its topic is the one whose keywords cover most of it (ties: the more specific topic first):
:data:`TOPICS`. The topic lexicon also reads a host's statements (``topic_of``), so a host
comment "XL 偏大一码" counts as an answer to size questions.

Measured on ``tests/data/questions_labelled.tsv`` (``python -m benchmarks.eval_questions``).

>>> classify("这个多少钱?"), classify("有没有优惠券"), classify("太好看了吧?")
('price', 'discount', None)
>>> classify("do you have it in black?"), classify("ship to canada?"), classify("love it")
('variant', 'shipping', None)
>>> is_question("有没有人一起"), is_question("什么时候发货"), is_question("how cute is that?!")
(False, True, False)
>>> topic_of("XL 偏大一码 选小一号")
'size'
"""

from __future__ import annotations

import re
from functools import lru_cache

# Topics, in tie-break order (more specific first); "other" when no keyword matches.
TOPICS = ("stock", "discount", "shipping", "size", "variant", "material", "price", "other")

_LEXICON: dict[str, tuple[str, ...]] = {
    "stock": (
        "有货", "没货", "现货", "库存", "补货", "还有吗", "还有没有", "还剩", "剩几", "卖完",
        "售罄", "断货", "抢不到", "抢到", "上架", "链接", "几号", "拍哪", "在哪买", "哪里买",
        "怎么买", "怎么拍", "下架", "还能买", "买得到", "没抢", "返场",
        "in stock", "out of stock", "sold out", "restock", "back in stock", "available",
        "left", "any left", "link", "where to buy", "where can i buy", "how do i buy", "how to buy",
        "how do i order", "still have", "any more", "more coming", "buy it", "sell it again",
        "still order", "order after", "limited edition",
    ),
    "discount": (
        "优惠", "券", "打折", "折扣", "几折", "满减", "福利", "赠品", "送什么", "有送", "送的",
        "便宜点", "便宜一点", "秒杀", "红包", "抽奖", "活动", "降价", "减价", "返现", "买一送",
        "第二件", "半价", "团购", "包邮价", "会员价", "专属价", "小样", "送个",
        "discount", "coupon", "code", "promo", "deal", "sale", "% off", "percent off",
        "bundle", "free gift", "giveaway", "voucher", "cheaper", "price drop", "buy one",
        "bogo", "freebie", "flash",
    ),
    "shipping": (
        "发货", "快递", "包邮", "物流", "到货", "运费", "邮费", "寄", "配送", "送到", "几天到",
        "多久到", "顺丰", "到家", "偏远", "新疆", "西藏", "海外", "国外", "香港", "台湾",
        "发什么", "退货", "退换", "换货", "售后", "退款", "能换", "几天", "能到", "时候到",
        "时候发", "地址", "加急", "运费多少", "邮费多少",
        "ship", "shipping", "shipped", "deliver", "delivery", "arrive", "postage", "courier",
        "tracking", "overseas", "address",
        "international", "canada", "uk", "australia", "usa", "europe", "return", "refund",
        "exchange",
    ),
    "size": (
        "尺码", "码数", "尺寸", "大小", "身高", "体重", "斤", "偏大", "偏小", "正码", "胖",
        "瘦", "穿", "膝盖", "裤长", "衣长", "袖长", "能装", "装得下", "放得下", "腰围", "胸围",
        "肩宽", "长度", "多长", "多大", "多高", "多宽", "厘米", "cm",
        "穿什么码", "几码", "s码", "m码", "l码", "xl", "xxl", "xs", "码", "宽松", "修身", "脚宽",
        "size", "fit", "tall", "height", "weight", "inch", "length", "how big", "how long is",
        "petite", "plus size", "wide", "runs small", "runs large", "lbs", "kg", "waist",
        "medium", "small", "large", "heavy", "weigh",
    ),
    "variant": (
        "颜色", "色号", "什么色", "黑色", "白色", "红色", "蓝色", "粉色", "绿色", "灰色", "黄色",
        "紫色", "米色", "卡其", "杏色", "款式", "别的款", "其他款", "型号", "口味", "味道",
        "香味", "无香", "香", "套装", "规格", "容量", "几个色", "别的颜色", "其他颜色", "色", "款",
        "color", "colour", "black", "white", "red", "blue", "pink", "green", "grey", "gray",
        "beige", "navy", "shade", "flavor", "flavour", "scent", "style", "version", "model",
        "variant", "pattern", "other colors", "ml",
    ),
    "material": (
        "材质", "面料", "棉", "质量", "成分", "真皮", "羊毛", "起球", "掉色", "褪色", "缩水",
        "防水", "保质期", "过敏", "敏感肌", "孕妇", "安全", "耐用", "质感", "什么料", "会坏",
        "好用", "透气", "闷", "冷", "保暖", "容易脏", "洗", "手洗", "机洗", "正品", "假货", "配料",
        "含糖", "甲醛", "产地",
        "material", "fabric", "cotton", "quality", "leather", "waterproof", "durable",
        "ingredient", "wash", "sensitive skin", "genuine", "authentic", "real", "organic",
        "breathable", "shrink", "made of", "made in", "pregnant", "safe", "last", "vegan",
        "battery", "warranty", "skin", "smell",
    ),
    "price": (
        "多少钱", "价格", "价钱", "几块", "多少米", "贵", "便宜", "钱", "元", "块", "价",
        "多少", "米", "花呗", "分期", "付款", "支付",
        "price", "how much", "cost", "$", "¥", "expensive", "cheap", "usd", "rmb", "dollars",
        "pay", "total",
    ),
}
_ASCII_WORD = re.compile(r"^[a-z][a-z ]*$")
_LATIN_TOKEN = re.compile(r"[a-z]+")
# Latin keywords are matched on whole words (``red`` not in ``ordered``, but ``ml`` in
# ``200ml``; a plural ``s`` is allowed), longest phrase first; the others (Chinese, symbols)
# as substrings, longest first, each match blanked out so that a shorter keyword inside it
# (多少 and 钱 in 多少钱) does not count again. One pass of dict lookups and ``in`` tests:
# ~6x cheaper than one regex alternation per topic.
_PHRASES: dict[str, list[str]] = {}
_SUBSTRINGS: dict[str, list[str]] = {}
for _topic, _words in _LEXICON.items():
    for _word in _words:
        _table = _PHRASES if _ASCII_WORD.match(_word) else _SUBSTRINGS
        _table.setdefault(_word, []).append(_topic)
_BY_FIRST: dict[str, list[tuple[str, list[str]]]] = {}   # first character -> keywords
for _word, _topics in _SUBSTRINGS.items():
    _BY_FIRST.setdefault(_word[0], []).append((_word, _topics))
_LONGEST_PHRASE = max(len(w.split()) for w in _PHRASES)


def _scores(lowered: str) -> dict[str, int]:
    """Characters of ``lowered`` each topic's keywords cover."""
    scores: dict[str, int] = {}
    rest = lowered
    candidates = [kw for ch in set(lowered) for kw in _BY_FIRST.get(ch, ())]
    candidates.sort(key=lambda kw: -len(kw[0]))
    for word, topics in candidates:
        if word in rest:
            covered = rest.count(word) * len(word)
            for topic in topics:
                scores[topic] = scores.get(topic, 0) + covered
            rest = rest.replace(word, "\x00")
    tokens = _LATIN_TOKEN.findall(lowered)
    i = 0
    while i < len(tokens):
        for n in range(min(_LONGEST_PHRASE, len(tokens) - i), 0, -1):
            phrase = " ".join(tokens[i:i + n])
            topics = _PHRASES.get(phrase)
            if topics is None and phrase.endswith("s"):
                topics = _PHRASES.get(phrase[:-1])
            if topics is not None:
                for topic in topics:
                    scores[topic] = scores.get(topic, 0) + len(phrase)
                i += n
                break
        else:
            i += 1
    return scores


# --------------------------------------------------------------------- question cues
_QMARK = re.compile(r"[?？]")
_ZH_CUES = re.compile(
    r"多少|多久|多长|多大|多高|多重|几[天号码个件斤岁点时折块次色款位]|几号|几时|什么|啥|咋|怎么|怎样|"
    r"如何|哪|为什么|为啥|有没有|有木有|是不是|能不能|可不可以|会不会|要不要|好不好|行不行|"
    r"([\u4e00-\u9fff])不\1|还是|"
    r"[能会可]以?.{0,6}吗|吗|么[?？]?$|呢[?？]?$|谁|是否|还有没|多重"
)
_EN_OPENERS = re.compile(
    r"^(?:how|what|when|where|which|why|who|whats|what's|hows|is|are|was|were|do|does|did|"
    r"can|could|will|would|should|shall|may|has|have|any|anyone|anybody|u have|you have)"
    r"(?!\w|'t\b)"
)
_EN_CUES = re.compile(
    r"\b(?:how much|how many|how long|how big|how soon|do you (?:have|ship|sell)|can i|"
    r"is it|is this|is there|are there|are they|does it|does this|will it|when will|"
    r"when is|when do|when does|what size|what colou?r|which size|which colou?r|"
    r"wondering|anyone know|any idea|i wonder|tell me|please let me know|is that)\b"
)
# exclamations and banter that look like questions
_ZH_RHETORICAL = re.compile(
    r"太.{1,6}了[吧吗啊呀]*[?？!！]*$|怎么[这那]么|怎么可以[这那]么|谁[不能]|有没有人|"
    r"有谁.{0,4}一起|是不是太|[这那]也太|不要太|好不好看[?？]?$|什么神仙|啥也不是|"
    r"为什么[这那]么(?:好看|美|帅|可爱)|哪里不好|谁懂|谁能拒绝|还有谁|有没有姐妹|^[哈嘿呵]+[?？]*$|"
    r"[吧][?？]+$|[嘛]$"
)
_EN_RHETORICAL = re.compile(
    r"^(?:how (?:cute|pretty|beautiful|gorgeous|amazing|lovely|cool|nice|sweet|adorable)|"
    r"what a|what an|who cares|who else|are you kidding|are you serious|is it just me|"
    r"can you believe|isn't (?:it|she|he|this|that) |aren't they |why is (?:she|he) so|"
    r"guess what|you know what|right\b|anyone else|omg|lol|wow|how is this so|"
    r"how are (?:you|u) so|who's watching|who is watching|whos here|who's here)"
)
_ZH_PARTICLE_EXCEPTIONS = re.compile(r"[好太真超].{0,3}呢$|是呢$|呢[~～]$")
_TRAILING = re.compile(r"[\s!！~～。.,，…🙂-🫶❤️\U0001f000-\U0001faff\u2600-\u27bf]+$")


def _normal(text: str) -> str:
    return _TRAILING.sub("", text.strip().lower())


def is_question(text: str) -> bool:
    """True if the comment asks something (not an exclamation dressed as one).

    >>> [is_question(t) for t in ("多少钱", "怎么这么好看", "can i pay later", "what a deal!")]
    [True, False, True, False]
    """
    raw = text.strip().lower()
    body = _normal(raw)
    if not body:
        return False
    marked = bool(_QMARK.search(raw))
    body_plain = _QMARK.sub("", body).strip()
    if _ZH_RHETORICAL.search(body) or _EN_RHETORICAL.search(body_plain):
        # a rhetorical form asks nothing, unless it also names something to ask about
        return bool(_EN_CUES.search(body_plain)) and not _EN_RHETORICAL.search(body_plain)
    if _ZH_PARTICLE_EXCEPTIONS.search(body_plain):
        return False
    if marked:
        return True
    if _ZH_CUES.search(body_plain):
        return True
    return bool(_EN_OPENERS.search(body_plain) or _EN_CUES.search(body_plain))


def topic_of(text: str) -> str:
    """The topic whose keywords ``text`` matches most (ties: the order of :data:`TOPICS`);
    ``"other"`` when none matches. Works on statements too (a host's answer).

    >>> topic_of("运费多少钱"), topic_of("黑色还有货吗"), topic_of("hello")
    ('shipping', 'stock', 'other')
    """
    scores = _scores(text.lower())
    best, best_score = "other", 0
    for topic in TOPICS[:-1]:
        # characters matched: a longer keyword is a more specific one (多少钱一斤: price)
        score = scores.get(topic, 0)
        if score > best_score:
            best, best_score = topic, score
    return best


@lru_cache(maxsize=4096)  # chat repeats itself: the same short texts again and again
def classify(text: str) -> str | None:
    """The topic of a question, or None if ``text`` asks nothing.

    >>> classify("什么时候发货"), classify("is it real leather?"), classify("主播好美")
    ('shipping', 'material', None)
    """
    return topic_of(text) if is_question(text) else None
