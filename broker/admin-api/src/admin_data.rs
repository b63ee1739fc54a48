//! Admin API over the data itself: messages by id, by key and by queue position, a test send,
//! and the Prometheus metrics. Routes are added by [`crate::admin::router`].

use std::fmt::Write as _;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use wasmq_admin_types::{MessageView, QueuePage, SendMessage, SentMessage};
use wasmq_store::{NewMessage, StoredMessage};

use crate::admin::{AdminState, error};

/// Most of a body shown by the API.
const BODY_SHOWN_MAX: usize = 64 << 10;
/// Most messages one page or key lookup returns.
const PAGE_MAX: usize = 256;

fn view(m: StoredMessage) -> MessageView {
    let shown = &m.body[..m.body.len().min(BODY_SHOWN_MAX)];
    let p = m.properties;
    MessageView {
        topic: m.topic,
        queue_id: m.queue_id,
        queue_offset: m.queue_offset,
        log_offset: m.log_offset,
        store_ms: m.store_ms,
        born_ms: m.born_ms,
        unique_id: p.unique_id,
        tags: p.tags,
        keys: p.keys,
        properties: p.user,
        reconsume_times: p.reconsume_times,
        delivery_ms: p.delivery_ms,
        body_size: m.body.len(),
        body_base64: base64::engine::general_purpose::STANDARD.encode(shown),
        body_truncated: shown.len() < m.body.len(),
    }
}

/// Held messages and decisions stay inside the broker.
fn visible(m: &StoredMessage) -> bool {
    !wasmq_engine::is_internal_topic(&m.topic)
}

pub(crate) async fn message_by_id(
    State(s): State<AdminState>,
    Extension(caller): Extension<crate::authz::Caller>,
    Path(id): Path<String>,
) -> Response {
    // The newest message with the id: a delivered copy is newer than its held original, and
    // a message still held (scheduled, or in a transaction) is not shown.
    match s.engine.store().find_by_id(&id) {
        // Reading it is consuming its topic.
        Ok(Some(m)) if visible(&m) => match caller.allow(&s, wasmq_service::Action::Consume, &wasmq_service::topic_resource(&m.topic)) {
            Ok(()) => Json(view(m)).into_response(),
            Err(r) => *r,
        },
        Ok(Some(_)) => error(404, format!("message {id} is held (scheduled, or in an undecided transaction)")),
        Ok(None) => error(404, format!("no message with id {id}")),
        Err(e) => error(500, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeyQuery {
    key: String,
}

pub(crate) async fn messages_by_key(State(s): State<AdminState>, Path(topic): Path<String>, Query(q): Query<KeyQuery>) -> Response {
    if s.engine.topic(&topic).is_none() || wasmq_engine::is_internal_topic(&topic) {
        return error(404, format!("topic {topic} does not exist"));
    }
    match s.engine.store().find_by_key(&topic, &q.key, PAGE_MAX) {
        Ok(found) => Json(found.into_iter().map(view).collect::<Vec<_>>()).into_response(),
        Err(e) => error(500, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    offset: Option<u64>,
    /// The first message stored at or after this time (ms since the epoch).
    time: Option<u64>,
    count: Option<usize>,
}

pub(crate) async fn browse_queue(
    State(s): State<AdminState>,
    Path((topic, queue_id)): Path<(String, u32)>,
    Query(q): Query<PageQuery>,
) -> Response {
    if wasmq_engine::is_internal_topic(&topic) {
        return error(404, format!("topic {topic} does not exist"));
    }
    let start = match (q.offset, q.time) {
        (Some(o), None) => o,
        (None, Some(t)) => match s.engine.offset_for_time(&topic, queue_id, t) {
            Ok(o) => o,
            Err(e) => return error(404, e.to_string()),
        },
        (None, None) => s.engine.store().queue_bounds(&topic, queue_id).0,
        (Some(_), Some(_)) => return error(400, "give offset or time, not both"),
    };
    let count = q.count.unwrap_or(50).clamp(1, PAGE_MAX);
    match s.engine.pull(&topic, queue_id, start, count, 8 << 20) {
        Ok(r) => Json(QueuePage {
            messages: r.messages.into_iter().map(view).collect(),
            next_offset: r.next_offset,
            min_offset: r.min_offset,
            max_offset: r.max_offset,
        })
        .into_response(),
        Err(wasmq_engine::PullError::UnknownTopic(_)) => error(404, format!("topic {topic} does not exist")),
        Err(e @ wasmq_engine::PullError::InvalidQueue { .. }) => error(404, e.to_string()),
        Err(e) => error(400, e.to_string()),
    }
}

pub(crate) async fn send_message(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
    body: Result<Json<SendMessage>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let m = match body {
        Ok(Json(m)) => m,
        Err(e) => return error(400, e.body_text()),
    };
    // Unique across concurrent sends (the counter) and restarts (the time).
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let born_ms = crate::now_ms();
    let id = format!("admin-{born_ms:x}-{:x}", SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut msg = NewMessage { body: bytes::Bytes::from(m.body.into_bytes()), ..Default::default() };
    msg.born_ms = born_ms;
    msg.properties.unique_id = Some(id.clone());
    msg.properties.keys.extend(m.key);
    msg.properties.tags = m.tags;
    msg.properties.user = m.properties;
    // As a producer's send: through the topic's routing plugins, answered once as safe as the
    // broker set promises.
    let send = wasmq_service::Send { topic, queue: m.queue_id, messages: vec![msg], transaction: None };
    let (sent, guarantee) = match s.service.send(send).await {
        Ok(r) => r,
        Err(e) => {
            use wasmq_service::ServiceError as E;
            let status = match &e {
                E::UnknownTopic(_) => 404,
                E::NotMaster(_) => 409,
                E::Denied(_) => 403,
                E::Append(wasmq_store::AppendError::DiskFull { .. } | wasmq_store::AppendError::Failed { .. }) => 507,
                E::StoreFailed(_) | E::FlushTimeout(_) | E::ShuttingDown(_) | E::Internal(_) => 500,
                _ => 400,
            };
            return error(status, e.to_string());
        }
    };
    let status = match guarantee {
        wasmq_service::Guarantee::Ok => "ok",
        wasmq_service::Guarantee::SlaveTimeout => "stored on the master; not on enough slaves within the replica timeout",
        wasmq_service::Guarantee::SlaveNotAvailable => "stored on the master; too few slaves connected to wait for",
    };
    let a = &sent.appended.messages[0];
    let queue_id = sent.queue_id;
    let sent = SentMessage { message_id: id, queue_id, queue_offset: a.queue_offset, log_offset: a.log_offset, status: status.to_owned() };
    (StatusCode::CREATED, Json(sent)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(State(s): State<AdminState>) -> Response {
    let e = &s.engine;
    let store = e.store();
    let mut out = String::new();
    // Read from the engine at scrape time: gauges, and counters the engine keeps (their samples
    // carry `_total`, their family name does not, as OpenMetrics has it).
    let mut family = |kind: &str, name: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let sample = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
        for (labels, v) in samples {
            let _ = writeln!(out, "{sample}{labels} {v}");
        }
    };
    let mut gauge = |name: &str, help: &str, samples: &[(String, u64)]| family("gauge", name, help, samples);
    let broker = format!("{{broker=\"{}\",broker_id=\"{}\"}}", s.replication.broker_name, s.replication.broker_id);
    gauge("wasmq_log_end_offset", "End of the commit log (bytes).", &[(broker.clone(), store.end_offset())]);
    gauge("wasmq_log_min_offset", "Lowest commit log offset still stored.", &[(broker.clone(), store.min_offset())]);
    gauge("wasmq_log_durable_offset", "Every byte below is fsynced.", &[(broker.clone(), store.durable_offset())]);
    let mut queues = Vec::new();
    for (topic, c) in e.topics() {
        if wasmq_engine::is_internal_topic(&topic) {
            continue;
        }
        for q in 0..c.queues {
            queues.push((format!("{{topic=\"{topic}\",queue=\"{q}\"}}"), store.queue_bounds(&topic, q).1));
        }
    }
    gauge("wasmq_queue_max_offset", "Messages ever stored in a queue (its next queue offset).", &queues);
    let mut lag = Vec::new();
    for (group, topics) in e.offsets().groups {
        for (topic, qs) in topics {
            for (q, committed) in qs {
                let max = store.queue_bounds(&topic, q).1;
                lag.push((format!("{{group=\"{group}\",topic=\"{topic}\",queue=\"{q}\"}}"), max.saturating_sub(committed)));
            }
        }
    }
    gauge("wasmq_group_lag", "Messages of a queue not yet committed by a consumer group.", &lag);
    let (pending, c) = e.transactions();
    gauge("wasmq_transactions_pending", "Undecided transactions.", &[(String::new(), pending.iter().map(|p| p.pending).sum())]);
    let counters = [("committed", c.committed), ("rolled_back", c.rolled_back), ("discarded", c.discarded)];
    let ended: Vec<(String, u64)> = counters.iter().map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), *v)).collect();
    let schedule = e.schedule_status();
    gauge("wasmq_scheduled_pending", "Scheduled messages not yet due.", &[(String::new(), schedule.pending)]);
    let slaves: Vec<(String, u64)> =
        s.replication.slaves(store.end_offset()).iter().map(|v| (format!("{{slave=\"{}\"}}", v.broker_id), v.lag_bytes)).collect();
    gauge("wasmq_replica_lag_bytes", "Bytes of the master's log a slave does not hold yet.", &slaves);
    if let Ok(d) = wasmq_store::disk_space(&store.config().dir) {
        gauge("wasmq_disk_used_bytes", "Used bytes of the file system holding the store.", &[(broker.clone(), d.used_bytes)]);
        gauge("wasmq_disk_total_bytes", "Size of the file system holding the store.", &[(broker.clone(), d.total_bytes)]);
    }
    family("counter", "wasmq_transactions_ended", "Transactions ended since start, by outcome.", &ended);
    family("counter", "wasmq_scheduled_released", "Scheduled messages delivered since start.", &[(String::new(), schedule.released)]);
    let (mut calls, mut failures, mut nanos) = (Vec::new(), Vec::new(), Vec::new());
    for a in s.plugins.attachments() {
        let labels = format!(
            "{{plugin=\"{}@{}\",role=\"{}\",topic=\"{}\",group=\"{}\"}}",
            a.plugin,
            a.version,
            a.role,
            a.topic,
            a.group.as_deref().unwrap_or("")
        );
        calls.push((labels.clone(), a.stats.calls));
        failures.push((labels.clone(), a.stats.errors));
        nanos.push((labels, (a.stats.ns_per_message * a.stats.messages as f64) as u64));
    }
    family("counter", "wasmq_plugin_calls", "Plugin calls (each a batch), by attachment.", &calls);
    family("counter", "wasmq_plugin_failures", "Failed plugin calls (traps, timeouts, refusals), by attachment.", &failures);
    family("counter", "wasmq_plugin_call_nanoseconds", "Time in plugin calls, host side included, by attachment.", &nanos);
    out.push_str(&s.service.metrics().render());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}
