"""Redaction of free text before it is stored for analytics (ClickHouse history).

Live comments and search queries are free text typed by people: they can hold e-mail
addresses, phone numbers, links and @mentions of other users (often their names). History
keeps the text -- comment mood and search terms are worth analysing -- but with those
replaced by placeholders: ``[email]``, ``[phone]``, ``[url]``, ``[mention]``. What cannot
be recognised reliably by a pattern (a plain name, a street address written out) is not
caught: the README says so (a deployment that must store no free text at all would drop
the ``text`` and ``query`` columns' contents instead).

:func:`redact_text` is idempotent (redacting a redacted text changes nothing), so history
rows may be redacted again by a migration.

>>> redact_text("mail me: Jane.Doe+x@example.co.uk or call +1 (415) 555-0132!")
'mail me: [email] or call [phone]!'
>>> redact_text("see https://shop.example/p?id=9 and www.x.cn/a, ask @li_wei 👍")
'see [url] and [url], ask [mention] 👍'
>>> redact_text("138 0013 8000 微信 13800138000") == "[phone] 微信 [phone]"
True
>>> redact_text("size 42, 3 for 99.90, order #20240301, 2 x 1999")  # not phone numbers
'size 42, 3 for 99.90, order #20240301, 2 x 1999'
>>> redact_text(redact_text("a@b.io +44 20 7946 0958")) == redact_text("a@b.io +44 20 7946 0958")
True
"""

from __future__ import annotations

import re

EMAIL = "[email]"
PHONE = "[phone]"
URL = "[url]"
MENTION = "[mention]"

_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)[^\s<>\"'，。]+", re.IGNORECASE)
# Bare domains (shop.example.com/x): a dot-separated name ending in a common TLD.
_DOMAIN = re.compile(
    r"\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|cn|co|uk|de|fr|jp|info|biz|shop|app|me|ly)"
    r"(?:/[^\s<>\"'，。]*)?\b", re.IGNORECASE)
# A mention: @ + a handle, not part of an e-mail address (those are replaced first).
_MENTION = re.compile(r"(?<![\w@])@[\w.-]{1,64}", re.UNICODE)
# A phone number: 8 to 15 digits, optionally led by + or (, grouped by spaces, dots, dashes
# or parentheses. Fewer digits are prices, sizes and quantities; more are not phone numbers.
_PHONE_CANDIDATE = re.compile(r"(?<![\w#])\+?\(?\d[\d\s().-]{6,22}\d(?!\w)")
PHONE_DIGITS = (8, 15)
_MAY_HOLD = re.compile(r"[@\d.:]")  # every pattern needs an @, a digit, a dot or a colon
_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}")


def _url(match: re.Match[str]) -> str:
    text = match.group()
    stripped = text.rstrip(".,;:!?)]}")  # sentence punctuation after a link stays
    return URL + text[len(stripped):]


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    if not PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1]:
        return text
    if "." in text and not text.startswith("+") and re.fullmatch(r"\d+\.\d+", text):
        return text  # a decimal number
    if _DATE.fullmatch(text):
        return text  # 2024-03-01, 2024.3.1
    return PHONE


def redact_text(text: str) -> str:
    """``text`` with e-mail addresses, URLs, @mentions and phone numbers replaced."""
    if not _MAY_HOLD.search(text):
        return text  # most comments: nothing any pattern below could match
    text = _EMAIL.sub(EMAIL, text)
    text = _URL.sub(_url, text)
    text = _DOMAIN.sub(_url, text)
    text = _MENTION.sub(MENTION, text)
    return _PHONE_CANDIDATE.sub(_phone, text)
