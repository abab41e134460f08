// kafkajs against a weir cluster: create a topic through one node, produce through
// another, consume it with a consumer group through a third, and print what happened as
// one JSON line. Usage: node cluster.js TOPIC PARTITIONS ADMIN_BOOTSTRAP PRODUCER_BOOTSTRAP
// CONSUMER_BOOTSTRAP COUNT
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [topic, partitions, adminAt, producerAt, consumerAt, count] = process.argv.slice(2);
  const n = Number(count);
  const kafka = (broker) => new Kafka({ clientId: "weir-compat", brokers: [broker], logLevel: logLevel.NOTHING });

  const admin = kafka(adminAt).admin();
  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: Number(partitions) }], waitForLeaders: true });
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  const leaders = meta.topics[0].partitions.map((p) => [p.partitionId, p.leader]);
  await admin.disconnect();

  const producer = kafka(producerAt).producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: `v${i}` }));
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const consumer = kafka(consumerAt).consumer({ groupId: `g-${topic}`, rebalanceTimeout: 10000, sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${seen.size} of ${n}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.add(message.value.toString());
        if (seen.size >= n) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  console.log(JSON.stringify({ created, leaders, consumed: seen.size }));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
