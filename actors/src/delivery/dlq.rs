//! Dead-letter records: a `system_error` envelope on `{topic}.dlq` that keeps the original
//! record whole (value, key, headers, position) with why and where it failed.

use alpha_panda_core::events::{RecordHeader, SystemError, ValueEncoding};
use alpha_panda_core::{EventBroker, EventData, EventEnvelope, FailureClass, Timestamp, ids};
use base64::Engine;
use uuid::Uuid;

use super::{DeliveryPolicy, Output, Record};

/// The dead-letter output for `record`, or `None` if its topic has no DLQ.
///
/// The DLQ record's id is derived from the original's id when the original decodes, and from
/// its position (group, topic, partition, offset) when it does not, so dead-lettering the
/// same record again after a crash yields the same id.
pub fn dead_letter(
    record: &Record,
    decoded: Option<&EventEnvelope>,
    policy: &DeliveryPolicy,
    class: FailureClass,
    message: &str,
    retry_count: u32,
) -> Option<Output> {
    dead_letter_as(
        record,
        decoded,
        &policy.group,
        &policy.stage,
        class,
        message,
        retry_count,
    )
}

/// As [`dead_letter`], naming the consumer group and stage (or part of a stage, such as one
/// strategy) that failed.
pub fn dead_letter_as(
    record: &Record,
    decoded: Option<&EventEnvelope>,
    group: &str,
    stage: &str,
    class: FailureClass,
    message: &str,
    retry_count: u32,
) -> Option<Output> {
    let dlq_topic = record.topic.dlq()?;
    let (value, value_encoding) = match &record.value {
        None => (None, ValueEncoding::Utf8),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text.to_owned()), ValueEncoding::Utf8),
            Err(_) => (
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ValueEncoding::Base64,
            ),
        },
    };
    let key = record
        .key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let data = EventData::SystemError(SystemError {
        original_topic: record.topic.to_string(),
        original_partition: record.partition,
        original_offset: record.offset,
        original_key: key.clone(),
        original_value: value,
        value_encoding,
        original_headers: record
            .headers
            .iter()
            .map(|(k, v)| RecordHeader {
                key: k.clone(),
                value: v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
            })
            .collect(),
        error_class: class,
        error_message: message.to_owned(),
        retry_count,
        consumer_group: group.to_owned(),
        stage: stage.to_owned(),
        failed_at: Timestamp::now(),
    });
    let broker = match record.topic.broker_name() {
        Some(b) => EventBroker::Broker(b.clone()),
        None => EventBroker::Shared,
    };
    let dlq_key = key.unwrap_or_else(|| format!("{}:{}", record.partition, record.offset));
    let source = format!("dlq:{stage}");
    let envelope = match decoded {
        Some(original) => original.child(broker, source, 0, dlq_key, Timestamp::now(), data),
        None => {
            let position = format!(
                "{}:{}:{}:{}",
                group, record.topic, record.partition, record.offset
            );
            let id = ids::child_id(Uuid::nil(), &position, 0);
            let mut env = EventEnvelope::root(broker, source, dlq_key, Timestamp::now(), data);
            env.id = id;
            env.correlation_id = id;
            env.trace_id = id;
            env
        }
    };
    Some(Output {
        topic: dlq_topic,
        envelope,
    })
}
