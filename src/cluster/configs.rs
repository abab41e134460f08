//! Configs as DescribeConfigs reports them and AlterConfigs changes them, sans-IO: values
//! resolved through Kafka's levels (a topic's own config, then its broker synonyms — this
//! broker's dynamic config, the cluster-wide dynamic default, the static setting — then
//! the default), and alterations checked with Kafka's rules into the metadata records that
//! make them.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::records::{ConfigResource, MetadataRecord};
use super::MetadataImage;
use crate::config::{
    broker_config, topic_config, BrokerConfigDef, Config, ConfigType, Update, BROKER_CONFIGS, TOPIC_CONFIGS,
};

/// Where a value comes from (Kafka's `ConfigSource` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

/// One level a value is set at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: Option<String>,
    pub source: Source,
}

/// One config of a resource, as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub name: &'static str,
    pub value: Option<String>,
    pub source: Source,
    pub read_only: bool,
    pub ty: ConfigType,
    pub doc: &'static str,
    /// Every level that sets it, the one in force first.
    pub synonyms: Vec<Synonym>,
}

/// What one alteration does to one config (IncrementalAlterConfigs' operations; the
/// legacy AlterConfigs is a `Set` of every config given, all others deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

impl ConfigOp {
    /// From IncrementalAlterConfigs' operation code and value.
    pub fn from_wire(code: i8, value: Option<&str>) -> Option<ConfigOp> {
        let value = value.map(str::to_string);
        match code {
            0 => value.map(ConfigOp::Set),
            1 => Some(ConfigOp::Delete),
            2 => value.map(ConfigOp::Append),
            3 => value.map(ConfigOp::Subtract),
            _ => None,
        }
    }
}

/// An alteration of one resource's configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub resource: ConfigResource,
    pub ops: Vec<(String, ConfigOp)>,
    /// AlterConfigs (not incremental): configs not named are removed.
    pub replace: bool,
}

/// A refusal, with Kafka's error and message.
pub type Refusal = (ResponseError, String);

/// The levels at which broker setting `name` is set for broker `node`, most specific
/// first: `None` is the cluster-wide default resource, which has no per-broker or static
/// level of its own.
fn broker_levels(image: &MetadataImage, config: &Config, node: Option<i32>, name: &str) -> Vec<Synonym> {
    let mut levels = Vec::new();
    let mut push = |value: Option<&String>, source| {
        if let Some(v) = value {
            levels.push(Synonym { name: name.to_string(), value: Some(v.clone()), source });
        }
    };
    if let Some(id) = node {
        push(image.broker_configs.get(&Some(id)).and_then(|c| c.get(name)), Source::DynamicBroker);
    }
    push(image.broker_configs.get(&None).and_then(|c| c.get(name)), Source::DynamicDefaultBroker);
    if node.is_some() {
        push(config.static_settings.get(name), Source::StaticBroker);
    }
    levels
}

/// A broker synonym's value in the unit of the topic config it stands for.
fn in_topic_unit(synonym: &str, value: &str) -> String {
    let scale = match synonym {
        "log.retention.minutes" => 60_000,
        "log.retention.hours" | "log.roll.hours" => 3_600_000,
        _ => return value.to_string(),
    };
    match value.trim().parse::<i64>() {
        Ok(n) if n < 0 => "-1".to_string(),
        Ok(n) => n.saturating_mul(scale).to_string(),
        Err(_) => value.to_string(),
    }
}

fn wanted(keys: Option<&[String]>, name: &str) -> bool {
    keys.is_none_or(|k| k.iter().any(|n| n == name))
}

/// Broker `node`'s settings (`None`: the cluster-wide defaults), or those named in `keys`.
/// `config` is this broker's static config: a broker describes only itself.
pub fn describe_broker(
    image: &MetadataImage,
    config: &Config,
    node: Option<i32>,
    keys: Option<&[String]>,
) -> Vec<Described> {
    BROKER_CONFIGS
        .iter()
        .filter(|d| wanted(keys, d.name))
        .map(|d| {
            let mut synonyms = broker_levels(image, config, node, d.name);
            if node.is_some() || synonyms.is_empty() {
                synonyms.push(Synonym {
                    name: d.name.to_string(),
                    value: d.default.map(str::to_string),
                    source: Source::Default,
                });
            }
            let first = synonyms[0].clone();
            Described {
                name: d.name,
                value: first.value,
                source: first.source,
                read_only: d.update == Update::ReadOnly,
                ty: d.ty,
                doc: d.doc,
                synonyms,
            }
        })
        .collect()
}

/// A topic's configs (or those named in `keys`) as broker `node` applies them.
pub fn describe_topic(
    image: &MetadataImage,
    config: &Config,
    node: i32,
    topic_configs: &BTreeMap<String, String>,
    keys: Option<&[String]>,
) -> Vec<Described> {
    TOPIC_CONFIGS
        .iter()
        .filter(|d| wanted(keys, d.name))
        .map(|d| {
            let mut synonyms = Vec::new();
            if let Some(v) = topic_configs.get(d.name) {
                synonyms.push(Synonym {
                    name: d.name.to_string(),
                    value: Some(v.clone()),
                    source: Source::DynamicTopic,
                });
            }
            for s in d.synonyms {
                synonyms.extend(broker_levels(image, config, Some(node), s));
            }
            let default_name =
                d.synonyms.iter().copied().find(|s| broker_config(s).is_some_and(|b| b.default.is_some()));
            let default = match default_name.and_then(broker_config) {
                Some(b) => {
                    Synonym { name: b.name.to_string(), value: b.default.map(str::to_string), source: Source::Default }
                }
                None => {
                    Synonym { name: d.name.to_string(), value: Some(d.default.to_string()), source: Source::Default }
                }
            };
            let (value, source) = match synonyms.first() {
                Some(s) if s.source == Source::DynamicTopic => (s.value.clone(), s.source),
                Some(s) => (s.value.as_deref().map(|v| in_topic_unit(&s.name, v)), s.source),
                None => (Some(d.default.to_string()), Source::Default),
            };
            synonyms.push(default);
            Described { name: d.name, value, source, read_only: false, ty: d.ty, doc: d.doc, synonyms }
        })
        .collect()
}

/// `current` after `ops`: each name once, `Delete` of an unset config is no change,
/// `Append`/`Subtract` only on lists (starting from `default` when unset).
fn altered(
    current: &BTreeMap<String, String>,
    change: &ConfigChange,
    ty_of: impl Fn(&str) -> Option<(ConfigType, Option<&'static str>)>,
    unknown: impl Fn(&str) -> Refusal,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut names: Vec<&str> = change.ops.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err((ResponseError::InvalidRequest, format!("Error due to duplicate config keys: {}", w[0])));
    }
    let mut next = if change.replace { BTreeMap::new() } else { current.clone() };
    for (name, op) in &change.ops {
        let Some((ty, default)) = ty_of(name) else { return Err(unknown(name)) };
        let list = |v: Option<&String>| -> Vec<String> {
            v.map(String::as_str)
                .or(default)
                .map(|s| s.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_string).collect())
                .unwrap_or_default()
        };
        match op {
            ConfigOp::Set(v) => {
                next.insert(name.clone(), v.clone());
            }
            ConfigOp::Delete => {
                next.remove(name);
            }
            ConfigOp::Append(_) | ConfigOp::Subtract(_) if ty != ConfigType::List => {
                let verb = if matches!(op, ConfigOp::Append(_)) { "append" } else { "subtract" };
                return Err((
                    ResponseError::InvalidConfig,
                    format!("Config value {verb} is not allowed for config key: {name}"),
                ));
            }
            ConfigOp::Append(v) => {
                let mut items = list(next.get(name));
                for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                }
                next.insert(name.clone(), items.join(","));
            }
            ConfigOp::Subtract(v) => {
                let gone: Vec<&str> = v.split(',').map(str::trim).collect();
                let items: Vec<String> =
                    list(next.get(name)).into_iter().filter(|i| !gone.contains(&i.as_str())).collect();
                next.insert(name.clone(), items.join(","));
            }
        }
    }
    Ok(next)
}

/// Checks `change` against the image and returns the records that make it (none when it
/// changes nothing). `config` is the controller's static config, over which broker
/// configs are validated.
pub fn alter(image: &MetadataImage, config: &Config, change: &ConfigChange) -> Result<Vec<MetadataRecord>, Refusal> {
    let empty = BTreeMap::new();
    let (current, next) = match &change.resource {
        ConfigResource::Topic(name) => {
            let Some(meta) = image.topic(name) else {
                return Err((ResponseError::UnknownTopicOrPartition, format!("Topic {name} does not exist")));
            };
            let ty_of = |n: &str| topic_config(n).map(|d| (d.ty, Some(d.default)));
            let unknown = |n: &str| (ResponseError::InvalidConfig, format!("Unknown topic config name: {n}"));
            let next = altered(&meta.configs, change, ty_of, unknown)?;
            for (k, v) in &next {
                if meta.configs.get(k) != Some(v) {
                    let def = topic_config(k).ok_or_else(|| unknown(k))?;
                    def.check(v).map_err(|m| (ResponseError::InvalidConfig, m))?;
                }
            }
            (&meta.configs, next)
        }
        ConfigResource::Broker(id) => {
            let current = image.broker_configs.get(id).unwrap_or(&empty);
            let resource = match id {
                Some(id) => format!("ConfigResource(type=BROKER, name='{id}')"),
                None => "ConfigResource(type=BROKER, name='')".to_string(),
            };
            let ty_of = |n: &str| broker_config(n).map(|d| (d.ty, d.default));
            let unknown = |n: &str| {
                (
                    ResponseError::InvalidConfig,
                    format!("Invalid config value for resource {resource}: Unknown broker config: {n}"),
                )
            };
            let next = altered(current, change, ty_of, unknown)?;
            let fixed: Vec<&str> = next
                .iter()
                .filter(|(k, v)| current.get(*k) != Some(*v))
                .map(|(k, _)| k.as_str())
                .chain(current.keys().filter(|k| !next.contains_key(*k)).map(String::as_str))
                .filter(|k| broker_config(k).is_some_and(|d: &BrokerConfigDef| d.update == Update::ReadOnly))
                .collect();
            if !fixed.is_empty() {
                return Err((
                    ResponseError::InvalidRequest,
                    format!(
                        "Invalid config value for resource {resource}: Cannot update these configs dynamically: {}",
                        fixed.join(", ")
                    ),
                ));
            }
            // The broker's whole dynamic config must make a valid config over the static one.
            let mut layered: Vec<(&str, &str)> = Vec::new();
            let cluster = if id.is_some() { image.broker_configs.get(&None) } else { None };
            layered.extend(cluster.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())));
            layered.extend(next.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            config.with_dynamic(layered).map_err(|e| {
                (ResponseError::InvalidConfig, format!("Invalid config value for resource {resource}: {e}"))
            })?;
            (current, next)
        }
    };
    let resource = &change.resource;
    let mut records = Vec::new();
    for (name, value) in &next {
        if current.get(name) != Some(value) {
            records.push(MetadataRecord::Config {
                resource: resource.clone(),
                name: name.clone(),
                value: Some(value.clone()),
            });
        }
    }
    for name in current.keys().filter(|k| !next.contains_key(*k)) {
        records.push(MetadataRecord::Config { resource: resource.clone(), name: name.clone(), value: None });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::MetadataRecord;

    fn image_with_topic() -> MetadataImage {
        let mut image = MetadataImage::new(1);
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 1,
            configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
            replicas: vec![vec![0]],
        });
        image
    }

    fn change(resource: ConfigResource, ops: &[(&str, ConfigOp)]) -> ConfigChange {
        ConfigChange { resource, ops: ops.iter().map(|(n, o)| (n.to_string(), o.clone())).collect(), replace: false }
    }

    fn value<'a>(described: &'a [Described], name: &str) -> &'a Described {
        described.iter().find(|d| d.name == name).expect("described")
    }

    #[test]
    fn a_topic_value_comes_from_the_most_specific_level() {
        let config = Config::from_settings([("log.retention.hours", "2")]).expect("valid");
        let mut image = image_with_topic();
        let topic = |image: &MetadataImage| image.topic("t").expect("topic").configs.clone();
        let d = describe_topic(&image, &config, 0, &topic(&image), None);
        let retention = value(&d, "retention.ms");
        assert_eq!((retention.value.as_deref(), retention.source), (Some("7200000"), Source::StaticBroker));
        assert_eq!(
            retention.synonyms.last().map(|s| (s.name.as_str(), s.value.as_deref())),
            Some(("log.retention.hours", Some("168")))
        );
        assert_eq!(value(&d, "cleanup.policy").source, Source::DynamicTopic);
        assert_eq!(value(&d, "segment.bytes").source, Source::Default);

        image.apply(&MetadataRecord::Config {
            resource: ConfigResource::Broker(None),
            name: "log.retention.ms".into(),
            value: Some("5000".into()),
        });
        let d = describe_topic(&image, &config, 0, &topic(&image), Some(&["retention.ms".to_string()]));
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].value.as_deref(), d[0].source), (Some("5000"), Source::DynamicDefaultBroker));
        image.apply(&MetadataRecord::Config {
            resource: ConfigResource::Broker(Some(0)),
            name: "log.retention.minutes".into(),
            value: Some("1".into()),
        });
        let d = describe_topic(&image, &config, 0, &topic(&image), Some(&["retention.ms".to_string()]));
        // log.retention.ms (cluster default) still wins over log.retention.minutes, as in Kafka.
        assert_eq!(d[0].value.as_deref(), Some("5000"));
        let sources: Vec<Source> = d[0].synonyms.iter().map(|s| s.source).collect();
        assert_eq!(
            sources,
            [Source::DynamicDefaultBroker, Source::DynamicBroker, Source::StaticBroker, Source::Default]
        );
    }

    #[test]
    fn broker_configs_report_their_source_and_whether_they_may_change() {
        let config = Config::from_settings([("num.partitions", "3")]).expect("valid");
        let mut image = MetadataImage::new(1);
        image.apply(&MetadataRecord::Config {
            resource: ConfigResource::Broker(Some(0)),
            name: "message.max.bytes".into(),
            value: Some("2000000".into()),
        });
        let d = describe_broker(&image, &config, Some(0), None);
        let partitions = value(&d, "num.partitions");
        assert_eq!(
            (partitions.value.as_deref(), partitions.source, partitions.read_only),
            (Some("3"), Source::StaticBroker, true)
        );
        let max = value(&d, "message.max.bytes");
        assert_eq!((max.value.as_deref(), max.source, max.read_only), (Some("2000000"), Source::DynamicBroker, false));
        assert_eq!(value(&d, "log.retention.ms").value, None, "unset, falls back to log.retention.hours");
        let defaults = describe_broker(&image, &config, None, None);
        assert_eq!(value(&defaults, "message.max.bytes").source, Source::Default);
    }

    #[test]
    fn alterations_are_checked_as_kafka_checks_them() {
        let config = Config::default();
        let image = image_with_topic();
        let topic = ConfigResource::Topic("t".into());
        let refused = |c: ConfigChange| alter(&image, &config, &c).expect_err("refused");
        assert_eq!(
            refused(change(topic.clone(), &[("retention.ms", ConfigOp::Set("x".into()))])).0,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            refused(change(topic.clone(), &[("no.such", ConfigOp::Set("1".into()))])).0,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            refused(change(topic.clone(), &[("retention.ms", ConfigOp::Append("1".into()))])).0,
            ResponseError::InvalidConfig
        );
        let twice =
            change(topic.clone(), &[("retention.ms", ConfigOp::Set("1".into())), ("retention.ms", ConfigOp::Delete)]);
        assert_eq!(refused(twice).0, ResponseError::InvalidRequest);
        assert_eq!(
            refused(change(ConfigResource::Topic("nope".into()), &[])).0,
            ResponseError::UnknownTopicOrPartition
        );
        let broker = ConfigResource::Broker(Some(0));
        let fixed = refused(change(broker.clone(), &[("num.partitions", ConfigOp::Set("3".into()))]));
        assert_eq!(fixed.0, ResponseError::InvalidRequest);
        assert!(fixed.1.contains("Cannot update these configs dynamically: num.partitions"), "{}", fixed.1);
        assert_eq!(
            refused(change(broker.clone(), &[("message.max.bytes", ConfigOp::Set("ten".into()))])).0,
            ResponseError::InvalidConfig
        );

        let records = alter(
            &image,
            &config,
            &change(
                topic.clone(),
                &[
                    ("cleanup.policy", ConfigOp::Append("delete".into())),
                    ("retention.ms", ConfigOp::Set("60000".into())),
                ],
            ),
        )
        .expect("valid");
        assert_eq!(
            records,
            [
                MetadataRecord::Config {
                    resource: topic.clone(),
                    name: "cleanup.policy".into(),
                    value: Some("compact,delete".into())
                },
                MetadataRecord::Config {
                    resource: topic.clone(),
                    name: "retention.ms".into(),
                    value: Some("60000".into())
                },
            ]
        );
        let emptied = change(topic.clone(), &[("cleanup.policy", ConfigOp::Subtract("compact".into()))]);
        assert_eq!(refused(emptied).0, ResponseError::InvalidConfig, "cleanup.policy needs a policy");
        let replace = ConfigChange {
            resource: topic.clone(),
            ops: vec![("retention.ms".into(), ConfigOp::Set("1".into()))],
            replace: true,
        };
        let records = alter(&image, &config, &replace).expect("valid");
        assert!(records.contains(&MetadataRecord::Config {
            resource: topic.clone(),
            name: "cleanup.policy".into(),
            value: None
        }));
        assert_eq!(alter(&image, &config, &change(topic, &[("retention.bytes", ConfigOp::Delete)])), Ok(Vec::new()));
    }
}
