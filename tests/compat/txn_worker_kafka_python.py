"""The consume-transform-produce worker of txn_worker.py, written with kafka-python: a
read_committed consumer in a group, a transactional producer, and each poll's output and
consumed offsets committed in one transaction.

Usage: python txn_worker_kafka_python.py BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP TRANSACTIONAL_ID TOTAL

Same contract as txn_worker.py: prints "committed N" per transaction, exits 0 once the
group's committed offsets cover TOTAL records, 3 when fenced.
"""

from __future__ import annotations

import sys
import time

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError, ProducerFencedError


def main() -> int:
    bootstrap, source, sink, group, txn_id, total = sys.argv[1:7]
    total = int(total)
    consumer = KafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=10000,
        # kafka-python refuses response frames above receive_message_max_bytes (1,000,000)
        # while it asks for up to 50 MB by default: ask for less.
        fetch_max_bytes=900_000,
        max_partition_fetch_bytes=200_000,
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=txn_id,
        transaction_timeout_ms=10000,
        linger_ms=5,
    )
    producer.init_transactions()
    while True:
        polled = consumer.poll(timeout_ms=1000, max_records=500)
        msgs = [m for records in polled.values() for m in records]
        if not msgs:
            if done_so_far(consumer, source) >= total:
                print(f"done {total}", flush=True)
                return 0
            continue
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.send(sink, value=b"T:" + m.value, partition=m.partition)
            offsets = {tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in consumer.assignment()}
            producer.send_offsets_to_transaction(offsets, group)
            producer.commit_transaction()
            print(f"committed {len(msgs)}", flush=True)
        except ProducerFencedError as e:
            print(f"fatal: {e}", flush=True)
            return 3
        except KafkaError as e:
            print(f"aborting: {e!r}", flush=True)
            try:
                producer.abort_transaction()
            except KafkaError as abort_error:
                # The producer cannot go on (a fatal state): a supervisor starts another.
                print(f"fatal: cannot abort: {abort_error!r}", flush=True)
                return 3
            rewind(consumer)
            time.sleep(0.2)


def rewind(consumer) -> None:
    """Back to the group's committed offsets: what the aborted transaction consumed is read again."""
    for tp in consumer.assignment():
        committed = consumer.committed(tp)
        consumer.seek(tp, committed if committed is not None and committed >= 0 else 0)


def done_so_far(consumer, source: str) -> int:
    """Records the group has committed across the source topic's partitions."""
    partitions = consumer.partitions_for_topic(source) or set()
    return sum(max(consumer.committed(TopicPartition(source, p)) or 0, 0) for p in partitions)


if __name__ == "__main__":
    sys.exit(main())
