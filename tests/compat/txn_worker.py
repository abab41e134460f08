"""A consume-transform-produce worker with exactly-once semantics, as Kafka's documentation
writes one with confluent-kafka: a read_committed consumer in a group, a transactional
producer, and each batch's output and consumed offsets committed in one transaction.

Usage: python txn_worker.py BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP TRANSACTIONAL_ID TOTAL

Reads IN_TOPIC (values are decimal numbers), writes `T:<value>` to the same partition of
OUT_TOPIC, until the group's committed offsets cover TOTAL records. Prints one line per
committed transaction ("committed N") so a test can watch progress. Exits 0 when done,
3 on a fatal error (fenced: a newer instance took over).
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def main() -> int:
    bootstrap, source, sink, group, txn_id, total = sys.argv[1:7]
    total = int(total)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
    })
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 10000,
        "linger.ms": 5,
    })
    producer.init_transactions(60)
    consumer.subscribe([source])
    committed_total = 0
    while True:
        msgs = [m for m in consumer.consume(500, timeout=1.0) if not m.error()]
        if not msgs:
            committed_total = done_so_far(consumer, group, source)
            if committed_total >= total:
                print(f"done {committed_total}", flush=True)
                return 0
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce(sink, value=b"T:" + m.value(), key=m.key(), partition=m.partition())
        while True:
            try:
                positions = consumer.position(consumer.assignment())
                producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 20)
                producer.commit_transaction(20)
                print(f"committed {len(msgs)}", flush=True)
                break
            except KafkaException as e:
                err = e.args[0]
                if err.retriable():
                    print(f"retrying: {err}", flush=True)
                    time.sleep(0.2)
                    continue
                if err.txn_requires_abort():
                    print(f"aborting: {err}", flush=True)
                    producer.abort_transaction(60)
                    rewind(consumer)
                    break
                print(f"fatal: {err}", flush=True)
                return 3


def rewind(consumer) -> None:
    """Back to the group's committed offsets: what the aborted transaction consumed is read again."""
    assignment = consumer.assignment()
    for tp in consumer.committed(assignment, timeout=30):
        consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))


def done_so_far(consumer, group: str, source: str) -> int:
    """Records the group has committed across the source topic's partitions."""
    meta = consumer.list_topics(source, timeout=10).topics[source]
    tps = [TopicPartition(source, p) for p in meta.partitions]
    return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=30))


if __name__ == "__main__":
    sys.exit(main())
