"""Apache Kafka as a local broker: one KRaft node (broker + controller) on loopback.

The embedded Tansu broker is the zero-set-up default; this is the broker production runs
(transactions, true ListOffsets, retention and compaction, the standard group coordinator),
started the same way: :class:`KafkaBroker` picks free loopback ports, formats a fresh KRaft
log directory, runs ``kafka.Kafka`` on Java 17, waits until it answers metadata requests,
dies with its parent (``PR_SET_PDEATHSIG``) and removes its log directory on stop.

The jars of the pinned release (``org.apache.kafka:kafka_2.13``) and a log binding are
resolved once from Maven Central with ``mvn dependency:copy-dependencies`` into
``$LIVEPULSE_KAFKA_HOME`` (default ``~/.cache/livepulse/kafka-<version>``). Kafka 3.9 is
pinned: it serves every protocol version aiokafka 0.14 speaks (Kafka 4 removed old ones).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from streams.broker import BrokerError, BrokerProcess, free_port

KAFKA_VERSION = "3.9.1"
SLF4J_VERSION = "1.7.36"
KAFKA_HOME_ENV = "LIVEPULSE_KAFKA_HOME"
HEAP = "-Xmx768m"
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.livepulse</groupId><artifactId>local-kafka</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""
LOG4J = """log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    explicit = os.environ.get(KAFKA_HOME_ENV, "").strip()
    return Path(explicit) if explicit else Path.home() / ".cache" / "livepulse" / f"kafka-{version}"


def resolve_jars(version: str = KAFKA_VERSION, home: Path | None = None) -> Path:
    """The folder of the release's runtime jars, resolved with Maven on first use."""
    home = home or kafka_home(version)
    libs = home / "libs"
    if (libs / f"kafka_2.13-{version}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Apache Kafka's jars are resolved with Maven: install `mvn` "
                          "(Debian: maven) or point LIVEPULSE_KAFKA_URL at a running cluster")
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
    (home / "pom.xml").write_text(POM.format(kafka=version, slf4j=SLF4J_VERSION))
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(f"resolving Apache Kafka {version} with Maven failed:\n"
                          f"{(done.stdout + done.stderr)[-2000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)  # complete or absent: a killed resolve is retried
    return libs


class KafkaBroker(BrokerProcess):
    """A single-node Apache Kafka (KRaft) on loopback; a context manager like
    :class:`~streams.broker.EmbeddedBroker`::

        with KafkaBroker() as broker:
            print(broker.bootstrap)   # 127.0.0.1:40123

    ``properties``: extra ``server.properties`` lines, e.g. ``{"log.roll.ms": "60000"}`` so
    that a soak's retention (which deletes closed segments only) takes effect in minutes.
    """

    name = "Apache Kafka"
    wait_for_coordinator = True  # its offsets topic is created on the first FindCoordinator

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 log_path: str | Path | None = None, version: str = KAFKA_VERSION,
                 java: str = "", partitions: int = 1,
                 properties: Mapping[str, str] | None = None) -> None:
        super().__init__(host=host, port=port, log_path=log_path)
        self.extra_properties = dict(properties or {})
        self.controller_port = free_port(host)
        self.version = version
        self.java = java or shutil.which("java") or "java"
        self.partitions = partitions
        self.workdir: Path | None = None

    def properties(self, log_dir: Path) -> str:
        return "\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
            f"listeners=PLAINTEXT://{self.bootstrap},CONTROLLER://{self.host}:"
            f"{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://{self.bootstrap}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={log_dir}", f"num.partitions={self.partitions}",
            "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "group.initial.rebalance.delay.ms=0",  # a lone consumer joins at once
            # a single node is its own controller: on a starved machine its heartbeat can lag
            # past the default 9 s, the broker is fenced and produces fail with
            # NotEnoughReplicas (seen once in a loaded CI run, an exactly-once worker stalled)
            "broker.session.timeout.ms=30000",
            "auto.create.topics.enable=true", "log.retention.check.interval.ms=30000",
            *(f"{name}={value}" for name, value in self.extra_properties.items()),
        ]) + "\n"

    def prepare(self) -> None:
        libs = resolve_jars(self.version)
        self.workdir = Path(tempfile.mkdtemp(prefix="livepulse-kafka-"))
        config = self.workdir / "server.properties"
        config.write_text(self.properties(self.workdir / "data"))
        (self.workdir / "log4j.properties").write_text(LOG4J)
        self.classpath = f"{libs}/*"
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(
            [self.java, "-cp", self.classpath, "kafka.tools.StorageTool", "format",
             f"--cluster-id={cluster_id}", "-c", str(config)],  # "=": an id may start with "-"
            capture_output=True, text=True, timeout=120)
        if formatted.returncode != 0:
            raise BrokerError(f"formatting the KRaft log dir failed: {formatted.stderr[-1000:]}")

    def command(self) -> list[str]:
        assert self.workdir is not None
        return [self.java, HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}",
                "-cp", self.classpath, "kafka.Kafka", str(self.workdir / "server.properties")]

    def cleanup(self) -> None:
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
