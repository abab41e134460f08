// kafkajs admin against one broker: create a topic (segment.bytes small, retention.bytes
// set), grow it with createPartitions (shrinking refused), produce, deleteTopicRecords
// (the earliest offset moves), and wait for retention by size to move it further.
// Prints one JSON line with what it saw.
// Usage: node admin.js BOOTSTRAP
const { Kafka, logLevel } = require("kafkajs");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const [bootstrap] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "weir-admin", brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const out = {};
  await admin.createTopics({
    waitForLeaders: true,
    topics: [{ topic: "js-admin", numPartitions: 1, configEntries: [{ name: "segment.bytes", value: "16384" }] }],
  });
  await admin.createPartitions({ topicPartitions: [{ topic: "js-admin", count: 3 }] });
  out.partitions = (await admin.fetchTopicMetadata({ topics: ["js-admin"] })).topics[0].partitions.length;
  try {
    await admin.createPartitions({ topicPartitions: [{ topic: "js-admin", count: 2 }] });
    out.shrink = "accepted";
  } catch (e) {
    out.shrink = e.type || e.name;
  }
  const producer = kafka.producer();
  await producer.connect();
  for (let i = 0; i < 60; i++) {
    await producer.send({
      topic: "js-admin",
      acks: -1,
      messages: [{ partition: 0, key: `k${i}`, value: "x".repeat(1000) }],
    });
  }
  await producer.disconnect();
  await admin.deleteTopicRecords({ topic: "js-admin", partitions: [{ partition: 0, offset: "20" }] });
  const offsets = async () => (await admin.fetchTopicOffsets("js-admin")).find((p) => p.partition === 0);
  const after = await offsets();
  out.afterDelete = [Number(after.low), Number(after.high)];
  try {
    await admin.deleteTopicRecords({ topic: "js-admin", partitions: [{ partition: 0, offset: "1000" }] });
    out.pastEnd = "accepted";
  } catch (e) {
    out.pastEnd = e.type || e.name;
  }
  // Retention by size (the broker checks every 500 ms here): down to about 20 KB.
  await admin.createTopics({
    topics: [
      {
        topic: "js-retained",
        numPartitions: 1,
        configEntries: [
          { name: "segment.bytes", value: "16384" },
          { name: "retention.bytes", value: "20000" },
        ],
      },
    ],
  });
  const p2 = kafka.producer();
  await p2.connect();
  for (let i = 0; i < 100; i++) {
    await p2.send({ topic: "js-retained", acks: -1, messages: [{ key: `k${i}`, value: "x".repeat(1000) }] });
  }
  await p2.disconnect();
  let low = 0;
  for (let i = 0; i < 40 && low === 0; i++) {
    await sleep(250);
    low = Number((await admin.fetchTopicOffsets("js-retained"))[0].low);
  }
  out.retainedLow = low;
  await admin.disconnect();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
