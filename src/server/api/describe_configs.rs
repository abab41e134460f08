//! DescribeConfigs (key 32), v1-4: a topic's configs or a broker's settings, each with its
//! value, where the value comes from (the topic, this broker's or the cluster's dynamic
//! config, the static setting, the default), whether it is read-only, its synonyms (when
//! asked) and, from v3, its type and documentation (when asked). A broker describes only
//! itself (resource name: its id) and the cluster-wide defaults (resource name empty).

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::cluster::configs::{describe_broker, describe_topic, Described};
use crate::cluster::records::ConfigResource;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DescribeConfigsRequest) -> Reply {
    let image = shard.image();
    let me = shard.config.node_id;
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let keys: Option<Vec<String>> = resource.configuration_keys.map(|k| k.iter().map(|n| n.to_string()).collect());
        let described = match ConfigResource::from_wire(resource.resource_type, &resource.resource_name) {
            Some(ConfigResource::Topic(name)) => match image.topic(&name) {
                Some(meta) => Ok(describe_topic(&image, &shard.config, me, &meta.configs, keys.as_deref())),
                None => Err((ResponseError::UnknownTopicOrPartition, format!("Topic {name} does not exist"))),
            },
            Some(ConfigResource::Broker(None)) => Ok(describe_broker(&image, &shard.config, None, keys.as_deref())),
            Some(ConfigResource::Broker(Some(id))) if id == me => {
                Ok(describe_broker(&image, &shard.config, Some(me), keys.as_deref()))
            }
            _ if resource.resource_type == ConfigResource::BROKER => Err((
                ResponseError::InvalidRequest,
                format!(
                    "Unexpected broker id, expected {me} or empty string, but received {}",
                    resource.resource_name.as_str()
                ),
            )),
            _ => Err((ResponseError::InvalidRequest, format!("Unsupported resource type {}", resource.resource_type))),
        };
        match described {
            Ok(configs) => {
                result.configs = configs
                    .into_iter()
                    .map(|d| entry(d, request.include_synonyms, request.include_documentation && ctx.version >= 3))
                    .collect()
            }
            Err((error, message)) => {
                result.error_code = error.code();
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        response.results.push(result);
    }
    encode_frame(ApiKey::DescribeConfigs, ctx.version, ctx.correlation_id, &response)
}

fn entry(d: Described, synonyms: bool, documentation: bool) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = StrBytes::from_static_str(d.name);
    e.value = d.value.map(StrBytes::from_string);
    e.read_only = d.read_only;
    e.config_source = d.source as i8;
    e.is_sensitive = false;
    e.config_type = d.ty as i8;
    e.documentation = documentation.then(|| StrBytes::from_static_str(d.doc));
    if synonyms {
        e.synonyms = d
            .synonyms
            .into_iter()
            .map(|s| {
                let mut synonym = DescribeConfigsSynonym::default();
                synonym.name = StrBytes::from_string(s.name);
                synonym.value = s.value.map(StrBytes::from_string);
                synonym.source = s.source as i8;
                synonym
            })
            .collect();
    }
    e
}
