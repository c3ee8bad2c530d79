"""The Kafka component against a real Kafka 4 broker (KRaft, one node) started from the Maven jars.

One broker per module, on free ports in a temporary runtime folder; the jar cache is the project's own
(`.cache/jars/kafka`), so only the very first run on a machine downloads anything.
"""

from __future__ import annotations

import json
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaTimeoutError

from candlelake.config import Settings, load_settings
from candlelake.platform import runtime
from candlelake.platform.kafka import DEAD_LETTER_RETENTION_MS, KafkaComponent, admin_client
from candlelake.platform.runtime import ComponentError
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _settings(runtime_dir: Path, kafka_port: int, controller_port: int) -> Settings:
    # CANDLELAKE_CACHE_DIR stays default so the resolved jars are shared with `make jars`.
    return load_settings(
        {
            "CANDLELAKE_RUNTIME_DIR": str(runtime_dir),
            "CANDLELAKE_KAFKA_PORT": str(kafka_port),
            "CANDLELAKE_KAFKA_CONTROLLER_PORT": str(controller_port),
        }
    )


def _ensure_running(component: KafkaComponent) -> None:
    """Start the broker the way `candlelake up` does, unless it already runs."""
    if component.pid() is None:
        for port in component.ports():
            runtime.ensure_port_free(component.name, component.settings.host, port.number, port.setting)
        pid = component.start()
        runtime.wait_until(component.name, component.healthy, component.start_timeout, log=component.log, pid=pid)
    component.after_healthy()


@pytest.fixture(scope="module")
def kafka_component(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaComponent]:
    settings = _settings(tmp_path_factory.mktemp("kafka-runtime"), free_port(), free_port())
    component = KafkaComponent(settings)
    component.install()
    try:
        yield component
    finally:
        component.stop()


@pytest.fixture
def broker(kafka_component: KafkaComponent) -> KafkaComponent:
    """The module's broker, (re)started if a test stopped it."""
    _ensure_running(kafka_component)
    return kafka_component


def test_install_is_idempotent_and_keeps_the_cluster(kafka_component: KafkaComponent) -> None:
    meta = (kafka_component.data_dir / "meta.properties").read_text()
    cluster_id = kafka_component.cluster_id()
    assert f"cluster.id={cluster_id}" in meta

    kafka_component.install()

    assert (kafka_component.data_dir / "meta.properties").read_text() == meta
    config = kafka_component.config_path.read_text()
    assert "process.roles=broker,controller" in config
    assert "auto.create.topics.enable=false" in config
    assert f"listeners=PLAINTEXT://127.0.0.1:{kafka_component.settings.kafka_port}," in config


def test_broker_logs_through_log4j_into_its_log_file(broker: KafkaComponent) -> None:
    text = broker.log.read_text()
    # Without the SLF4J binding in the pom these lines would never reach the file.
    assert "Kafka version: 4.1.1" in text
    assert "Kafka Server started" in text


def test_topics_have_the_configured_partitions_and_retention(broker: KafkaComponent) -> None:
    s = broker.settings
    with admin_client(broker.bootstrap, 10_000) as admin:
        topics = {t["name"]: t for t in admin.describe_topics([s.trades_topic, s.dead_letter_topic])}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, ["retention.ms"]) for name in topics],
            config_filter="all",
        )["topic"]

    for name in (s.trades_topic, s.dead_letter_topic):
        assert topics[name]["error_code"] == 0
        assert len(topics[name]["partitions"]) == s.topic_partitions
        assert all(len(p["replica_nodes"]) == 1 for p in topics[name]["partitions"])
    assert configs[s.trades_topic]["retention.ms"]["value"] == str(s.topic_retention_ms)
    assert configs[s.dead_letter_topic]["retention.ms"]["value"] == str(DEAD_LETTER_RETENTION_MS)


def _wait_for_topic_configs(broker: KafkaComponent, topic: str, wanted: dict[str, str]) -> None:
    """Until the topic's values of `wanted`'s names equal `wanted` (15 s at most).

    A config change is committed to the KRaft metadata log and reaches the broker's cache a moment
    later, so a describe right after an alter can still show the old value.
    """
    seen: dict[str, str | None] = {}

    def settled() -> bool:
        with admin_client(broker.bootstrap, 10_000) as admin:
            configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, None)])["topic"][topic]
        # Only overridden configs may be listed: a name still at its default can be absent.
        seen.update({name: (configs.get(name) or {}).get("value") for name in wanted})
        return seen == wanted

    wait_until(settled, timeout=15, interval=0.2, what=lambda: f"{topic}'s configs {wanted} (seen last: {seen})")


def test_after_healthy_restores_retention_and_keeps_other_overrides(broker: KafkaComponent) -> None:
    topic = broker.settings.trades_topic
    overrides = {"retention.ms": "60000", "segment.ms": "3600000"}
    with admin_client(broker.bootstrap, 10_000) as admin:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, overrides)], incremental=True)
    _wait_for_topic_configs(broker, topic, overrides)

    broker.after_healthy()
    broker.after_healthy()  # a second run changes nothing and does not fail on existing topics

    wanted = {"retention.ms": str(broker.settings.topic_retention_ms), "segment.ms": "3600000"}
    _wait_for_topic_configs(broker, topic, wanted)


def test_idempotent_producer_round_trip_keeps_per_key_order(broker: KafkaComponent) -> None:
    topic = broker.settings.trades_topic
    keys = ["binance:BTCUSDT", "coinbase:BTC-USD", "binance:ETHUSDT"]
    sent = [{"key": keys[i % len(keys)], "trade_id": i, "price": "65000.10"} for i in range(60)]
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        acks="all",
        enable_idempotence=True,
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    try:
        futures = [producer.send(topic, key=record["key"], value=record) for record in sent]
        producer.flush(timeout=20)
        metadata = [f.get(timeout=20) for f in futures]
    finally:
        producer.close(timeout=10)

    partition_of = {record["key"]: md.partition for record, md in zip(sent, metadata, strict=True)}
    assert all(md.partition == partition_of[r["key"]] for r, md in zip(sent, metadata, strict=True))

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        enable_auto_commit=False,
        value_deserializer=lambda b: json.loads(b),
    )
    received: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(broker.settings.topic_partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 20
        while len(received) < len(sent) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                received.extend(batch)
        # One more poll: anything beyond what was sent would be a duplicate.
        for batch in consumer.poll(timeout_ms=500).values():
            received.extend(batch)
    finally:
        consumer.close()

    # The topic is this module's own: exactly what was sent, once each (idempotence, no duplicates).
    assert sorted(m.value["trade_id"] for m in received) == [r["trade_id"] for r in sent]
    for key in keys:
        got = [m.value["trade_id"] for m in received if m.key == key.encode()]
        assert got == [r["trade_id"] for r in sent if r["key"] == key]
        assert {m.partition for m in received if m.key == key.encode()} == {partition_of[key]}


def test_topics_are_never_created_by_accident(broker: KafkaComponent) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=2000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send("trdaes", b"typo").get(timeout=5)
    finally:
        producer.close(timeout=5)
    with admin_client(broker.bootstrap, 10_000) as admin:
        assert "trdaes" not in admin.list_topics()


def test_status_reports_health_memory_and_address(broker: KafkaComponent) -> None:
    status = broker.status()
    assert status.healthy
    assert status.rss_kib > 50_000
    assert status.urls == [f"kafka://127.0.0.1:{broker.settings.kafka_port}"]
    assert status.ports == [broker.settings.kafka_port, broker.settings.kafka_controller_port]


def test_stop_ends_the_broker_process(broker: KafkaComponent) -> None:
    pid = broker.pid()
    assert pid is not None

    assert broker.stop() is True

    assert not runtime.pid_alive(pid)
    assert broker.pid() is None
    assert not runtime.pid_path(broker.settings, broker.name).exists()
    assert broker.healthy() is False
    assert broker.stop() is False  # stopping a stopped broker is quiet
    assert "shut down completed" in broker.log.read_text()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        component = KafkaComponent(_settings(tmp_path, free_port(), squatter.getsockname()[1]))

        with pytest.raises(ComponentError, match="CANDLELAKE_KAFKA_CONTROLLER_PORT") as caught:
            for port in component.ports():
                runtime.ensure_port_free(component.name, component.settings.host, port.number, port.setting)
    assert "already in use" in str(caught.value)


def test_java_older_than_17_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin = tmp_path / "jdk8" / "bin"
    fake_bin.mkdir(parents=True)
    java = fake_bin / "java"
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk8"))
    component = KafkaComponent(_settings(tmp_path / "runtime", free_port(), free_port()))

    with pytest.raises(ComponentError, match=r"Kafka 4 needs Java 17\+.*Java 8"):
        component.install()
