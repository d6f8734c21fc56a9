"""Sinks: where the engine's state and records leave Kafka, plus throw-away local servers.

:mod:`~agents.sinks.redis` is the serving sink (latest profiles and room insights, written
behind with a TTL); :mod:`~agents.sinks.clickhouse` is the history sink (its own Kafka
consumer, batched inserts) and :mod:`~agents.sinks.clickhouse_schema` its tables, migrations,
row mapping and retention. :mod:`~agents.sinks.embedded_redis` and
:mod:`~agents.sinks.embedded_clickhouse` run private ``redis-server`` / ``clickhouse-server``
processes on loopback for the demo, tests and benchmarks. Imports are absolute, so
``import redis`` inside :mod:`agents.sinks.redis` is still the redis-py package.
"""
