"""Topic and broker configs with real clients: DescribeConfigs (values, sources, synonyms,
read-only, types), IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT, validate_only)
and the older AlterConfigs (the given configs replace all others), Kafka's error codes for
bad changes, topic configs that take effect on running partitions (a shorter retention.ms,
a smaller max.message.bytes), dynamic broker configs (one broker's, and the cluster-wide
default) that apply at once and survive kill -9, and the same through every node of a
cluster.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

from helpers import confluent_producer, wait_until

# Kafka's ConfigSource codes.
DYNAMIC_TOPIC, DYNAMIC_BROKER, DYNAMIC_DEFAULT_BROKER, STATIC_BROKER, DEFAULT = 1, 2, 3, 4, 5


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def source(entry) -> int:
    return int(getattr(entry.source, "value", entry.source))


def describe(bootstrap: str, kind: ResourceType, name: str) -> dict:
    r = ConfigResource(kind, name)
    a = admin(bootstrap)  # kept alive until the answer: destroying it cancels the call
    return a.describe_configs([r])[r].result(20)


def alter(bootstrap: str, kind: ResourceType, name: str, ops: list[tuple[str, AlterConfigOpType, str | None]],
          validate_only: bool = False) -> None:
    entries = [ConfigEntry(n, v, incremental_operation=op) for n, op, v in ops]
    r = ConfigResource(kind, name, incremental_configs=entries)
    a = admin(bootstrap)
    a.incremental_alter_configs([r], validate_only=validate_only)[r].result(20)


def refused(fn) -> KafkaError:
    with pytest.raises(KafkaException) as e:
        fn()
    return e.value.args[0]


def create(bootstrap: str, name: str, config: dict, partitions: int = 1) -> None:
    a = admin(bootstrap)
    a.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(20)


def produce_one(bootstrap: str, topic: str, size: int) -> KafkaError | None:
    """Produces one record of `size` bytes; the delivery error, if any."""
    errors = []
    p = confluent_producer(bootstrap, **{"acks": "all", "linger.ms": 0, "message.max.bytes": 10_000_000,
                                         "compression.type": "none", "message.send.max.retries": 0})
    p.produce(topic, value=b"x" * size, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    return errors[0]


SET, DELETE, APPEND, SUBTRACT = (AlterConfigOpType.SET, AlterConfigOpType.DELETE, AlterConfigOpType.APPEND,
                                 AlterConfigOpType.SUBTRACT)


def test_describe_reports_values_sources_and_synonyms(make_broker):
    broker = make_broker({"log.retention.hours": 48})
    create(broker.bootstrap, "cfg-own", {"retention.ms": "100000", "cleanup.policy": "compact"})
    create(broker.bootstrap, "cfg-plain", {})
    own = describe(broker.bootstrap, ResourceType.TOPIC, "cfg-own")
    assert (own["retention.ms"].value, source(own["retention.ms"])) == ("100000", DYNAMIC_TOPIC)
    assert (own["cleanup.policy"].value, source(own["cleanup.policy"])) == ("compact", DYNAMIC_TOPIC)
    assert not own["retention.ms"].is_read_only and not own["retention.ms"].is_sensitive
    plain = describe(broker.bootstrap, ResourceType.TOPIC, "cfg-plain")
    # Not set on the topic: the broker's log.retention.hours, in retention.ms's unit.
    assert (plain["retention.ms"].value, source(plain["retention.ms"])) == (str(48 * 3_600_000), STATIC_BROKER)
    assert (plain["segment.bytes"].value, source(plain["segment.bytes"])) == ("1073741824", DEFAULT)
    assert (plain["cleanup.policy"].value, source(plain["cleanup.policy"])) == ("delete", DEFAULT)
    synonyms = [(s.name, s.value, source(s)) for s in plain["retention.ms"].synonyms.values()]
    assert ("log.retention.hours", "168", DEFAULT) in synonyms or ("log.retention.hours", "48", STATIC_BROKER) in synonyms

    me = describe(broker.bootstrap, ResourceType.BROKER, "0")
    assert (me["log.retention.hours"].value, source(me["log.retention.hours"])) == ("48", STATIC_BROKER)
    assert me["num.partitions"].is_read_only, "static: changing it needs a restart, as in Kafka"
    assert not me["message.max.bytes"].is_read_only
    assert (me["message.max.bytes"].value, source(me["message.max.bytes"])) == ("1048588", DEFAULT)
    err = refused(lambda: describe(broker.bootstrap, ResourceType.TOPIC, "no-such-topic"))
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


def test_incremental_alter_set_delete_append_subtract_and_validate_only(broker):
    create(broker.bootstrap, "cfg-alter", {"retention.ms": "100000"})

    def value(name):
        return describe(broker.bootstrap, ResourceType.TOPIC, "cfg-alter")[name]

    alter(broker.bootstrap, ResourceType.TOPIC, "cfg-alter", [("retention.ms", SET, "5000")], validate_only=True)
    assert value("retention.ms").value == "100000", "validate_only changes nothing"
    alter(broker.bootstrap, ResourceType.TOPIC, "cfg-alter",
          [("retention.ms", SET, "5000"), ("cleanup.policy", APPEND, "compact")])
    assert value("retention.ms").value == "5000"
    assert value("cleanup.policy").value == "delete,compact", "APPEND starts from the default"
    alter(broker.bootstrap, ResourceType.TOPIC, "cfg-alter",
          [("cleanup.policy", SUBTRACT, "delete"), ("retention.ms", DELETE, None)])
    assert (value("cleanup.policy").value, source(value("cleanup.policy"))) == ("compact", DYNAMIC_TOPIC)
    assert (value("retention.ms").value, source(value("retention.ms"))) == ("604800000", DEFAULT)

    bad = [
        ("no.such.config", SET, "1", KafkaError.INVALID_CONFIG),
        ("retention.ms", SET, "soon", KafkaError.INVALID_CONFIG),            # wrong type
        ("retention.ms", SET, "-5", KafkaError.INVALID_CONFIG),              # out of range
        ("segment.bytes", SET, "100", KafkaError.INVALID_CONFIG),            # below Kafka's minimum
        ("cleanup.policy", SET, "shred", KafkaError.INVALID_CONFIG),         # not one of the values
        ("retention.ms", APPEND, "1", KafkaError.INVALID_CONFIG),            # not a list
        ("unclean.leader.election.enable", SET, "maybe", KafkaError.INVALID_CONFIG),
        ("retention.ms", SET, "99999999999999999999", KafkaError.INVALID_CONFIG),  # past a LONG
        ("segment.bytes", SET, "4294967296", KafkaError.INVALID_CONFIG),          # past an INT
        ("retention.bytes", SET, "-2", KafkaError.INVALID_CONFIG),                # negative size
    ]
    for name, op, v, code in bad:
        err = refused(lambda: alter(broker.bootstrap, ResourceType.TOPIC, "cfg-alter", [(name, op, v)]))
        assert err.code() == code, f"{name} {op} {v}: {err}"
    err = refused(lambda: alter(broker.bootstrap, ResourceType.TOPIC, "no-such-topic", [("retention.ms", SET, "1")]))
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    err = refused(lambda: alter(broker.bootstrap, ResourceType.BROKER, "0", [("num.partitions", SET, "3")]))
    assert err.code() == KafkaError.INVALID_REQUEST and "Cannot update these configs dynamically" in err.str(), err
    err = refused(lambda: alter(broker.bootstrap, ResourceType.BROKER, "0", [("message.max.bytes", SET, "ten")]))
    assert err.code() == KafkaError.INVALID_CONFIG, err
    assert value("cleanup.policy").value == "compact", "refused changes change nothing"


@pytest.mark.timeout(120)
def test_topic_config_changes_apply_to_running_partitions(make_broker):
    broker = make_broker({"log.retention.check.interval.ms": 500, "log.segment.delete.delay.ms": 0})
    topic = "cfg-live"
    create(broker.bootstrap, topic, {"segment.bytes": "16384"})
    p = confluent_producer(broker.bootstrap, **{"acks": "all", "linger.ms": 5, "batch.size": 4000})
    for i in range(60):
        p.produce(topic, value=b"%d" % i + b"." * 1000)
    assert p.flush(30) == 0
    from helpers import confluent_consumer
    from confluent_kafka import TopicPartition

    def low() -> int:
        c = confluent_consumer(broker.bootstrap)
        try:
            return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0]
        finally:
            c.close()

    assert low() == 0
    # A shorter retention deletes on the next check, without a restart.
    alter(broker.bootstrap, ResourceType.TOPIC, topic, [("retention.ms", SET, "1000")])
    wait_until(lambda: low() > 0, 15, what="retention.ms=1000 to delete old segments")
    print(f"log start offset after retention.ms=1000: {low()}")

    # A smaller max.message.bytes applies to the next produce; deleting it restores the default.
    assert produce_one(broker.bootstrap, topic, 5000) is None
    alter(broker.bootstrap, ResourceType.TOPIC, topic, [("max.message.bytes", SET, "2000")])
    err = produce_one(broker.bootstrap, topic, 5000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    alter(broker.bootstrap, ResourceType.TOPIC, topic, [("max.message.bytes", DELETE, None)])
    assert produce_one(broker.bootstrap, topic, 5000) is None


@pytest.mark.timeout(120)
def test_dynamic_broker_configs_apply_at_once_and_survive_kill9(make_broker):
    from kafka.admin import ConfigResource as KpResource, ConfigResourceType, KafkaAdminClient

    broker = make_broker()
    create(broker.bootstrap, "cfg-broker", {})
    # This broker's own dynamic config (confluent-kafka, IncrementalAlterConfigs).
    alter(broker.bootstrap, ResourceType.BROKER, "0", [("message.max.bytes", SET, "3000")])
    me = describe(broker.bootstrap, ResourceType.BROKER, "0")
    assert (me["message.max.bytes"].value, source(me["message.max.bytes"])) == ("3000", DYNAMIC_BROKER)
    topic_view = describe(broker.bootstrap, ResourceType.TOPIC, "cfg-broker")["max.message.bytes"]
    assert (topic_view.value, source(topic_view)) == ("3000", DYNAMIC_BROKER)
    err = produce_one(broker.bootstrap, "cfg-broker", 5000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    alter(broker.bootstrap, ResourceType.BROKER, "0", [("message.max.bytes", DELETE, None)])
    assert produce_one(broker.bootstrap, "cfg-broker", 5000) is None

    # The cluster-wide default (kafka-python, the older AlterConfigs, resource name "").
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        answer = kp.alter_configs([KpResource(ConfigResourceType.BROKER, "", configs={"message.max.bytes": "3000"})])
        assert [r[0] for r in answer.resources] == [0], answer
        described = kp.describe_configs([KpResource(ConfigResourceType.BROKER, "0")], include_synonyms=True)
        entries = {e[0]: e for e in described[0].resources[0][4]}
        assert entries["message.max.bytes"][1] == "3000"
        assert entries["message.max.bytes"][3] == DYNAMIC_DEFAULT_BROKER
    finally:
        kp.close()
    err = produce_one(broker.bootstrap, "cfg-broker", 5000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err

    broker.kill9()
    broker.restart()
    me = describe(broker.bootstrap, ResourceType.BROKER, "0")
    assert (me["message.max.bytes"].value, source(me["message.max.bytes"])) == ("3000", DYNAMIC_DEFAULT_BROKER)
    err = produce_one(broker.bootstrap, "cfg-broker", 5000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, "still in force after kill -9"

    # AlterConfigs replaces the whole set: an empty one removes the default.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        kp.alter_configs([KpResource(ConfigResourceType.BROKER, "", configs={})])
    finally:
        kp.close()
    assert produce_one(broker.bootstrap, "cfg-broker", 5000) is None


def test_kafka_python_alter_configs_replaces_the_topic_configs(broker):
    from kafka.admin import ConfigResource as KpResource, ConfigResourceType, KafkaAdminClient

    create(broker.bootstrap, "cfg-legacy", {"cleanup.policy": "compact", "segment.bytes": "16384"})
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        answer = kp.alter_configs([KpResource(ConfigResourceType.TOPIC, "cfg-legacy", configs={"retention.ms": "60000"})])
        assert [r[0] for r in answer.resources] == [0], answer
        bad = kp.alter_configs([KpResource(ConfigResourceType.TOPIC, "cfg-legacy", configs={"retention.ms": "x"})])
        assert bad.resources[0][0] == KafkaError.INVALID_CONFIG, bad
    finally:
        kp.close()
    after = describe(broker.bootstrap, ResourceType.TOPIC, "cfg-legacy")
    assert (after["retention.ms"].value, source(after["retention.ms"])) == ("60000", DYNAMIC_TOPIC)
    assert (after["cleanup.policy"].value, source(after["cleanup.policy"])) == ("delete", DEFAULT)
    assert source(after["segment.bytes"]) == DEFAULT


def test_kafkajs_describe_and_alter_configs(broker):
    script = Path(__file__).parent / "node" / "configs.js"
    done = subprocess.run(["node", str(script), broker.bootstrap], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    print(f"kafkajs saw {seen}")
    assert seen["before"] == ["604800000", DEFAULT]
    assert seen["after"] == ["60000", DYNAMIC_TOPIC]
    assert seen["broker"] == ["1", True]
    assert seen["badValue"] == "INVALID_CONFIG"


@pytest.mark.timeout(180)
def test_configs_through_any_node_of_a_cluster(request, tmp_path):
    from cluster_helpers import running_cluster

    with running_cluster(request, tmp_path) as cluster:
        cluster.start_all()
        cluster.create_topic("cfg-cluster", partitions=3, replication=3)
        # Through each node in turn: the change is committed by the active controller and
        # every node describes it at once.
        for i, value in ((1, "11000"), (2, "22000"), (3, "33000")):
            alter(cluster.node(i).bootstrap, ResourceType.TOPIC, "cfg-cluster", [("retention.ms", SET, value)])
            for n in (1, 2, 3):
                got = describe(cluster.node(n).bootstrap, ResourceType.TOPIC, "cfg-cluster")["retention.ms"].value
                assert got == value, f"node {n} after the change through node {i}: {got}"
        # A broker's own config, through that broker; the others do not take it.
        alter(cluster.node(2).bootstrap, ResourceType.BROKER, "2", [("message.max.bytes", SET, "4000")])
        assert describe(cluster.node(2).bootstrap, ResourceType.BROKER, "2")["message.max.bytes"].value == "4000"
        assert describe(cluster.node(1).bootstrap, ResourceType.BROKER, "1")["message.max.bytes"].value == "1048588"
