// kafkajs through a leader failover: an idempotent acks=all producer sends COUNT messages
// one at a time, printing "sent I" after each acknowledgement (the test kills the leader
// meanwhile), then prints the acknowledged offsets as one JSON line.
// Usage: node failover.js TOPIC BOOTSTRAP COUNT
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [topic, bootstrap, count] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: "weir-failover",
    brokers: bootstrap.split(","),
    logLevel: logLevel.NOTHING,
    retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 5000 },
  });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const acked = [];
  for (let i = 0; i < Number(count); i++) {
    const [r] = await producer.send({ topic, acks: -1, messages: [{ key: "js", value: `js|${i}` }] });
    acked.push([r.partition, Number(r.baseOffset), i]);
    console.log(`sent ${i}`);
  }
  await producer.disconnect();
  console.log(JSON.stringify({ acked }));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
