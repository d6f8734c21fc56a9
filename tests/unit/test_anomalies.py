"""Anomaly incidents (pure): the tracker's lifecycle and the watchers on synthetic series and
on simulator traffic replayed in simulated time. Uses the real detector."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import orjson
import pytest

from agents.anomalies.incidents import IncidentTracker, Signal, member_ids
from agents.anomalies.monitor import AnomalyMonitor
from agents.anomalies.watches import RoomWatch, SystemWatch, UserWatch, count_surprise
from agents.rooms.state import RoomState
from benchmarks.bench_incidents import replay
from streams.contracts import ANOMALY, ROOM_INSIGHT, LiveEvent, as_dict, check_contract, json_schema

T0 = 1_700_000_000_000
SCHEMA = json_schema(ANOMALY)


def valid(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it goes on the wire, checked against both forms of the contract."""
    body = orjson.loads(orjson.dumps(record))
    check_contract(ANOMALY, body)
    jsonschema.validate(body, SCHEMA)
    return body


def high(metric: str = "leave_rate", score: float = 0.99, value: float = 20.0) -> Signal:
    return Signal(metric, value, 0.1, 1.5, score)


def run(tracker: IncidentTracker, scores: list[list[Signal]], scope: str = "room",
        scope_id: str = "r1") -> list[dict[str, Any]]:
    out = []
    for second, signals in enumerate(scores):
        out += tracker.observe(scope, scope_id, signals, T0 + second * 1000)
    return [valid(r) for r in out]


# ---------------------------------------------------------------------- tracker
def test_a_sustained_anomaly_is_one_open_and_one_resolved_record() -> None:
    tracker = IncidentTracker(confirm_s=2.0, quiet_s=5.0)
    records = run(tracker, [[high()]] * 30 + [[]] * 10)
    assert [r["status"] for r in records] == ["open", "resolved"]
    opened, resolved = records
    assert opened["anomaly_id"] == resolved["anomaly_id"]
    assert opened["first_seen"] == T0 and resolved["first_seen"] == T0
    assert resolved["last_seen"] == T0 + 29_000  # the last anomalous sample
    assert opened["scope"] == "room" and opened["scope_id"] == "r1"
    assert opened["metric"] == "leave_rate" and opened["observed"] == 20.0
    assert (opened["expected_low"], opened["expected_high"]) == (0.1, 1.5)
    assert "leaves 20.0/s" in opened["explanation"]
    assert resolved["explanation"].startswith("Resolved after 29 s")
    assert tracker.n_open("room") == 0 and not tracker.scopes  # nothing left to remember


def test_a_single_spike_opens_nothing() -> None:
    tracker = IncidentTracker(confirm_s=2.0)
    assert run(tracker, [[high()], [], [high()], [], [high(score=0.5)]]) == []
    assert not tracker.scopes


def test_hysteresis_keeps_a_flapping_incident_open() -> None:
    """Scores between the thresholds, or dipping below for less than the quiet period, do
    not close the incident; only a full quiet period does."""
    tracker = IncidentTracker(open_score=0.9, close_score=0.5, confirm_s=2.0, quiet_s=5.0)
    flapping = [[high()], [high()]] + [[high(score=0.6)], [high(score=0.1)]] * 10
    samples = flapping + [[high(score=0.95)]] + [[high(score=0.2)]] * 10
    emitted = [(second, r["status"]) for second, signals in enumerate(samples)
               for r in tracker.observe("room", "r1", signals, T0 + second * 1000)]
    last_high = len(flapping)
    # quiet from the first 0.2 after the last 0.95: resolved 5 s later, not before
    assert emitted == [(1, "open"), (last_high + 1 + 5, "resolved")]


def test_metrics_of_one_scope_join_one_incident_named_by_the_strongest() -> None:
    tracker = IncidentTracker(confirm_s=2.0)
    both = [high("leave_rate", 0.95, 30.0), high("viewers", 0.999, 40.0),
            Signal("like_rate", 3.0, 1.0, 5.0, 0.0)]
    records = run(tracker, [both] * 5 + [[]] * 6)
    assert [r["status"] for r in records] == ["open", "resolved"]
    assert records[0]["metric"] == "viewers"
    assert "also unusual: leaves" in records[0]["explanation"]
    assert "likes" not in records[0]["explanation"]
    # another scope is its own incident
    other = run(tracker, [[high()]] * 3, scope="room", scope_id="r2")
    assert [r["scope_id"] for r in other] == ["r2"]


def test_severity_grows_with_score_and_duration() -> None:
    tracker = IncidentTracker(confirm_s=2.0, quiet_s=2.0, critical_after_s=30.0)
    records = run(tracker, [[high(score=0.999)]] * 40 + [[]] * 3)
    assert [(r["status"], r["severity"]) for r in records] == [("open", "warning"),
                                                                ("resolved", "critical")]
    mild = run(IncidentTracker(confirm_s=2.0, quiet_s=2.0), [[high(score=0.92)]] * 5 + [[]] * 3)
    assert {r["severity"] for r in mild} == {"info"}


def test_tracked_scopes_are_bounded_and_an_evicted_incident_is_resolved() -> None:
    tracker = IncidentTracker(confirm_s=1.0, max_scopes=3, coalesce=())
    records = []
    for i in range(5):
        records += [valid(r) for r in tracker.observe("user", f"u{i}", [high()], T0)]
    assert len(tracker.scopes) == 3
    assert [r["status"] for r in records].count("open") == 5
    evicted = [r for r in records if r["status"] == "resolved"]
    assert sorted(r["scope_id"] for r in evicted) == ["u0", "u1"]
    assert all("no longer tracked" in r["explanation"] for r in evicted)


def test_a_flood_of_bots_is_one_incident_that_resolves_when_the_last_bot_stops() -> None:
    """Three bots flagged a few seconds apart join the first one's incident; it reports the
    peak rate of any of them and resolves 5 s after the last one went quiet."""
    tracker = IncidentTracker(confirm_s=2.0, quiet_s=5.0)
    stops = {"bot-1": 20, "bot-2": 30, "bot-3": 25}
    starts = {"bot-1": 0, "bot-2": 3, "bot-3": 4}
    rates = {"bot-1": 10.0, "bot-2": 14.0, "bot-3": 12.0}
    emitted = []
    for second in range(45):
        for bot in sorted(stops):
            hot = starts[bot] <= second < stops[bot]
            signals = [high("click_rate", value=rates[bot])] if hot else []
            # every member keeps being sampled (the watch samples tracker.active("user"))
            if hot or bot in tracker.active("user"):
                emitted += [(second, valid(r)) for r in tracker.observe(
                    "user", bot, signals, T0 + second * 1000)]
    assert [(second, r["status"]) for second, r in emitted] == [(1, "open"), (35, "resolved")]
    opened, resolved = (r for _, r in emitted)
    assert opened["anomaly_id"] == resolved["anomaly_id"] == f"user:bot-1:{T0}"
    assert opened["scope_id"] == resolved["scope_id"] == "bot-1"
    assert opened["explanation"].startswith("User bot-1: clicks 10.0/s")
    assert resolved["explanation"].startswith(
        "Resolved after 29 s. Users bot-1, bot-2, bot-3 (3 in all): clicks back to")
    assert resolved["observed"] == 14.0 and resolved["last_seen"] == T0 + 29_000
    assert tracker.opened_total == {("user", "warning"): 1} and not tracker.scopes
    assert tracker.groups == {}


def test_coalesced_members_are_bounded_and_counted() -> None:
    tracker = IncidentTracker(confirm_s=1.0, quiet_s=2.0)
    for i in range(50):
        tracker.observe("user", f"bot-{i:02d}", [high("click_rate")], T0)
    (incident,) = tracker.open_incidents("user")
    assert incident.n_members == 50 and len(incident.members) == 20
    alert = tracker.alerts("user", "bot-07", since=T0)[0]
    assert alert["anomaly_id"] == "user:bot-00:" + str(T0) and alert["n_members"] == 50
    assert alert["en"].startswith("Users bot-00, bot-01, bot-02 and 47 more (50 in all): ")
    records = []
    for second in range(1, 4):
        for i in range(50):
            records += tracker.observe("user", f"bot-{i:02d}", [], T0 + second * 1000)
    assert [r["status"] for r in records] == ["resolved"] and not tracker.scopes


def test_users_anomalous_on_other_metrics_open_their_own_incident() -> None:
    """Coalescing needs a shared metric: a fast clicker and a user with impossible
    sequences are two incidents; rooms never coalesce."""
    tracker = IncidentTracker(confirm_s=1.0)
    records = run(tracker, [[high("click_rate")]], scope="user", scope_id="bot-1")
    records += run(tracker, [[high("impossible_sequences", value=9.0)]], scope="user",
                   scope_id="u7")
    records += run(tracker, [[high("impossible_sequences", value=9.0),
                              high("click_rate", score=0.95)]], scope="user", scope_id="bot-2")
    assert [r["scope_id"] for r in records] == ["bot-1", "u7"]
    assert {i.anomaly_id: i.n_members for i in tracker.open_incidents("user")} == {
        f"user:bot-1:{T0}": 1, f"user:u7:{T0}": 2}
    records = run(tracker, [[high()]]) + run(tracker, [[high()]], scope_id="r2")
    assert [r["scope_id"] for r in records] == ["r1", "r2"]


def test_evicting_one_member_keeps_the_flood_open() -> None:
    tracker = IncidentTracker(confirm_s=1.0, max_scopes=3)
    records = []
    for i in range(4):
        records += tracker.observe("user", f"bot-{i}", [high("click_rate")], T0)
    assert [r["status"] for r in records] == ["open"]
    assert len(tracker.scopes) == 3 and tracker.n_open("user") == 1
    assert tracker.groups[f"user:bot-0:{T0}"][1] == {"bot-1", "bot-2", "bot-3"}


def test_closing_a_scope_resolves_its_incident_and_alerts_show_both_states() -> None:
    tracker = IncidentTracker(confirm_s=1.0)
    run(tracker, [[high()]] * 3)
    alerts = tracker.alerts("room", "r1", since=T0)
    assert [a["status"] for a in alerts] == ["open"]
    assert alerts[0]["en"].startswith("Room r1: leaves") and "离开" in alerts[0]["zh"]
    records = [valid(r) for r in tracker.close("room", "r1", T0 + 5_000, "room idle", "空闲")]
    assert [r["status"] for r in records] == ["resolved"]
    assert "room idle" in records[0]["explanation"]
    assert [a["status"] for a in tracker.alerts("room", "r1", since=T0)] == ["resolved"]
    assert tracker.alerts("room", "r1", since=T0 + 60_000) == []
    assert tracker.close("room", "r1", T0 + 6_000) == []  # nothing open any more


def test_count_surprise_is_monotone_and_bounded() -> None:
    ups = [count_surprise(c, 5.0) for c in range(0, 60, 5)]
    assert ups == sorted(ups) and ups[0] == 0.0 and ups[-1] == 1.0
    downs = [count_surprise(c, 40.0, upper=False) for c in range(0, 45, 5)]
    assert downs == sorted(downs, reverse=True) and downs[-1] == 0.0


# ---------------------------------------------------------------------- rooms
class SyntheticRoom:
    """A room with a steady audience and Poisson-ish engagement, fed second by second."""

    def __init__(self, viewers: int = 200, seed: int = 1) -> None:
        self.state = RoomState("r1")
        self.rng = random.Random(seed)
        self.present: list[str] = []
        self.n = 0
        self.next_user = 0
        for _ in range(viewers):
            self.join(T0)

    def event(self, kind: str, user: str, ts: int, **extra: Any) -> None:
        self.n += 1
        self.state.apply(LiveEvent(f"e{self.n}", kind, ts, "r1", user, **extra))

    def join(self, ts: int) -> None:
        self.next_user += 1
        user = f"u{self.next_user}"
        self.present.append(user)
        self.event("join", user, ts)

    def second(self, t: int, *, leave_share: float = 0.003, gifts: int = 0) -> None:
        ts = T0 + t * 1000
        rng = self.rng
        for _ in range(max(0, round(rng.gauss(len(self.present) * 0.05, 2)))):
            if self.present:
                self.event("like", rng.choice(self.present), ts + rng.randrange(1000))
        for _ in range(gifts):
            self.event("gift", "fraud", ts + rng.randrange(1000), amount=520.0)
        leaving = [u for u in self.present if rng.random() < leave_share]
        for user in leaving:
            self.present.remove(user)
            self.event("leave", user, ts + rng.randrange(1000))
        while len(self.present) < 200 and rng.random() < 0.7 and leave_share < 0.05:
            self.join(ts + rng.randrange(1000))


def drive(room: SyntheticRoom, seconds: range, monitor: AnomalyMonitor,
          **kwargs: Any) -> list[dict[str, Any]]:
    out = []
    for t in seconds:
        room.second(t, **kwargs)
        out += monitor.tick({"r1": room.state}, now_ms=T0 + t * 1000)
    return [valid(r) for r in out]


def monitor_for(room: SyntheticRoom) -> AnomalyMonitor:
    monitor = AnomalyMonitor(system_id="test", clock=lambda: T0)
    # the watch counts joins and leaves itself (RoomState keeps no per-second series of them)
    original = room.event

    def event(kind: str, user: str, ts: int, **extra: Any) -> None:
        original(kind, user, ts, **extra)
        monitor.note_live(LiveEvent("x", kind, ts, "r1", user))

    room.event = event  # type: ignore[method-assign]
    return monitor


def test_steady_room_raises_nothing() -> None:
    room = SyntheticRoom()
    monitor = monitor_for(room)
    assert drive(room, range(600), monitor) == []


def test_viewer_drop_is_one_incident_resolved_after_recovery() -> None:
    room = SyntheticRoom()
    monitor = monitor_for(room)
    assert drive(room, range(40), monitor) == []
    records = drive(room, range(40, 45), monitor, leave_share=0.35)   # ~85 % leave in 5 s
    records += drive(room, range(45, 90), monitor)
    assert [r["status"] for r in records] == ["open", "resolved"]
    opened = records[0]
    assert opened["metric"] in ("leave_rate", "viewers") and opened["scope_id"] == "r1"
    assert T0 + 40_000 <= opened["first_seen"] <= T0 + 45_000
    # while open, the room's insight carries the alert; afterwards the resolved one
    insight = orjson.loads(orjson.dumps(as_dict(room.state.insight(
        T0 + 90_000, alerts=monitor.room_alerts("r1")))))
    check_contract(ROOM_INSIGHT, insight)
    assert [a["status"] for a in insight["alerts"]] == ["resolved"]


def test_gift_flood_is_one_incident() -> None:
    room = SyntheticRoom()
    monitor = monitor_for(room)
    assert drive(room, range(40), monitor) == []
    records = drive(room, range(40, 48), monitor, gifts=8)
    assert [(r["status"], r["metric"]) for r in records] == [("open", "gift_rate")]
    assert [r["status"] for r in drive(room, range(48, 80), monitor)] == ["resolved"]


def test_room_watch_memory_is_bounded() -> None:
    watch = RoomWatch(max_rooms=2)
    rooms = {f"r{i}": SyntheticRoom(seed=i).state for i in range(4)}
    for room_id, state in rooms.items():
        watch.sample(room_id, state)
    assert list(watch.tracks) == ["r0", "r1"]


# ---------------------------------------------------------------------- users
def test_metronomic_fast_clicker_is_flagged_and_bursty_humans_are_not() -> None:
    watch = UserWatch()
    rng = random.Random(3)
    found: dict[str, set[str]] = {}
    human_next = {f"h{i}": T0 + rng.randrange(2_000) for i in range(300)}
    for tick in range(1, 31):
        now = T0 + tick * 1000
        for ts in range(now - 1000, now, 100):                       # a bot: 10 clicks/s
            watch.note("bot-1", "click", ts, item_id=f"i{ts}")
        for user, due in human_next.items():                           # humans: ~0.5/s
            while due < now:
                watch.note(user, "view", due, item_id=f"i{rng.randrange(50)}")
                due += int(rng.expovariate(0.5) * 1000) + 1
            human_next[user] = due
        for user, _, signals in watch.sample():
            for s in signals:
                if s.score >= 0.9:
                    found.setdefault(user, set()).add(s.metric)
    assert found == {"bot-1": {"click_rate", "click_interval_cv"}}


def test_impossible_sequences_are_flagged() -> None:
    watch = UserWatch()
    for i in range(9):  # carts 50 ms after first seeing each item
        watch.note("u1", "view", T0 + i * 3_000, item_id=f"i{i}")
        watch.note("u1", "add_to_cart", T0 + i * 3_000 + 50, item_id=f"i{i}")
    watch.note("u2", "comment", T0, room_id="a", live=True)  # two rooms 20 ms apart: once
    watch.note("u2", "comment", T0 + 20, room_id="b", live=True)
    watch.watermark = T0 + 29_000  # the seconds up to 27 s are complete
    flagged = {u: [s.metric for s in signals if s.score >= 0.9]
               for u, _, signals in watch.sample()}
    assert flagged["u1"] == ["impossible_sequences"] and not flagged.get("u2")


def test_user_watch_is_a_bounded_lru() -> None:
    watch = UserWatch(max_users=100)
    for i in range(1_000):
        watch.note(f"u{i}", "view", T0 + i, item_id="i1")
    assert len(watch.users) == 100 and "u999" in watch.users and "u0" not in watch.users


# ---------------------------------------------------------------------- system
def test_system_watch_flags_input_lag_and_dead_letters() -> None:
    watch = SystemWatch()
    inputs = dead = 0.0
    flagged = set()
    for t in range(60):
        lagging = 40 <= t < 50
        for _ in range(100):
            watch.note_lag(6_000.0 if lagging else 20.0 + t % 7)
        inputs += 300
        dead += 60 if lagging else 1
        for s in watch.sample(T0 + t * 1000, dead_letters=dead, events_in=inputs):
            if s.score >= 0.9:
                flagged.add((s.metric, t >= 40))
    assert flagged == {("input_lag_ms", True), ("dead_letter_rate", True)}


# ---------------------------------------------------------------------- simulator traffic
def test_normal_simulator_traffic_opens_no_incident() -> None:
    records, monitor, _ = replay(seed=11, seconds=300, rate=300)
    assert records == [] and monitor.tracker.opened_total == {}


@pytest.mark.parametrize(("scenario", "room", "scope", "seed"), [
    ("bot_click_flood", None, "user", 3), ("viewer_drop", "room-2", "room", 7)])
def test_simulator_scenario_yields_one_incident_each_resolved(
        scenario: str, room: str | None, scope: str, seed: int) -> None:
    """One incident per scenario, also for a flood of several bots (seed 3 starts three)."""
    records, monitor, _ = replay(seed=seed, seconds=90, rate=300,
                                 scenarios=[(40, scenario, room, 8)])
    records = [valid(r) for r in records]
    by_id: dict[str, list[str]] = {}
    for record in records:
        by_id.setdefault(record["anomaly_id"], []).append(record["status"])
    assert records and all(statuses == ["open", "resolved"] for statuses in by_id.values())
    assert {r["scope"] for r in records} == {scope}
    assert len(by_id) == 1  # the bots of one flood coalesce
    if scope == "user":
        assert records[0]["scope_id"].startswith("bot-")
        bots = sorted(u for u in monitor.users.users if u.startswith("bot-"))
        assert len(bots) > 1 and sorted(member_ids(records[-1]["explanation"])) == bots
    else:
        assert {r["scope_id"] for r in records} == {room}


@pytest.mark.parametrize("kind", ["forecast", "fast"])
def test_the_engines_detectors_have_no_refractory_damping(kind: str) -> None:
    """The tracker opens after two samples at 0.9 or more; a refractory period in the
    detector would damp the second one of a growing flood (as NAB's row-wise scoring likes),
    so the incident would never open. The engine's detectors leave deduplication to the
    tracker."""
    from agents.anomalies.watches import DETECTORS
    from online_models.anomaly import AnomalyDetector
    from online_models.anomaly_ensemble import EnsembleDetector

    def opened(detector: Any) -> list[int]:
        rng = random.Random(3)
        tracker = IncidentTracker(clock=lambda: 0)
        out = []
        for t in range(340):
            value = rng.gauss(100.0, 3.0) + (30.0 * (t - 299) if t >= 300 else 0.0)
            x = {"value": value, "ts": 1.7e9 + t}
            score = detector.score_one(x)
            detector.learn_one(x)
            out += [t for r in tracker.observe("room", "r", [Signal("m", value, 0, 1, score)],
                                               t * 1000) if r["status"] == "open"]
        return out

    engine = DETECTORS[kind]()
    members = engine.members if isinstance(engine, EnsembleDetector) else [engine]
    assert [m.refractory for m in members if isinstance(m, AnomalyDetector)] == [0]
    assert opened(engine) == [301]
    damped = DETECTORS[kind]()
    for member in damped.members if isinstance(damped, EnsembleDetector) else [damped]:
        if isinstance(member, AnomalyDetector):
            member.refractory = member._since_alarm = 100
    assert opened(damped) == []
