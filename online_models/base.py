"""The contracts of the online models, one per kind, with their batch forms.

Every model learns incrementally, predicts before it learns (prequential), pickles into a
signed snapshot (:mod:`online_models.snapshot`) and bounds its memory; the conformance suite
(``tests/unit/test_model_conformance.py`` over :mod:`online_models.registry`) checks that
for each one, and ``tests/unit/test_model_base.py`` checks each against its contract here,
batch forms included. One return type per kind:

============================  ==================================  ============================
kind                          one                                 many
============================  ==================================  ============================
:class:`Recommender`          ``rank(query, k) -> list[Ranked]``  ``rank_many(queries, k)``
                                                                  ``-> list[list[Ranked]]``
:class:`DelayedClassifier`    ``score(key, context, ts) -> float``  ``score_many(events)``
                              (a probability in [0, 1])           ``-> numpy float array``
:class:`TextScorer`           ``predict_one(text) -> float``      ``predict_many(texts)``
                              (sentiment in [-1, 1])              ``-> list[float]``
:class:`StreamDetector`       ``score_one(x) -> float``           (per metric stream: none)
                              (anomaly score in [0, 1])
============================  ==================================  ============================

The worker (``agents/``) does all I/O; models see plain dicts, strings or numpy rows and
return plain values. Batch forms exist where they pay: the recommender's and the
classifiers' batch calls share one kernel or matrix product per batch.

>>> from online_models.recsys import HybridRecommender
>>> isinstance(HybridRecommender(seed=1), Recommender)
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable


class Ranked(TypedDict):
    """One recommended item: its id, score and the reason codes behind it."""

    item_id: str
    score: float
    reasons: list[str]


@runtime_checkable
class Recommender(Protocol):
    """Next-item recommendation from session events (``session_id``, ``item_id``, ``ts``,
    optional ``user_id``, ``kind``, ``room_id``)."""

    model_version: str

    def learn_one(self, event: Mapping[str, Any]) -> None: ...

    def learn_many(self, events: Iterable[Mapping[str, Any]]) -> int: ...

    def rank(self, query: Mapping[str, Any], k: int = 20) -> list[Any]: ...

    def rank_many(self, queries: Iterable[Mapping[str, Any]], k: int = 20) -> list[Any]: ...

    def stats(self) -> dict[str, Any]: ...


@runtime_checkable
class DelayedClassifier(Protocol):
    """A probability for a keyed situation whose label arrives later (a purchase within
    the session, a viewer leaving within a minute): ``score`` predicts and opens the
    pending example, ``observe`` resolves labels, ``tick`` expires them on event time,
    ``learn_pending`` learns what was resolved (in one mini-batch). ``score``'s context may
    be a function returning it, called only when features are computed."""

    @property
    def model_version(self) -> str: ...

    def score(self, key: str,
              context: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
              ts: int) -> float: ...

    def score_many(self, events: Iterable[tuple[str, Mapping[str, Any], int]]) -> Any: ...

    def predict_many(self, contexts: Iterable[Mapping[str, Any]]) -> Any: ...

    def observe(self, key: str, outcome_kind: str, ts: int) -> int: ...

    def tick(self, now_ts: int) -> int: ...

    def learn_pending(self) -> int: ...

    def forget(self, matches: Callable[[str], bool]) -> int: ...

    def metrics(self) -> dict[str, Any]: ...


@runtime_checkable
class TextScorer(Protocol):
    """Sentiment of a short text in [-1, 1], learning from labelled (or weak) examples."""

    def predict_one(self, text: str) -> float: ...

    def learn_one(self, text: str, label: float) -> None: ...


@runtime_checkable
class StreamDetector(Protocol):
    """Anomaly score in [0, 1] for one numeric stream (``{"value", "ts"}``)."""

    def score_one(self, x: dict[str, Any]) -> float: ...

    def learn_one(self, x: dict[str, Any]) -> None: ...

    def expected_range(self) -> tuple[float, float]: ...


def predict_many(model: TextScorer, texts: Sequence[str]) -> list[float]:
    """The batch form of a :class:`TextScorer` (``model.predict_many`` when it has one).

    >>> from online_models.sentiment import LexiconSentiment
    >>> scores = predict_many(LexiconSentiment(), ["love it", "terrible"])
    >>> scores[0] > 0 > scores[1]
    True
    """
    batch = getattr(model, "predict_many", None)
    if batch is not None:
        return list(batch(texts))
    return [model.predict_one(text) for text in texts]
