"""The orjson codec, registered with Faust under the name ``orjson``.

>>> OrjsonCodec().dumps({"a": 1})
b'{"a":1}'
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

CODEC_NAME = "orjson"


class OrjsonCodec(codecs.Codec):
    """JSON via orjson: 5-10x faster than the stdlib codec Faust uses by default."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def register() -> None:
    """Make ``value_serializer="orjson"`` available to every Faust topic and table."""
    codecs.register(CODEC_NAME, OrjsonCodec())


register()
