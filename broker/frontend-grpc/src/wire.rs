//! The one place where the service's errors become RocketMQ 5 status codes, and where the API's
//! messages become store messages and back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest as _, Md5};
use wasmq_service::{Guarantee, ServiceError};
use wasmq_store::{AppendError, MessageError, NewMessage, Properties, ReadError, StoredMessage};

use crate::pb::{self, Code, MessageType};

/// What every group's retry topic begins with (`wasmq_engine::retry_topic`).
const RETRY_TOPIC_PREFIX: &str = "%RETRY%";

/// A status with its code and a text for people.
#[must_use]
pub fn status(code: Code, message: impl Into<String>) -> pb::Status {
    pb::Status { code: code as i32, message: message.into() }
}

/// TOPIC_NOT_FOUND for `topic`, saying what to do.
#[must_use]
pub fn topic_not_found(topic: &str) -> pb::Status {
    status(Code::TopicNotFound, wasmq_service::unknown_topic(topic).to_string())
}

/// The OK status.
#[must_use]
pub fn ok() -> pb::Status {
    status(Code::Ok, "OK")
}

fn append_code(e: &AppendError) -> Code {
    match e {
        AppendError::Message { source: MessageError::MessageTooLarge { .. }, .. } => Code::MessageBodyTooLarge,
        AppendError::Message { source: MessageError::InvalidTopic { .. }, .. } => Code::IllegalTopic,
        AppendError::Message { .. } | AppendError::EmptyBatch => Code::BadRequest,
        AppendError::TooManyMessages { .. } | AppendError::BatchTooLarge { .. } => Code::PayloadTooLarge,
        AppendError::DiskFull { .. } | AppendError::Failed { .. } | AppendError::Io { .. } => Code::InternalServerError,
        AppendError::Closed => Code::InternalServerError,
    }
}

fn read_code(e: &ReadError) -> Code {
    match e {
        ReadError::Trimmed { .. } => Code::IllegalOffset,
        ReadError::Corrupt { .. } => Code::MessageCorrupted,
        ReadError::BeyondEnd { .. } | ReadError::NotARecord { .. } => Code::InternalError,
    }
}

/// The status of a service error; the text goes as it is.
#[must_use]
pub fn service_error(e: &ServiceError) -> pb::Status {
    let code = match e {
        ServiceError::UnknownTopic(_) => Code::TopicNotFound,
        ServiceError::InvalidQueue(_) | ServiceError::Invalid(_) => Code::BadRequest,
        ServiceError::InvalidTopic(_) => Code::IllegalTopic,
        // A slave takes no writes: the client should go to the master (the route says where).
        ServiceError::NotMaster(_) => Code::Forbidden,
        ServiceError::PluginRejected(_) => Code::BadRequest,
        ServiceError::PluginFailed(_) => Code::InternalServerError,
        ServiceError::Fenced(_) => Code::PreconditionFailed,
        ServiceError::InvalidReceipt(_) => Code::InvalidReceiptHandle,
        // As the reference proxy answers a message that does not fit its topic's type.
        ServiceError::WrongMessageType(_) => Code::MessagePropertyConflictWithType,
        ServiceError::NotFound(_) => Code::NotFound,
        ServiceError::FlushTimeout(_) => Code::MasterPersistenceTimeout,
        ServiceError::Append(a) => append_code(a),
        ServiceError::Read(r) => read_code(r),
        ServiceError::OffsetTrimmed(_) => Code::IllegalOffset,
        ServiceError::StoreFailed(_) | ServiceError::ShuttingDown(_) | ServiceError::Internal(_) => Code::InternalServerError,
        ServiceError::Denied(_) => Code::Forbidden,
    };
    status(code, e.to_string())
}

/// A send's guarantee as a status: the bytes are on the master either way; under synchronous
/// replication the slaves may not have them.
#[must_use]
pub fn guarantee(g: Guarantee) -> pb::Status {
    match g {
        Guarantee::Ok => ok(),
        Guarantee::SlaveTimeout => status(Code::SlavePersistenceTimeout, "stored on the master; not on enough slaves in time"),
        Guarantee::SlaveNotAvailable => status(Code::HaNotAvailable, "stored on the master; too few slaves connected"),
    }
}

/// A `host:port` address as the API's endpoints (an IP address, else a domain name), or `None`
/// when it is not one.
#[must_use]
pub fn endpoints(addr: &str) -> Option<pb::Endpoints> {
    let (scheme, host, port) = match addr.parse::<std::net::SocketAddr>() {
        Ok(std::net::SocketAddr::V4(a)) => (pb::AddressScheme::IPv4, a.ip().to_string(), a.port()),
        Ok(std::net::SocketAddr::V6(a)) => (pb::AddressScheme::IPv6, a.ip().to_string(), a.port()),
        Err(_) => {
            let (host, port) = addr.rsplit_once(':')?;
            (pb::AddressScheme::DomainName, host.to_owned(), port.parse().ok()?)
        }
    };
    (!host.is_empty()).then(|| pb::Endpoints { scheme: scheme as i32, addresses: vec![pb::Address { host, port: i32::from(port) }] })
}

/// Milliseconds since the epoch as a protobuf timestamp.
#[must_use]
pub fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// A protobuf timestamp as milliseconds since the epoch (none before the epoch).
#[must_use]
pub fn millis(t: &prost_types::Timestamp) -> Option<u64> {
    let ms = t.seconds.checked_mul(1000)?.checked_add(i64::from(t.nanos) / 1_000_000)?;
    u64::try_from(ms).ok()
}

/// A protobuf duration (negative: zero).
#[must_use]
pub fn duration(d: &prost_types::Duration) -> Duration {
    Duration::try_from(*d).unwrap_or_default()
}

/// A duration as protobuf says it.
#[must_use]
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A message a client sent, as the store records it, and what its type asks. Property names
/// the broker keeps for itself are refused.
pub(crate) struct Incoming {
    pub message: NewMessage,
    pub kind: MessageType,
    /// The FIFO message group (the ordering key).
    pub group: Option<String>,
}

/// Checks a sent message against its declared type and converts it.
///
/// # Errors
/// The status to answer: a missing topic or id, a type its properties contradict.
pub(crate) fn incoming(m: pb::Message) -> Result<(String, Incoming), pb::Status> {
    let topic = m.topic.map(|t| t.name).unwrap_or_default();
    if topic.is_empty() {
        return Err(status(Code::IllegalTopic, "the message names no topic"));
    }
    let sp = m.system_properties.unwrap_or_default();
    if sp.message_id.is_empty() {
        return Err(status(Code::IllegalMessageId, "the message has no message_id"));
    }
    let kind = MessageType::try_from(sp.message_type).unwrap_or(MessageType::Unspecified);
    let delivery_ms = sp.delivery_timestamp.as_ref().and_then(millis);
    let group = sp.message_group.filter(|g| !g.is_empty());
    match kind {
        MessageType::Normal | MessageType::Transaction if delivery_ms.is_some() => {
            return Err(status(Code::MessagePropertyConflictWithType, "a delivery timestamp is for DELAY messages"));
        }
        MessageType::Normal | MessageType::Delay | MessageType::Transaction if group.is_some() => {
            return Err(status(Code::MessagePropertyConflictWithType, "a message group is for FIFO messages"));
        }
        MessageType::Fifo if group.is_none() => {
            return Err(status(Code::IllegalMessageGroup, "a FIFO message needs a message group"));
        }
        MessageType::Delay if delivery_ms.is_none() => {
            return Err(status(Code::IllegalDeliveryTime, "a DELAY message needs a delivery timestamp"));
        }
        MessageType::Normal | MessageType::Fifo | MessageType::Delay | MessageType::Transaction => {}
        other => {
            return Err(status(Code::Unsupported, format!("message type {} is not supported", other.as_str_name())));
        }
    }
    if let Some(k) = m.user_properties.keys().find(|k| k.starts_with('%')) {
        return Err(status(Code::IllegalMessagePropertyKey, format!("property {k}: names starting with % are the broker's")));
    }
    let mut user: Vec<(String, String)> = m.user_properties.into_iter().collect();
    user.sort();
    let message = NewMessage {
        topic: String::new(),
        queue_id: 0,
        born_ms: sp.born_timestamp.as_ref().and_then(millis).unwrap_or_else(now_ms),
        flags: 0,
        properties: Properties {
            tags: sp.tag.filter(|t| !t.is_empty()),
            keys: sp.keys,
            unique_id: Some(sp.message_id),
            ordering_key: group.clone(),
            delivery_ms,
            transaction: None,
            reconsume_times: 0,
            user,
        },
        body: m.body,
    };
    Ok((topic, Incoming { message, kind, group }))
}

/// The MD5 digest of a body as RocketMQ clients check it (upper-case hex).
#[must_use]
pub fn body_digest(body: &[u8]) -> pb::Digest {
    let sum = Md5::digest(body);
    let hex: String = sum.iter().map(|b| format!("{b:02X}")).collect();
    pb::Digest { r#type: pb::DigestType::Md5 as i32, checksum: hex }
}

/// A stored message as the API delivers it; `receipt_handle` and `attempt` for a consumer's
/// delivery, none for a transaction check-back.
#[must_use]
pub fn outgoing(m: &StoredMessage, store_host: &str, receipt_handle: Option<String>, attempt: Option<i32>) -> pb::Message {
    let p = &m.properties;
    let kind = if p.transaction.is_some() {
        MessageType::Transaction
    } else if p.ordering_key.is_some() {
        MessageType::Fifo
    } else if p.delivery_ms.is_some() {
        MessageType::Delay
    } else {
        MessageType::Normal
    };
    let system_properties = pb::SystemProperties {
        tag: p.tags.clone(),
        keys: p.keys.clone(),
        message_id: p.unique_id.clone().unwrap_or_else(|| format!("{:016X}", m.log_offset)),
        body_digest: Some(body_digest(&m.body)),
        body_encoding: pb::Encoding::Identity as i32,
        message_type: kind as i32,
        born_timestamp: Some(timestamp(m.born_ms)),
        born_host: String::new(),
        store_timestamp: Some(timestamp(m.store_ms)),
        store_host: store_host.to_owned(),
        delivery_timestamp: p.delivery_ms.map(timestamp),
        receipt_handle,
        queue_id: m.queue_id as i32,
        queue_offset: Some(m.queue_offset as i64),
        invisible_duration: None,
        delivery_attempt: attempt,
        message_group: p.ordering_key.clone(),
        trace_context: None,
        orphaned_transaction_recovery_duration: None,
        dead_letter_queue: None,
        lite_topic: None,
        priority: None,
    };
    // A retry is delivered under the topic it was first sent to, as RocketMQ delivers it (clients
    // keep their messages by subscribed topic).
    let topic = if m.topic.starts_with(RETRY_TOPIC_PREFIX) {
        p.user.iter().find(|(k, _)| k == wasmq_engine::ORIGIN_TOPIC_PROPERTY).map_or_else(|| m.topic.clone(), |(_, t)| t.clone())
    } else {
        m.topic.clone()
    };
    pb::Message {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: topic }),
        user_properties: p.user.iter().filter(|(k, _)| !k.starts_with('%')).cloned().collect(),
        system_properties: Some(system_properties),
        body: m.body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: MessageType, group: Option<&str>, delivery: Option<u64>) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource { resource_namespace: String::new(), name: "orders".into() }),
            user_properties: [("region".to_owned(), "eu".to_owned())].into(),
            system_properties: Some(pb::SystemProperties {
                tag: Some("paid".into()),
                keys: vec!["k1".into()],
                message_id: "01ABC".into(),
                message_type: kind as i32,
                message_group: group.map(Into::into),
                delivery_timestamp: delivery.map(timestamp),
                ..Default::default()
            }),
            body: bytes::Bytes::from_static(b"hello"),
        }
    }

    #[test]
    fn a_message_keeps_its_tag_keys_id_group_and_properties() {
        let (topic, m) = incoming(message(MessageType::Fifo, Some("order-7"), None)).map_err(|s| s.message).unwrap();
        assert_eq!(topic, "orders");
        let p = &m.message.properties;
        assert_eq!(
            (p.tags.as_deref(), p.keys.as_slice(), p.unique_id.as_deref(), p.ordering_key.as_deref()),
            (Some("paid"), &["k1".to_owned()][..], Some("01ABC"), Some("order-7"))
        );
        assert_eq!(p.user, vec![("region".to_owned(), "eu".to_owned())]);
        assert_eq!(m.group.as_deref(), Some("order-7"));
    }

    #[test]
    fn a_type_its_properties_contradict_is_refused_with_its_code() {
        let code = |m| incoming(m).err().map(|s| s.code);
        assert_eq!(code(message(MessageType::Fifo, None, None)), Some(Code::IllegalMessageGroup as i32));
        assert_eq!(code(message(MessageType::Normal, Some("g"), None)), Some(Code::MessagePropertyConflictWithType as i32));
        assert_eq!(code(message(MessageType::Normal, None, Some(5_000))), Some(Code::MessagePropertyConflictWithType as i32));
        assert_eq!(code(message(MessageType::Delay, None, None)), Some(Code::IllegalDeliveryTime as i32));
        assert_eq!(code(message(MessageType::Lite, None, None)), Some(Code::Unsupported as i32));
        let mut m = message(MessageType::Normal, None, None);
        m.user_properties.insert("%TX_GROUP".into(), "x".into());
        assert_eq!(code(m), Some(Code::IllegalMessagePropertyKey as i32));
    }

    #[test]
    fn the_body_digest_is_upper_case_md5() {
        // RFC 1321's test vector for "abc".
        assert_eq!(body_digest(b"abc").checksum, "900150983CD24FB0D6963F7D28E17F72");
    }
}
