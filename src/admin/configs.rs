//! `weir configs describe|alter` (and `weir topics alter`): a topic's configs, a broker's
//! settings or the cluster-wide broker defaults, read with DescribeConfigs and changed with
//! IncrementalAlterConfigs, as `kafka-configs.sh` does. A broker's own settings are asked
//! of that broker (found through the bootstrap broker's Metadata), as Kafka requires.

use std::fmt::Write as _;
use std::time::Duration;

use kafka_protocol::messages::{describe_configs_request, incremental_alter_configs_request};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde::Serialize;

use crate::client::{metadata_request, ClientError, Connection};

const TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_ID: &str = "weir-cli";

/// What the configs belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Topic(String),
    Broker(i32),
    /// The dynamic defaults of every broker.
    BrokerDefaults,
}

impl Target {
    fn wire(&self) -> (i8, String) {
        match self {
            Target::Topic(t) => (2, t.clone()),
            Target::Broker(id) => (4, id.to_string()),
            Target::BrokerDefaults => (4, String::new()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigLine {
    pub name: String,
    pub value: Option<String>,
    pub source: &'static str,
    pub read_only: bool,
    /// Every level that sets it, the one in force first: (source, name, value).
    pub synonyms: Vec<(&'static str, String, Option<String>)>,
}

/// One alteration (`kafka-configs.sh --add-config` is SET, `--delete-config` DELETE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alteration {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigsError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{}{}", .0.as_ref().map(|e| format!("{e:?}")).unwrap_or_default(), .1.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Refused(Option<ResponseError>, Option<String>),
    #[error("broker {0} is not in the cluster's metadata")]
    NoSuchBroker(i32),
}

fn source_name(code: i8) -> &'static str {
    match code {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        _ => "UNKNOWN",
    }
}

/// A connection to the broker that must answer for `target`.
async fn connect_for(bootstrap: &str, target: &Target) -> Result<Connection, ConfigsError> {
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let Target::Broker(id) = target else { return Ok(conn) };
    let version = conn.version(ApiKey::Metadata)?;
    let metadata = conn.call_version(&metadata_request(Some(&[]), version), version, TIMEOUT).await?;
    let broker = metadata.brokers.iter().find(|b| b.node_id.0 == *id).ok_or(ConfigsError::NoSuchBroker(*id))?;
    let addr = format!("{}:{}", broker.host.as_str(), broker.port);
    if addr == bootstrap {
        return Ok(conn);
    }
    Ok(Connection::connect(&addr, CLIENT_ID, TIMEOUT).await?)
}

/// The configs of `target` (every one the broker knows).
pub async fn describe(bootstrap: &str, target: &Target) -> Result<Vec<ConfigLine>, ConfigsError> {
    let mut conn = connect_for(bootstrap, target).await?;
    let (resource_type, name) = target.wire();
    let mut resource = describe_configs_request::DescribeConfigsResource::default();
    resource.resource_type = resource_type;
    resource.resource_name = StrBytes::from_string(name);
    resource.configuration_keys = None;
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    request.include_synonyms = true;
    let response = conn.call(&request, TIMEOUT).await?;
    let Some(result) = response.results.into_iter().next() else {
        return Err(ConfigsError::Refused(None, Some("the broker answered no resource".into())));
    };
    if let Some(e) = ResponseError::try_from_code(result.error_code) {
        return Err(ConfigsError::Refused(Some(e), result.error_message.map(|m| m.to_string())));
    }
    Ok(result
        .configs
        .into_iter()
        .map(|c| ConfigLine {
            name: c.name.to_string(),
            value: c.value.map(|v| v.to_string()),
            source: source_name(c.config_source),
            read_only: c.read_only,
            synonyms: c
                .synonyms
                .into_iter()
                .map(|s| (source_name(s.source), s.name.to_string(), s.value.map(|v| v.to_string())))
                .collect(),
        })
        .collect())
}

/// Applies `alterations` to `target` (or only checks them, `validate_only`).
pub async fn alter(
    bootstrap: &str,
    target: &Target,
    alterations: &[Alteration],
    validate_only: bool,
) -> Result<(), ConfigsError> {
    let mut conn = connect_for(bootstrap, target).await?;
    let (resource_type, name) = target.wire();
    let mut resource = incremental_alter_configs_request::AlterConfigsResource::default();
    resource.resource_type = resource_type;
    resource.resource_name = StrBytes::from_string(name);
    resource.configs = alterations
        .iter()
        .map(|a| {
            let (name, op, value) = match a {
                Alteration::Set(k, v) => (k, 0, Some(v)),
                Alteration::Delete(k) => (k, 1, None),
                Alteration::Append(k, v) => (k, 2, Some(v)),
                Alteration::Subtract(k, v) => (k, 3, Some(v)),
            };
            let mut entry = incremental_alter_configs_request::AlterableConfig::default();
            entry.name = StrBytes::from_string(name.clone());
            entry.config_operation = op;
            entry.value = value.map(|v| StrBytes::from_string(v.clone()));
            entry
        })
        .collect();
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    request.validate_only = validate_only;
    let response = conn.call(&request, TIMEOUT).await?;
    match response.responses.first() {
        Some(r) => match ResponseError::try_from_code(r.error_code) {
            None => Ok(()),
            Some(e) => Err(ConfigsError::Refused(Some(e), r.error_message.as_ref().map(|m| m.to_string()))),
        },
        None => Err(ConfigsError::Refused(None, Some("the broker answered no resource".into()))),
    }
}

/// A table of `lines`: only those set somewhere other than the defaults unless `all`.
pub fn format_table(lines: &[ConfigLine], all: bool) -> String {
    let shown: Vec<&ConfigLine> = lines.iter().filter(|l| all || l.source != "DEFAULT_CONFIG").collect();
    let mut out = String::new();
    if shown.is_empty() {
        out.push_str("No configs set; --all shows the defaults too.\n");
        return out;
    }
    let width = shown.iter().map(|l| l.name.len()).max().unwrap_or(4).max(4);
    let value_width = shown.iter().map(|l| l.value.as_deref().unwrap_or("-").len()).max().unwrap_or(5).clamp(5, 40);
    let _ = writeln!(out, "{:<width$}  {:<value_width$}  {:<30}  READ-ONLY", "NAME", "VALUE", "SOURCE");
    for l in shown {
        let value = l.value.as_deref().unwrap_or("-");
        let _ = writeln!(out, "{:<width$}  {value:<value_width$}  {:<30}  {}", l.name, l.source, l.read_only);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_what_is_set_unless_all() {
        let line = |name: &str, source| ConfigLine {
            name: name.into(),
            value: Some("1".into()),
            source,
            read_only: false,
            synonyms: Vec::new(),
        };
        let lines = [line("retention.ms", "DYNAMIC_TOPIC_CONFIG"), line("segment.bytes", "DEFAULT_CONFIG")];
        let table = format_table(&lines, false);
        assert!(table.contains("retention.ms") && !table.contains("segment.bytes"), "{table}");
        assert!(format_table(&lines, true).contains("segment.bytes"));
        assert!(format_table(&lines[1..], false).contains("--all"));
    }
}
