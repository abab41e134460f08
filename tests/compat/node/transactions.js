// kafkajs transactions against one broker: a transactional producer sends to js-out,
// commits the consumed offsets of js-in for group js-group in the transaction
// (sendOffsets), commits; then a transaction that aborts. A read_committed consumer
// (kafkajs' default) reads js-out. Prints one JSON line with what it saw.
// Usage: node transactions.js BOOTSTRAP
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "weir-txn", brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const out = {};
  const producer = kafka.producer({ transactionalId: "js-1", maxInFlightRequests: 1, idempotent: true });
  await producer.connect();
  const txn = await producer.transaction();
  await txn.send({ topic: "js-out", messages: ["js-0", "js-1", "js-2"].map((value, i) => ({ partition: i % 2, value })) });
  await txn.sendOffsets({ consumerGroupId: "js-group", topics: [{ topic: "js-in", partitions: [{ partition: 0, offset: "5" }] }] });
  await txn.commit();
  const aborted = await producer.transaction();
  await aborted.send({ topic: "js-out", messages: [{ partition: 0, value: "js-aborted" }] });
  await aborted.abort();
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: "js-reader", readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic: "js-out", fromBeginning: true });
  const values = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, 8000);
    consumer
      .run({
        eachMessage: async ({ message }) => {
          values.push(message.value.toString());
          if (values.length >= 3) setTimeout(() => { clearTimeout(timer); resolve(); }, 1000);
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  out.committedValues = values.sort();
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchOffsets({ groupId: "js-group", topics: ["js-in"] });
  out.groupOffset = offsets[0].partitions.find((p) => p.partition === 0).offset;
  await admin.disconnect();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
