"""Apache Kafka 4 in KRaft mode: one JVM that is both broker and controller, run from Maven Central jars.

No tarball and no shell scripts: `build/maven/kafka/pom.xml` pins the broker's jars, `install()`
resolves them into `.cache/jars/kafka/`, writes `<runtime>/kafka/server.properties` and a Log4j 2
config, and formats the storage once; `start()` runs `java ... kafka.Kafka server.properties` the way
`kafka-server-start.sh` would. Once the broker answers, `after_healthy()` creates the platform's topics.

Files under `<runtime>/kafka/`: `server.properties`, `log4j2.properties`, `cluster.id`, `data/` (the log
dirs, including the KRaft metadata log). The broker's own output goes to `<runtime>/logs/kafka.log`.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from candlelake.config import Settings
from candlelake.platform import maven, runtime
from candlelake.platform.base import Component, Port
from candlelake.platform.runtime import ComponentError

log = logging.getLogger(__name__)

PART = "kafka"
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
MIN_JAVA = 17  # Kafka 4.0 dropped Java 11 for brokers and tools (KIP-1013)
DEFAULT_HEAP_OPTS: tuple[str, ...] = ("-Xms256m", "-Xmx768m")
DEAD_LETTER_RETENTION_MS = 30 * 24 * 3600 * 1000  # a month to look at and replay rejected input
NODE_ID = 1

# What kafka-run-class.sh passes by default (KAFKA_JVM_PERFORMANCE_OPTS), plus exiting on OOM so a
# broker that ran out of heap dies loudly and is restarted instead of limping on half-broken.
JVM_OPTS: tuple[str, ...] = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Everything to stdout, which runtime.spawn sends to <runtime>/logs/kafka.log. The distribution's
# extra files (state-change.log, controller.log, kafka-request.log) would only scatter the story of one
# small node; the chatty loggers are turned down instead. Log4j's own shutdown hook is off because it
# races Kafka's: with it, the last (most interesting) lines of a shutdown are lost. The root level is a
# system property so the one-shot storage tool can run quieter than the broker.
LOG4J2_PROPERTIES = """\
# Written by candlelake (platform/kafka.py); rewritten on every install.
status = warn
name = candlelake-kafka
shutdownHook = disable

appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n

rootLogger.level = ${sys:candlelake.kafka.log.level:-INFO}
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT

logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


def java_major(version_output: str) -> int | None:
    """The major version from `java -version` output (`"17.0.15"` -> 17, `"1.8.0_392"` -> 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # Java 8 and older call themselves 1.x
        return int(match.group(2))
    return major


def new_cluster_id() -> str:
    """A KRaft cluster id as `kafka-storage.sh random-uuid` makes it: 16 random bytes, base64url, no padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's own generator never starts an id with '-', which a command line would read as an option.
        if not cluster_id.startswith("-"):
            return cluster_id


def _render_properties(values: Mapping[str, object]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


@contextlib.contextmanager
def admin_client(bootstrap: str, timeout_ms: int, client_id: str = "candlelake-platform") -> Iterator[Any]:
    """A kafka-python admin client that is always closed, even when it fails to connect."""
    from kafka import KafkaAdminClient

    config = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "bootstrap_timeout_ms": timeout_ms,
        "request_timeout_ms": timeout_ms,
        "reconnect_backoff_max_ms": 1000,
    }
    # kafka-python 3.0 starts its IO thread before it bootstraps and leaves it running when the bootstrap
    # fails in __init__, so a health check polled against a broker still starting would leak one thread
    # (and its sockets) per call. Building in two steps keeps a handle to stop it.
    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(**config)
    except BaseException:
        client, net = getattr(admin, "_client", None), getattr(admin, "_net", None)
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()
        with contextlib.suppress(Exception):
            if net is not None:
                net.stop()
        raise
    try:
        yield admin
    finally:
        with contextlib.suppress(Exception):
            admin.close()


class TopicNotFound(LookupError):
    """The broker lists no partitions for the topic: it does not exist (topics are never auto-created)."""


def topic_end_offsets(
    bootstrap: str, topic: str, timeout_ms: int = 5_000, client_id: str = "candlelake-platform"
) -> dict[int, int]:
    """The topic's end offset (the next record's offset) per partition, from the broker at `bootstrap`.

    Raises `TopicNotFound` when the topic has no partitions, and kafka-python's errors when the broker
    does not answer within `timeout_ms`.
    """
    from kafka import TopicPartition
    from kafka.admin import OffsetSpec

    with admin_client(bootstrap, timeout_ms, client_id) as admin:
        described = admin.describe_topics([topic])
        partitions = [int(p["partition_index"]) for p in (described[0] if described else {}).get("partitions") or []]
        if not partitions:
            raise TopicNotFound(f"topic {topic!r} has no partitions (does it exist?)")
        found = admin.list_partition_offsets(
            {TopicPartition(topic, p): OffsetSpec.LATEST for p in partitions}, timeout_ms=timeout_ms
        )
    return {tp.partition: int(value.offset) for tp, value in found.items()}


class KafkaComponent(Component):
    """A single-node Kafka (KRaft, combined broker and controller) owned by this project."""

    name = "kafka"
    start_timeout = 90.0
    stage = 1
    health_timeout_ms = 2000

    def __init__(self, settings: Settings, heap_opts: Sequence[str] = DEFAULT_HEAP_OPTS) -> None:
        super().__init__(settings)
        self.heap_opts = tuple(heap_opts)

    # --- where things live -------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.settings.runtime_dir / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def cluster_id_path(self) -> Path:
        return self.home / "cluster.id"

    @property
    def jars(self) -> Path:
        return maven.jars_dir(self.settings, "kafka")

    @property
    def connect_host(self) -> str:
        """Where clients reach the broker: the listen address, unless that is a wildcard."""
        host = self.settings.host
        return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host

    @property
    def bootstrap(self) -> str:
        """This broker's own address (settings.kafka_bootstrap may point elsewhere, e.g. a cluster)."""
        return f"{self.connect_host}:{self.settings.kafka_port}"

    # --- Component ---------------------------------------------------------------------------------

    def ports(self) -> list[Port]:
        return [
            Port(self.settings.kafka_port, "CANDLELAKE_KAFKA_PORT"),
            Port(self.settings.kafka_controller_port, "CANDLELAKE_KAFKA_CONTROLLER_PORT"),
        ]

    def urls(self) -> list[str]:
        return [f"kafka://{self.bootstrap}"]

    def install(self) -> None:
        """Resolve the jars, write the configs, format the storage once. Quick when done before."""
        java = self.java()
        maven.resolve(self.settings, "kafka", PART)
        self._check_pinned_version()
        self.home.mkdir(parents=True, exist_ok=True)
        _write_if_changed(self.config_path, _render_properties(self.server_properties()))
        _write_if_changed(self.log4j_path, LOG4J2_PROPERTIES)
        if not self.is_formatted():
            self._format_storage(java)

    def start(self) -> int:
        java = self.java()
        if not self.config_path.is_file() or not self.is_formatted():
            raise ComponentError(PART, "not installed yet (no formatted storage); run `candlelake install`")
        return runtime.spawn(self.settings, self.name, self.broker_argv(java))

    def healthy(self) -> bool:
        """True when the broker answers a DescribeCluster with itself registered and not fenced."""
        if not runtime.port_open(self.connect_host, self.settings.kafka_port):
            return False  # spares a client (and its timeout) while nothing listens yet
        try:
            with admin_client(self.bootstrap, self.health_timeout_ms, "candlelake-health") as admin:
                cluster = admin.describe_cluster()
        except Exception:  # any failure simply means "not healthy"
            return False
        brokers = cluster.get("brokers") or []
        return any(not broker.get("is_fenced", False) for broker in brokers)

    def after_healthy(self) -> None:
        """Create the trades and dead-letter topics if missing; align their retention if they exist."""
        wanted = self.topic_specs()
        try:
            with admin_client(self.bootstrap, 15_000) as admin:
                existing = set(admin.list_topics())
                missing = {name: spec for name, spec in wanted.items() if name not in existing}
                if missing:
                    self._create_topics(admin, missing)
                present = [name for name in wanted if name in existing]
                if present:
                    self._align_retention(admin, {name: wanted[name] for name in present})
        except ComponentError:
            raise
        except Exception as exc:
            raise ComponentError(PART, f"could not create or check the topics: {exc}", self.log) from exc

    # --- details -----------------------------------------------------------------------------------

    def java(self) -> str:
        """The `java` to run (JAVA_HOME first, like Kafka's scripts, then PATH), checked to be 17+."""
        java_home = os.environ.get("JAVA_HOME", "")
        candidate = os.path.join(java_home, "bin", "java") if java_home else "java"
        java = shutil.which(candidate)
        if not java:
            raise ComponentError(
                PART,
                "Java was not found (looked in JAVA_HOME, then PATH). Kafka 4 needs Java 17+; "
                "install a JDK 17 or newer (Debian: apt-get install openjdk-17-jre-headless)",
            )
        try:
            result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ComponentError(PART, f"could not run {java} -version: {exc}") from exc
        output = result.stderr + result.stdout
        major = java_major(output)
        if major is None:
            raise ComponentError(PART, f"could not tell the version of {java}: {output.strip()[:200]!r}")
        if major < MIN_JAVA:
            raise ComponentError(
                PART,
                f"Kafka 4 needs Java {MIN_JAVA}+, but {java} is Java {major}. Install a JDK {MIN_JAVA} or "
                "newer and put it first on PATH or in JAVA_HOME",
            )
        return java

    def server_properties(self) -> dict[str, object]:
        """The broker's configuration: one node, KRaft, sized for a laptop or a small VM."""
        s = self.settings
        listen = s.host
        return {
            # KRaft, combined mode: this node is the whole cluster and its own controller quorum.
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            # A static voter set rather than a dynamic quorum (controller.quorum.bootstrap.servers +
            # format --standalone): the voter endpoints then live in this file, not in the metadata log,
            # so moving CANDLELAKE_KAFKA_CONTROLLER_PORT later needs no reformat.
            "controller.quorum.voters": f"{NODE_ID}@{self.connect_host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{listen}:{s.kafka_port},CONTROLLER://{listen}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.connect_host}:{s.kafka_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.data_dir,
            # One replica of everything; there is no second broker to replicate to.
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            # Internal topics default to 50 partitions each: pointless on one node and slow to create.
            "offsets.topic.num.partitions": 3,
            "transaction.state.log.num.partitions": 3,
            # Topics are created on purpose (after_healthy) with their retention, never by a typo.
            "auto.create.topics.enable": "false",
            "num.partitions": s.topic_partitions,
            # Small machine: few threads, and a log cleaner buffer of 32 MiB instead of 128 MiB of heap.
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "background.threads": 4,
            "log.cleaner.threads": 1,
            "log.cleaner.dedupe.buffer.size": 32 * 1024 * 1024,
            "log.retention.hours": 168,
            "log.segment.bytes": 256 * 1024 * 1024,
            "log.retention.check.interval.ms": 300_000,
            # A lone consumer (the Spark job, a test) should not wait 3 s for company before it starts.
            "group.initial.rebalance.delay.ms": 0,
            "delete.topic.enable": "true",
        }

    def topic_specs(self) -> dict[str, dict[str, Any]]:
        """The platform's topics, in kafka-python's create_topics dict form."""
        s = self.settings
        return {
            s.trades_topic: {
                "num_partitions": s.topic_partitions,
                "replication_factor": 1,
                "configs": {"retention.ms": str(s.topic_retention_ms)},
            },
            s.dead_letter_topic: {
                "num_partitions": s.topic_partitions,
                "replication_factor": 1,
                "configs": {"retention.ms": str(DEAD_LETTER_RETENTION_MS)},
            },
            # Price points from the REST pollers (no trades, no volume), kept like the trades.
            s.prices_topic: {
                "num_partitions": 1,
                "replication_factor": 1,
                "configs": {"retention.ms": str(s.topic_retention_ms)},
            },
            # The stream's sliding-window KPIs of the price points (candlelake.stream.price_kpis).
            s.price_kpis_topic: {
                "num_partitions": 1,
                "replication_factor": 1,
                "configs": {"retention.ms": str(s.topic_retention_ms)},
            },
            # Every alert the scorer raised (candlelake.alerts): few, and read by people's tools, so kept
            # as long as the dead letters.
            s.alerts_topic: {
                "num_partitions": 1,
                "replication_factor": 1,
                "configs": {"retention.ms": str(DEAD_LETTER_RETENTION_MS)},
            },
        }

    def is_formatted(self) -> bool:
        # StorageTool writes meta.properties (cluster id, node id) into every log dir it formats.
        return (self.data_dir / "meta.properties").is_file()

    def cluster_id(self) -> str:
        """The cluster id this node was (or will be) formatted with, created once and kept."""
        if self.cluster_id_path.is_file():
            stored = self.cluster_id_path.read_text().strip()
            if stored:
                return stored
        cluster_id = new_cluster_id()
        self.cluster_id_path.parent.mkdir(parents=True, exist_ok=True)
        self.cluster_id_path.write_text(cluster_id + "\n")
        return cluster_id

    def classpath(self) -> str:
        # The JVM expands `dir/*` to every jar in it; it keeps argv (and `ps`) short.
        return str(self.jars / "*")

    def broker_argv(self, java: str) -> list[str]:
        return [
            java,
            *self.heap_opts,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp",
            self.classpath(),
            BROKER_MAIN,
            str(self.config_path),
        ]

    def _format_storage(self, java: str) -> None:
        format_log = self.settings.logs_dir / "kafka-format.log"
        format_log.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",  # a one-shot tool: the cheapest collector starts fastest
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-Dcandlelake.kafka.log.level=WARN",  # not the 300-line config dump, only trouble
            "-cp",
            self.classpath(),
            STORAGE_TOOL_MAIN,
            "format",
            "--cluster-id",
            self.cluster_id(),
            "--config",
            str(self.config_path),
            # A half-finished earlier run may have formatted the dir already: that is fine.
            "--ignore-formatted",
        ]
        with open(format_log, "w") as out:
            out.write(" ".join(argv) + "\n")
            out.flush()
            try:
                result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False)
            except subprocess.TimeoutExpired:
                raise ComponentError(PART, "formatting the storage took over 120s", format_log) from None
        if result.returncode != 0 or not self.is_formatted():
            raise ComponentError(
                PART,
                f"formatting the storage in {self.data_dir} failed (exit {result.returncode}); "
                f"its last lines:\n{runtime.tail(format_log)}",
                format_log,
            )

    def _check_pinned_version(self) -> None:
        version = self.settings.kafka_version
        if not (self.jars / f"kafka_2.13-{version}.jar").is_file():
            pinned = sorted(p.name for p in self.jars.glob("kafka_2.13-*.jar"))
            raise ComponentError(
                PART,
                f"CANDLELAKE_KAFKA_VERSION={version} but build/maven/kafka/pom.xml pins {pinned or 'nothing'}; "
                "change kafka.version in that pom (the jars are re-resolved) or the setting",
            )

    def _create_topics(self, admin: Any, specs: dict[str, dict[str, Any]]) -> None:
        from kafka.errors import TopicAlreadyExistsError, for_code

        response = admin.create_topics(specs, timeout_ms=15_000, raise_errors=False)
        for topic in response.get("topics", []):
            error = for_code(topic.get("error_code", 0))
            # Another process creating the same topic at the same moment is not a failure.
            if topic.get("error_code", 0) and error is not TopicAlreadyExistsError:
                raise ComponentError(
                    PART,
                    f"could not create topic {topic.get('name')}: {error.__name__} {topic.get('error_message')}",
                    self.log,
                )
        admin.wait_for_topics(list(specs), timeout_ms=15_000)

    def _align_retention(self, admin: Any, specs: dict[str, dict[str, Any]]) -> None:
        """Set retention.ms on existing topics when it differs; partitions are never changed here."""
        from kafka.admin import ConfigResource, ConfigResourceType

        resources = [ConfigResource(ConfigResourceType.TOPIC, name, ["retention.ms"]) for name in specs]
        described = admin.describe_configs(resources, config_filter="all").get("topic", {})
        changes = []
        for name, spec in specs.items():
            want = spec["configs"]["retention.ms"]
            have = (described.get(name, {}).get("retention.ms") or {}).get("value")
            if have != want:
                log.info("kafka: setting retention.ms of topic %s from %s to %s", name, have, want)
                changes.append(ConfigResource(ConfigResourceType.TOPIC, name, {"retention.ms": want}))
        if changes:
            # Incremental (KIP-339) so that other per-topic overrides someone set stay as they are.
            result = admin.alter_configs(changes, incremental=True)
            failed = {k: v for k, v in result.get("topic", {}).items() if v != "OK"}
            if failed:
                raise ComponentError(PART, f"could not set the retention of {failed}", self.log)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
