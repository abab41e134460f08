//! Kafka error codes by their protocol names (UNKNOWN_TOPIC_OR_PARTITION, ...), and which
//! ones end a run.

use kafka_protocol::error::ResponseError;

/// The protocol's name for an error code, e.g. `NOT_LEADER_OR_FOLLOWER`; `UNKNOWN_CODE_<n>`
/// for codes this client does not know.
pub fn kafka_error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_CODE_{c}"),
        Some(e) => upper_snake(&format!("{e:?}")),
    }
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// True for produce/fetch partition errors that retrying cannot fix (Kafka's non-retriable
/// errors, e.g. MESSAGE_TOO_LARGE, TOPIC_AUTHORIZATION_FAILED, CORRUPT_MESSAGE from a
/// broker that rejects our batches, UNKNOWN_TOPIC_OR_PARTITION for a topic deleted under
/// us): they end the run.
pub fn is_fatal(code: i16) -> bool {
    match ResponseError::try_from_code(code) {
        None => false,
        // Retriable in the protocol, but we just created or found these topics and the
        // batches are ours: these will not go away.
        Some(ResponseError::UnknownTopicOrPartition) | Some(ResponseError::CorruptMessage) => true,
        Some(e) => !e.is_retriable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_fatality() {
        assert_eq!(kafka_error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(kafka_error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(kafka_error_name(10), "MESSAGE_TOO_LARGE");
        assert_eq!(kafka_error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(kafka_error_name(9999), "UNKNOWN_CODE_9999");
        assert!(is_fatal(3) && is_fatal(10) && is_fatal(2));
        assert!(!is_fatal(6) && !is_fatal(7) && !is_fatal(0));
    }
}
