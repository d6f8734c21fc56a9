"""Rooms: the room pipeline and the per-room state it folds live events into.

:mod:`~agents.rooms.pipeline` is the Faust side (``RoomHandler`` / ``RoomPipeline``, the
``room-insights`` timer, ``headline``, ``follow_topic``, ``register``);
:mod:`~agents.rooms.state` is the pure ``RoomState`` of one room (event-time windows,
funnel, top items) and :mod:`~agents.rooms.sketches` the bounded-memory sketches it uses
(HyperLogLog, Bloom filter, Space-Saving counters, per-second buckets).
"""
