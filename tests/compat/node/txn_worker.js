// The consume-transform-produce worker of txn_worker.py, written with kafkajs: a
// read_committed consumer in a group, a transactional producer, and each fetched batch's
// output and consumed offsets committed in one transaction (sendOffsets).
// Usage: node txn_worker.js BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP TRANSACTIONAL_ID TOTAL
// Same contract as txn_worker.py: prints "committed N" per transaction, exits 0 once the
// group's committed offsets cover TOTAL records, 3 when fenced.
const { Kafka, logLevel } = require("kafkajs");

const FENCED = new Set(["PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"]);

async function main() {
  const [bootstrap, source, sink, group, transactionalId, total] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "weir-eos", brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 10000 });
  const consumer = kafka.consumer({ groupId: group, readUncommitted: false, sessionTimeout: 10000 });
  const admin = kafka.admin();
  await Promise.all([producer.connect(), consumer.connect(), admin.connect()]);
  await consumer.subscribe({ topic: source, fromBeginning: true });
  const done = setInterval(async () => {
    try {
      const offsets = await admin.fetchOffsets({ groupId: group, topics: [source] });
      const committed = offsets[0].partitions.reduce((sum, p) => sum + Math.max(Number(p.offset), 0), 0);
      if (committed >= Number(total)) {
        clearInterval(done);
        console.log(`done ${committed}`);
        process.exit(0);
      }
    } catch (e) {
      // The broker may be restarting: ask again next time.
    }
  }, 1000);
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch, resolveOffset }) => {
      if (batch.messages.length === 0) return;
      const txn = await producer.transaction();
      try {
        await txn.send({
          topic: sink,
          messages: batch.messages.map((m) => ({ partition: batch.partition, value: "T:" + m.value.toString() })),
        });
        const next = (BigInt(batch.lastOffset()) + 1n).toString();
        await txn.sendOffsets({
          consumerGroupId: group,
          topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }],
        });
        await txn.commit();
      } catch (e) {
        if (FENCED.has(e.type)) {
          console.log(`fatal: ${e.message}`);
          process.exit(3);
        }
        console.log(`aborting: ${e.message}`);
        try {
          await txn.abort();
        } catch (abortError) {
          console.log(`fatal: cannot abort: ${abortError.message}`);
          process.exit(3);
        }
        // kafkajs fetches the batch again from the last resolved offset.
        throw e;
      }
      for (const m of batch.messages) resolveOffset(m.offset);
      console.log(`committed ${batch.messages.length}`);
    },
  });
}

main().catch((e) => {
  console.log(`fatal: ${e.message}`);
  process.exit(1);
});
