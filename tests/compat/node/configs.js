// kafkajs configs against one broker: describeConfigs of a topic (its retention.ms and
// where the value comes from) and of the broker, alterConfigs (Kafka's older AlterConfigs)
// of the topic, and a bad value refused. Prints one JSON line with what it saw.
// Usage: node configs.js BOOTSTRAP
const { Kafka, logLevel, ConfigResourceTypes } = require("kafkajs");

async function main() {
  const [bootstrap] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: "weir-configs", brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const out = {};
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic: "js-configs", numPartitions: 1 }] });
  const retention = async () => {
    const described = await admin.describeConfigs({
      includeSynonyms: true,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: "js-configs", configNames: ["retention.ms"] }],
    });
    const entry = described.resources[0].configEntries[0];
    return [entry.configValue, entry.configSource];
  };
  out.before = await retention();
  await admin.alterConfigs({
    validateOnly: false,
    resources: [
      { type: ConfigResourceTypes.TOPIC, name: "js-configs", configEntries: [{ name: "retention.ms", value: "60000" }] },
    ],
  });
  out.after = await retention();
  const broker = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: ConfigResourceTypes.BROKER, name: "0", configNames: ["num.partitions"] }],
  });
  const partitions = broker.resources[0].configEntries[0];
  out.broker = [partitions.configValue, partitions.readOnly];
  try {
    await admin.alterConfigs({
      resources: [
        { type: ConfigResourceTypes.TOPIC, name: "js-configs", configEntries: [{ name: "retention.ms", value: "x" }] },
      ],
    });
    out.badValue = "accepted";
  } catch (e) {
    out.badValue = e.type || e.name;
  }
  await admin.disconnect();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
