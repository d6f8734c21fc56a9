"""Segments and audiences of users (pure: no Faust, no I/O; the user pipeline drives it).

**Segments.** Every user with consent gets an online segment from
:class:`online_models.segments.ProfileSegmenter` (the model host's ``segments`` model): on
their first event, then again every :data:`SEGMENT_EVERY_EVENTS` events or
:data:`SEGMENT_EVERY_MS` of event time, whichever comes first (the features change slowly;
assigning on every event would cost a k-means step per event). The id goes to the profile
(``profile.segment``) and so to its view, Redis and campaign conditions.

**Audiences.** An audience is a named set of conditions over the profile view
(``profile.*``: RFM, affinities, price, live, ``profile.tags``, ``profile.lifecycle``,
``profile.segment``) and the model scores (``scores.*``), in the campaigns' condition
language (:func:`agents.promo.campaigns.compile_condition`). Definitions come from
``config/audiences.yaml`` (``LIVEPULSE_AUDIENCES_FILE``) and, at run time, from the compacted
``<prefix>.audiences`` topic (contract ``audience.v1``; a record replaces the audience of its
id unless its version is lower, a tombstone drops the runtime definition). Membership is
evaluated on each of the user's events (a few closures per audience); when it changes, an
``audience-change.v1`` record goes to ``<prefix>.audience-changes`` (key user): ``enter`` or
``exit``, with a ``change_id`` that a redelivered event repeats. The profile keeps the ids
of the audiences the user is in (``profile.audiences``), so a restart neither repeats nor
loses a change. An opted-out user (consent false) is in no audience and has no segment: the
opt-out emits an ``exit`` per audience (reason ``consent``). A removed or disabled audience
makes its members exit at their next event (reason ``removed``); an erased user exits
every audience (reason ``erased``, sent by :mod:`agents.users.erasure`).

>>> book = AudienceBook(parse_audiences('''
... audiences:
...   - id: gifters
...     when: [{field: profile.tags, op: contains, value: gifter}]
... '''))
>>> aud = Audiences(book)
>>> from agents.users.profile import UserProfile
>>> p = UserProfile("u1"); p.events, p.updated_at = 1, 5_000
>>> changes = aud.on_event(p, {"tags": ["gifter"], "consent": True}, None, "e1")
>>> [(c["type"], c["audience_id"], c["reason"]) for c in changes], p.audiences
([('enter', 'gifters', 'conditions')], ('gifters',))
>>> aud.on_event(p, {"tags": ["gifter"], "consent": True}, None, "e2")  # no change
[]
>>> p.set_consent(False, 6_000)
>>> [(c["type"], c["reason"]) for c in aud.on_consent(p, 6_000)], p.audiences
([('exit', 'consent')], ())
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import config
from agents.promo.campaigns import DefinitionBook, Test, compile_condition
from agents.users.profile import UserProfile
from online_models.segments import ProfileSegmenter, profile_features
from streams.contracts import AUDIENCE, ContractError, check_contract

PACKAGED_AUDIENCES = Path(config.__file__).resolve().parent / "audiences.yaml"
SEGMENT_EVERY_EVENTS = 20
SEGMENT_EVERY_MS = 600_000          # 10 min of the user's event time
MAX_AUDIENCES = 50                  # audience ids are report keys and Redis sets
MAX_INDEXED = 1_000_000             # (audience, user) pairs this worker's report counts
SAMPLE_SCAN = 2_000                 # members pseudonymised for one report's sample
SAMPLE_SIZE = 20
AUDIENCE_NAMESPACES = ("profile", "scores")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FIELDS = {"schema_version", "id", "version", "enabled", "name", "description", "when"}


class AudienceError(ValueError):
    """An audience definition that cannot be used (the message says where and why)."""


@dataclass(frozen=True, slots=True, eq=False)
class Audience:
    """A parsed, validated audience (build it with :meth:`from_dict`)."""

    id: str
    version: int
    record: dict[str, Any]
    enabled: bool
    tests: tuple[Test, ...] = field(repr=False)

    @classmethod
    def from_dict(cls, data: Any) -> Audience:
        """Validate ``data`` (contract ``audience.v1``; conditions read ``profile.*`` and
        ``scores.*`` only) and compile its conditions.

        >>> Audience.from_dict({"id": "a", "when": [{"field": "event.type", "op": "==",
        ...                                           "value": "like"}]})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        agents.users.audiences.AudienceError: ... audiences read profile.* and scores.*, ...
        """
        if not isinstance(data, Mapping):
            raise AudienceError("an audience must be a mapping")
        record = {k: v for k, v in data.items() if v is not None}
        record.setdefault("version", 1)
        name = record.get("id")
        where = f"audience {name!r}" if isinstance(name, str) else "audience"
        unknown = sorted(set(record) - _FIELDS)
        if unknown:
            raise AudienceError(f"{where}: unknown keys {unknown}")
        try:
            check_contract(AUDIENCE, record)
        except ContractError as exc:
            raise AudienceError(f"{where}: {exc.reason}") from None
        if not _ID.match(record["id"]):
            raise AudienceError(f"{where}: id may only hold letters, digits, '_', '-', '.'")
        if not record["when"]:
            raise AudienceError(f"{where}.when: at least one condition")
        tests = []
        for i, spec in enumerate(record["when"]):
            at = f"{where}.when[{i}]"
            for leaf in spec.get("any", [spec]) if isinstance(spec, Mapping) else ():
                path = leaf.get("field") if isinstance(leaf, Mapping) else None
                if not isinstance(path, str) or path.split(".")[0] not in AUDIENCE_NAMESPACES:
                    raise AudienceError(f"{at}.field: audiences read profile.* and scores.*, "
                                        f"got {path!r}")
            try:
                tests.append(compile_condition(spec, at))
            except ValueError as exc:
                raise AudienceError(str(exc)) from None
        return cls(id=record["id"], version=int(record["version"]), record=record,
                   enabled=bool(record.get("enabled", True)), tests=tuple(tests))

    def matches(self, ctx: Mapping[str, Any]) -> bool:
        for test in self.tests:  # noqa: SIM110 (a loop: ~2x faster than all() per event)
            if test(ctx) is None:
                return False
        return True


def parse_audiences(text: str) -> list[Audience]:
    """Audiences from YAML text: a mapping with an ``audiences`` list."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise AudienceError(f"invalid YAML: {exc}") from None
    items = doc.get("audiences") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise AudienceError("expected a mapping with an `audiences` list")
    audiences = [Audience.from_dict(item) for item in items]
    ids = [a.id for a in audiences]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise AudienceError(f"duplicate audience ids: {twice}")
    if len(audiences) > MAX_AUDIENCES:
        raise AudienceError(f"at most {MAX_AUDIENCES} audiences")
    return audiences


class AudienceBook(DefinitionBook):
    """The audiences in force: the file's, overridden by the audiences topic (the rules of
    :class:`agents.promo.campaigns.CampaignBook`).

    >>> book = AudienceBook(parse_audiences(
    ...     "audiences: [{id: a, when: [{field: profile.segment, op: '==', value: 1}]}]"))
    >>> rule = [{"field": "profile.segment", "op": "==", "value": 2}]
    >>> book.apply("a", {"id": "a", "version": 2, "when": rule})
    'applied'
    >>> book.apply("a", {"id": "a", "version": 1, "when": rule}), book.get("a").version
    ('stale', 2)
    >>> book.apply("a", None), book.get("a").version, book.source_of("a")
    ('removed', 1, 'file')
    """

    parse = Audience.from_dict
    error = AudienceError
    limit = MAX_AUDIENCES
    noun = "audiences"

    def __init__(self, defaults: Iterable[Audience] = ()) -> None:
        self.defaults = {a.id: a for a in defaults}
        self.overrides: dict[str, Audience] = {}
        self.rejected: dict[str, str] = {}
        self._active: tuple[Audience, ...] = ()
        self._rebuild()

    @classmethod
    def load(cls, path: str | Path) -> AudienceBook:
        try:
            return cls(parse_audiences(Path(path).read_text(encoding="utf-8")))
        except AudienceError as exc:
            raise AudienceError(f"{path}: {exc}") from None

    def _rebuild(self) -> None:
        self._active = tuple(a for a in self.audiences() if a.enabled)

    def audiences(self) -> list[Audience]:
        return self.definitions()

    def active(self) -> tuple[Audience, ...]:
        """The enabled audiences, by id."""
        return self._active


def change_id(audience_id: str, user_id: str, kind: str, cause: str) -> str:
    """The change's id: the same for every redelivery of the event that caused it.

    >>> change_id("a", "u1", "enter", "e1") == change_id("a", "u1", "enter", "e1")
    True
    """
    raw = "\x1f".join((audience_id, user_id, kind, cause)).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


class Audiences:
    """Segment assignment, audience membership and this worker's membership index.

    ``segmenter``: the model host's :class:`ProfileSegmenter` (or a callable returning it:
    a restore may replace the object); None leaves segments out. ``pseudonym`` turns a user
    id into the pseudonym reports show (default: no sample). The index (audience -> user ->
    segment) covers the users of this worker's partitions whose membership was decided or
    confirmed since it started (every event of a member confirms it), at most
    :data:`MAX_INDEXED` pairs.
    """

    def __init__(self, book: AudienceBook,
                 segmenter: ProfileSegmenter | Callable[[], ProfileSegmenter] | None = None,
                 pseudonym: Callable[[str], str] | None = None, *,
                 every_events: int = SEGMENT_EVERY_EVENTS,
                 every_ms: int = SEGMENT_EVERY_MS) -> None:
        self.book = book
        self._segmenter = segmenter
        self.pseudonym = pseudonym
        self.every_events = max(1, every_events)
        self.every_ms = every_ms
        self.members: dict[str, dict[str, int | None]] = {}
        self.indexed = 0
        self.changes = Counter[str]()   # (enter|exit) records made

    @property
    def segmenter(self) -> ProfileSegmenter | None:
        found = self._segmenter
        return found() if callable(found) and not isinstance(found, ProfileSegmenter) \
            else found

    # ------------------------------------------------------------------ per event
    def on_event(self, profile: UserProfile, view: dict[str, Any],
                 scores: Mapping[str, Any] | None, cause: str) -> list[dict[str, Any]]:
        """After the profile folded one event (``cause``: its event id): (re)assign the
        segment when due, evaluate every audience; the ``audience-change`` records to emit.
        ``view`` gets the new ``segment`` and ``audiences``."""
        ts = profile.updated_at
        if not profile.consent:
            return self.on_consent(profile, ts)
        segmenter = self.segmenter
        if segmenter is not None and (profile.segment is None
                                      or profile.events % self.every_events == 0
                                      or ts - profile.segment_ts >= self.every_ms):
            segment = segmenter.learn_predict_one(profile_features(view), profile.segment)
            if segment is not None:
                profile.segment, profile.segment_ts = segment, ts
            view["segment"] = profile.segment
        active = self.book.active()
        old = profile.audiences
        if not active and not old:
            return []
        ctx = {"profile": view, "scores": scores or {}}
        now = tuple(a.id for a in active if a.matches(ctx))
        user, segment = profile.user_id, profile.segment
        for audience_id in now:  # confirms (or refreshes the segment of) each membership
            self._index(audience_id, user, segment)
        view["audiences"] = list(now)
        if now == old:
            return []
        profile.audiences = now
        out = [self._record("enter", a, user, ts, "conditions", segment, cause)
               for a in now if a not in old]
        for audience_id in old:
            if audience_id not in now:
                current = self.book.get(audience_id)
                reason = "conditions" if current is not None and current.enabled else "removed"
                out.append(self._record("exit", audience_id, user, ts, reason, segment, cause))
        return out

    def on_consent(self, profile: UserProfile, ts: int) -> list[dict[str, Any]]:
        """After a consent record: an opted-out user leaves every audience and loses the
        segment; the ``exit`` records to emit."""
        if profile.consent:
            return []
        out = [self._record("exit", a, profile.user_id, ts, "consent", None, f"consent:{ts}")
               for a in profile.audiences]
        profile.audiences, profile.segment, profile.segment_ts = (), None, 0
        return out

    def erased(self, user: str, audience_ids: Iterable[str],
               ts: int) -> list[dict[str, Any]]:
        """The ``exit`` records of an erased user (reason ``erased``: ad systems must drop
        the user too); the user leaves this worker's index."""
        out = [self._record("exit", a, user, ts, "erased", None, f"erased:{ts}")
               for a in audience_ids]
        self.forget(user)
        return out

    def forget(self, user: str) -> int:
        """Drop ``user`` from this worker's index (erasure); how many entries."""
        dropped = 0
        for members in self.members.values():
            if members.pop(user, 0) != 0:
                dropped += 1
        self.indexed -= dropped
        return dropped

    def _record(self, kind: str, audience_id: str, user: str, ts: int, reason: str,
                segment: int | None, cause: str) -> dict[str, Any]:
        if kind == "exit":
            members = self.members.get(audience_id)
            if members is not None and members.pop(user, 0) != 0:
                self.indexed -= 1
        self.changes[kind] += 1
        current = self.book.get(audience_id)
        return {"schema_version": 1,
                "change_id": change_id(audience_id, user, kind, cause), "type": kind,
                "audience_id": audience_id,
                "audience_version": current.version if current is not None else 0,
                "user_id": user, "ts": ts, "reason": reason, "segment": segment}

    def _index(self, audience_id: str, user: str, segment: int | None) -> None:
        members = self.members.get(audience_id)
        if members is None:
            members = self.members[audience_id] = {}
        if user in members:
            members[user] = segment
        elif self.indexed < MAX_INDEXED:
            members[user] = segment
            self.indexed += 1

    # ------------------------------------------------------------------ reports
    def segments(self) -> list[dict[str, Any]]:
        """Every segment with its en/zh description, share and centroid."""
        segmenter = self.segmenter
        return segmenter.describe_all() if segmenter is not None else []

    def summary(self, audience: Audience) -> dict[str, Any]:
        members = self.members.get(audience.id, {})
        return {"id": audience.id, "version": audience.version,
                "name": audience.record.get("name"), "source": self.book.source_of(audience.id),
                "enabled": audience.enabled, "size": len(members)}

    def report(self, at_ms: int) -> dict[str, Any]:
        """``GET /api/audiences``: every audience with its size on this worker, the
        segments, and the definitions refused."""
        return {"ts": at_ms, "scope": "users of this worker's partitions",
                "audiences": [self.summary(a) for a in self.book.audiences()],
                "segments": self.segments(), "rejected": dict(self.book.rejected),
                "truncated": self.indexed >= MAX_INDEXED}

    def report_one(self, audience_id: str, at_ms: int) -> dict[str, Any] | None:
        """``GET /api/audiences/{id}``: size, composition by segment and a sample of
        pseudonymous member ids (None: no such audience)."""
        audience = self.book.get(audience_id)
        if audience is None:
            return None
        members = self.members.get(audience_id, {})
        size = len(members)
        counts = Counter(members.values())
        labels = {s["id"]: s for s in self.segments()}
        composition = [{"segment": s, "en": labels.get(s, {}).get("en"),
                        "zh": labels.get(s, {}).get("zh"), "members": n,
                        "share": round(n / size, 4)}
                       for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]
        sample: list[str] = []
        if self.pseudonym is not None:
            # pseudonyms are keyed hashes: the smallest ones are a uniform sample
            sample = sorted(self.pseudonym(u) for u in itertools.islice(members, SAMPLE_SCAN))
            sample = sample[:SAMPLE_SIZE]
        return {"ts": at_ms, "scope": "users of this worker's partitions",
                **self.summary(audience), "description": audience.record.get("description"),
                "when": audience.record["when"], "composition": composition, "sample": sample}
