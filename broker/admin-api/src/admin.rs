//! The admin HTTP API (JSON under `/api/v1`; who may call what: `authz.rs`), served over HTTPS by the server's admin listener.
//! `router(state)` is a plain axum router, tested without sockets.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use wasmq_admin_types::{
    ApiError, AttachPlugin, AttachmentView, BrokerInfo, CreateTopic, DeadLetter, GroupDetail, GroupMember, GroupQueue, GroupSettings,
    GroupSummary, PluginDetail, PluginVersion, QueueOffsets, Resend, Resent, ResetOffset, TopicDetail, TopicMessageType, TopicSummary,
    UpdateTopic,
};
use wasmq_engine::Engine;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub service: Arc<wasmq_service::Service>,
    pub engine: Arc<Engine>,
    pub plugins: Arc<wasmq_plugin_host::PluginRegistry>,
    pub producers: Arc<dyn wasmq_service::ProducerLinks>,
    pub replication: Arc<wasmq_service::Replication>,
    pub stats: Arc<crate::stats::Stats>,
    pub token: Arc<str>,
    /// A read-only token: GET requests only.
    pub read_token: Option<Arc<str>>,
    pub listen: String,
    pub admin_listen: String,
    pub started_ms: u64,
    pub cluster: String,
    /// Name servers to ask for the cluster view (none: this broker and its replicas), and a
    /// client for them that keeps its connections.
    pub namesrvs: Vec<String>,
    pub names: Option<Arc<wasmq_namesrv::NameServers>>,
    /// The failover controller's client, when this broker is under one.
    pub controller: Option<Arc<wasmq_controller_api::Client>>,
}

/// The body of a JSON request, or a 400 answer saying what is wrong with it.
fn json_body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, Box<Response>> {
    body.map(|Json(b)| b).map_err(|e| Box::new(error(400, e.body_text())))
}

/// HTTP status for a topic error.
fn topic_status(e: &wasmq_engine::TopicError) -> u16 {
    use wasmq_engine::TopicError;
    match e {
        TopicError::Exists(_) => 409,
        TopicError::Unknown(_) => 404,
        TopicError::Invalid(_) | TopicError::BadQueueCount { .. } | TopicError::Reserved | TopicError::WrongMessageType { .. } => 400,
        TopicError::TooMany => 507,
        TopicError::ReadOnly(_) => 409,
        TopicError::Io(_) => 500,
    }
}

pub(crate) fn error(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(ApiError { error: message.into() })).into_response()
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/v1/broker", get(broker_info))
        .route("/api/v1/topics", get(list_topics).post(create_topic))
        .route("/api/v1/topics/{name}", get(describe_topic).patch(update_topic).delete(delete_topic))
        .route("/api/v1/groups", get(list_groups))
        .route("/api/v1/groups/{name}", get(describe_group).put(set_group_settings).delete(delete_group))
        .route("/api/v1/groups/{name}/reset-offset", post(reset_offset))
        .route("/api/v1/groups/{name}/dlq", get(list_dead_letters))
        .route("/api/v1/groups/{name}/dlq/resend", post(resend_dead_letter))
        .route("/api/v1/groups/{name}/dlq/resend-all", post(resend_all_dead_letters))
        .route("/api/v1/groups/{name}/lag-history", get(group_lag_history))
        .route("/api/v1/topics/{name}/rate", get(topic_rate))
        .route(
            "/api/v1/plugins",
            get(list_plugins).post(upload_plugin).layer(DefaultBodyLimit::max(wasmq_plugin_host::PLUGIN_BYTES_MAX + 1)),
        )
        .route("/api/v1/plugins/{name}", get(describe_plugin))
        .route("/api/v1/attachments", get(list_attachments))
        .route("/api/v1/transactions", get(transactions))
        .route("/api/v1/scheduled", get(scheduled))
        .route("/api/v1/replicas", get(replicas))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/controller", get(crate::controller::controller))
        .route("/api/v1/messages/{id}", get(crate::admin_data::message_by_id))
        .route("/api/v1/topics/{name}/messages", get(crate::admin_data::messages_by_key).post(crate::admin_data::send_message))
        .route("/api/v1/topics/{name}/queues/{queue}/messages", get(crate::admin_data::browse_queue))
        .route("/metrics", get(crate::admin_data::metrics))
        .route("/api/v1/topics/{topic}/plugins/{role}", put(attach_topic_plugin).delete(detach_topic_plugin))
        .route("/api/v1/groups/{group}/filters/{topic}", put(attach_filter).delete(detach_filter))
        .route("/api/v1/login", post(crate::users::login))
        .route("/api/v1/logout", post(crate::users::logout))
        .route("/api/v1/me", get(crate::users::me))
        .route("/api/v1/users", get(crate::users::list_users).post(crate::users::create_user))
        .route("/api/v1/users/{name}", get(crate::users::describe_user).patch(crate::users::update_user).delete(crate::users::delete_user))
        .route("/api/v1/users/{name}/access-key", post(crate::users::new_access_key))
        .route("/api/v1/policies", get(crate::users::list_policies).post(crate::users::add_policy).delete(crate::users::remove_policy))
        .route("/api/v1/tokens", get(crate::users::list_tokens).post(crate::users::create_token))
        .route("/api/v1/tokens/{id}", delete(crate::users::delete_token))
        .route("/api/v1/audit", get(crate::users::audit))
        .route(crate::openapi::PATH, get(crate::openapi::serve))
        // Every route above: who asks, and whether its decision in `authz.rs` allows it.
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::authz::auth))
        .fallback(crate::console::serve)
        .with_state(state)
}

async fn broker_info(State(s): State<AdminState>) -> Json<BrokerInfo> {
    let store = s.engine.store();
    let live = s.service.liveness(s.started_ms);
    Json(BrokerInfo {
        broker_name: s.engine.broker_name().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        listen: s.listen.clone(),
        admin_listen: s.admin_listen.clone(),
        flush: match store.config().flush {
            wasmq_store::FlushMode::Sync { .. } => "sync".into(),
            wasmq_store::FlushMode::Async { .. } => "async".into(),
        },
        log_min_offset: store.min_offset(),
        log_end_offset: store.end_offset(),
        log_durable_offset: store.durable_offset(),
        store_failure: store.failure().map(|f| f.to_string()),
        topics: s.engine.topics().iter().filter(|(t, _)| !wasmq_engine::is_internal_topic(t)).count(),
        cluster: s.cluster.clone(),
        broker_id: s.replication.broker_id,
        role: if s.replication.is_slave() { "slave" } else { "master" }.into(),
        started_ms: live.started_ms,
        uptime_ms: crate::now_ms().saturating_sub(live.started_ms),
        log_bytes: live.log_bytes,
        disk_total_bytes: live.disk_total_bytes,
        disk_used_bytes: live.disk_used_bytes,
    })
}

/// This broker as it sees itself, for the cluster view.
fn this_broker(s: &AdminState) -> wasmq_admin_types::ClusterBroker {
    let live = s.service.liveness(s.started_ms);
    wasmq_admin_types::ClusterBroker {
        broker_id: s.replication.broker_id,
        role: if s.replication.is_slave() { "slave" } else { "master" }.into(),
        addr: Some(s.listen.clone()),
        admin_addr: s.admin_listen.clone(),
        version: Some(live.version),
        uptime_ms: Some(crate::now_ms().saturating_sub(live.started_ms)),
        log_end_offset: live.log_end_offset,
        lag_bytes: s.replication.is_slave().then(|| s.replication.link().master_end.saturating_sub(live.log_end_offset)),
        log_bytes: Some(live.log_bytes),
        disk_total_bytes: Some(live.disk_total_bytes),
        disk_used_bytes: Some(live.disk_used_bytes),
        topics: Some(s.engine.topics().iter().filter(|(t, _)| !wasmq_engine::is_internal_topic(t)).count() as u32),
        last_seen_ms_ago: None,
        status: "up".into(),
        down_since_ms: None,
    }
}

/// The cluster as the name servers know it (every broker set, with what each broker reported
/// at its last registration, and this broker as it sees itself until they know it); without
/// name servers, or when none answers, this broker's own set as its replication links show it.
async fn cluster(State(s): State<AdminState>) -> Json<wasmq_admin_types::ClusterView> {
    use wasmq_admin_types::{BrokerSetView, ClusterBroker, ClusterView};
    let mut view = ClusterView {
        cluster: s.cluster.clone(),
        source: "local".into(),
        name_servers: s.namesrvs.clone(),
        error: None,
        broker_sets: Vec::new(),
    };
    if let Some(names) = &s.names {
        match names.brokers().await {
            Ok(entries) => {
                let now = crate::now_ms();
                let mut sets: std::collections::BTreeMap<String, Vec<ClusterBroker>> = std::collections::BTreeMap::new();
                let master_end: std::collections::HashMap<String, u64> =
                    entries.iter().filter(|e| e.master).map(|e| (e.broker_name.clone(), e.live.log_end_offset)).collect();
                for e in entries.into_iter().filter(|e| e.cluster == s.cluster) {
                    let lag =
                        (!e.master).then(|| master_end.get(&e.broker_name).map(|m| m.saturating_sub(e.live.log_end_offset))).flatten();
                    // Up or down as the name server holds it (down: its connection closed, or it
                    // missed registrations).
                    let status = if e.down_ms_ago.is_some() { "down" } else { "up" };
                    let down_since_ms = e.down_ms_ago.map(|ago| now.saturating_sub(ago));
                    sets.entry(e.broker_name).or_default().push(ClusterBroker {
                        broker_id: e.broker_id,
                        role: if e.master { "master" } else { "slave" }.into(),
                        addr: Some(e.addr),
                        admin_addr: e.admin_addr,
                        version: Some(e.live.version),
                        uptime_ms: Some(now.saturating_sub(e.live.started_ms)),
                        log_end_offset: e.live.log_end_offset,
                        lag_bytes: lag,
                        log_bytes: Some(e.live.log_bytes),
                        disk_total_bytes: Some(e.live.disk_total_bytes),
                        disk_used_bytes: Some(e.live.disk_used_bytes),
                        topics: Some(e.topics),
                        last_seen_ms_ago: Some(e.last_seen_ms_ago),
                        status: status.into(),
                        down_since_ms,
                    });
                }
                // Until the name servers have its first registration, this broker is listed as
                // it sees itself.
                let mine = sets.entry(s.engine.broker_name().to_owned()).or_default();
                if !mine.iter().any(|b| b.broker_id == s.replication.broker_id) {
                    mine.push(this_broker(&s));
                }
                view.source = "namesrv".into();
                view.broker_sets = sets
                    .into_iter()
                    .map(|(broker_name, mut brokers)| {
                        brokers.sort_by_key(|b| b.broker_id);
                        BrokerSetView { broker_name, brokers }
                    })
                    .collect();
                return Json(view);
            }
            Err(e) => view.error = Some(format!("no name server answered: {e}")),
        }
    }
    let me = this_broker(&s);
    let log_end = me.log_end_offset;
    let now = crate::now_ms();
    let slaves = s.replication.slaves(log_end).into_iter().map(|sl| ClusterBroker {
        broker_id: sl.broker_id,
        role: "slave".into(),
        addr: None,
        admin_addr: sl.admin_addr,
        version: None,
        uptime_ms: None,
        log_end_offset: sl.acked_offset,
        lag_bytes: Some(sl.lag_bytes),
        log_bytes: None,
        disk_total_bytes: None,
        disk_used_bytes: None,
        topics: None,
        last_seen_ms_ago: Some(sl.last_seen_ms_ago),
        status: if sl.connected { "up" } else { "down" }.into(),
        down_since_ms: (!sl.connected).then(|| now.saturating_sub(sl.last_seen_ms_ago)),
    });
    view.broker_sets =
        vec![BrokerSetView { broker_name: s.engine.broker_name().to_owned(), brokers: std::iter::once(me).chain(slaves).collect() }];
    Json(view)
}

async fn transactions(State(s): State<AdminState>) -> Json<wasmq_admin_types::Transactions> {
    let (pending, c) = s.engine.transactions();
    let mut producers: Vec<_> = s
        .producers
        .counts()
        .into_iter()
        .map(|(producer_group, connections)| wasmq_admin_types::ProducerGroupLive { producer_group, connections })
        .collect();
    producers.sort_by(|a, b| a.producer_group.cmp(&b.producer_group));
    Json(wasmq_admin_types::Transactions {
        pending: pending
            .into_iter()
            .map(|p| wasmq_admin_types::PendingTransactions {
                topic: p.topic,
                producer_group: p.producer_group,
                pending: p.pending,
                oldest_stored_ms: p.oldest_stored_ms,
                checks: p.checks,
                most_checks: p.most_checks,
            })
            .collect(),
        producers,
        committed: c.committed,
        rolled_back: c.rolled_back,
        discarded: c.discarded,
        checks_sent: c.checks_sent,
        unknown_answers: c.unknown_answers,
        late_ends: c.late_ends,
    })
}

async fn replicas(State(s): State<AdminState>) -> Json<wasmq_admin_types::ReplicaStatus> {
    use wasmq_service::{Mode, Role};
    let r = &s.replication;
    let store = s.engine.store();
    let end = store.end_offset();
    let master = match &r.role {
        Role::Master => None,
        Role::Slave { master, .. } => {
            let link = r.link();
            Some(wasmq_admin_types::MasterStatus {
                addr: master.clone(),
                connected: link.connected,
                master_end_offset: link.master_end,
                lag_bytes: link.master_end.saturating_sub(end),
                last_contact_ms_ago: link.last_contact.map(|t| t.elapsed().as_millis() as u64),
                error: link.error,
            })
        }
    };
    Json(wasmq_admin_types::ReplicaStatus {
        broker_name: r.broker_name.clone(),
        broker_id: r.broker_id,
        role: if master.is_some() { "slave" } else { "master" }.into(),
        replication: match r.mode {
            _ if master.is_some() => "-".into(),
            Mode::Async => "async".into(),
            Mode::Sync { replicas, .. } => format!("sync ({replicas} slave{})", if replicas == 1 { "" } else { "s" }),
        },
        listen: s.listen.clone(),
        admin_listen: s.admin_listen.clone(),
        log_end_offset: end,
        log_durable_offset: store.durable_offset(),
        slaves: r.slaves(end),
        master,
    })
}

async fn scheduled(State(s): State<AdminState>) -> Json<wasmq_admin_types::Scheduled> {
    let st = s.engine.schedule_status();
    Json(wasmq_admin_types::Scheduled {
        pending: st.pending,
        overdue: st.overdue,
        next_due_ms: st.next_due_ms,
        due_within: st.due_within.into_iter().map(|(within_ms, count)| wasmq_admin_types::DueWithin { within_ms, count }).collect(),
        released: st.released,
        dropped: st.dropped,
        recalled: st.recalled,
    })
}

async fn list_topics(State(s): State<AdminState>) -> Json<Vec<TopicSummary>> {
    Json(
        s.engine
            .topics()
            .into_iter()
            .filter(|(name, _)| !wasmq_engine::is_internal_topic(name))
            .map(|(name, c)| summary(name, &c))
            .collect(),
    )
}

fn summary(name: String, c: &wasmq_engine::TopicConfig) -> TopicSummary {
    TopicSummary { name, queues: c.queues, created_ms: c.created_ms, retention_ms: c.retention_ms, message_type: api_type(c.message_type) }
}

fn api_type(t: wasmq_engine::MessageType) -> TopicMessageType {
    use wasmq_engine::MessageType as M;
    match t {
        M::Normal => TopicMessageType::Normal,
        M::Fifo => TopicMessageType::Fifo,
        M::Delay => TopicMessageType::Delay,
        M::Transaction => TopicMessageType::Transaction,
        M::Mixed => TopicMessageType::Mixed,
    }
}

fn engine_type(t: TopicMessageType) -> wasmq_engine::MessageType {
    use wasmq_engine::MessageType as M;
    match t {
        TopicMessageType::Normal => M::Normal,
        TopicMessageType::Fifo => M::Fifo,
        TopicMessageType::Delay => M::Delay,
        TopicMessageType::Transaction => M::Transaction,
        TopicMessageType::Mixed => M::Mixed,
    }
}

async fn create_topic(State(s): State<AdminState>, body: Result<Json<CreateTopic>, axum::extract::rejection::JsonRejection>) -> Response {
    let t = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let options = wasmq_engine::TopicOptions { retention_ms: t.retention_ms, message_type: engine_type(t.message_type) };
    match s.engine.create_topic_with(&t.name, t.queues, options) {
        Ok(c) => (StatusCode::CREATED, Json(summary(t.name, &c))).into_response(),
        Err(e) => error(topic_status(&e), e.to_string()),
    }
}

async fn update_topic(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<UpdateTopic>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let u = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    match s.engine.set_topic_message_type(&name, engine_type(u.message_type)) {
        Ok(c) => Json(summary(name, &c)).into_response(),
        Err(e) => error(topic_status(&e), e.to_string()),
    }
}

async fn describe_topic(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.engine.describe(&name) {
        Ok(t) => Json(TopicDetail {
            retention_ms: s.engine.topic(&t.name).and_then(|c| c.retention_ms),
            message_type: s.engine.topic(&t.name).map(|c| api_type(c.message_type)).unwrap_or_default(),
            name: t.name,
            created_ms: t.created_ms,
            queues: t
                .queues
                .into_iter()
                .map(|q| QueueOffsets { queue_id: q.queue_id, min_offset: q.min_offset, max_offset: q.max_offset })
                .collect(),
        })
        .into_response(),
        Err(e) => error(topic_status(&e), e.to_string()),
    }
}

async fn delete_topic(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.engine.delete_topic(&name) {
        Ok(()) => {
            s.plugins.forget_topic(&name);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(topic_status(&e), e.to_string()),
    }
}

fn plugin_error(e: &wasmq_plugin_host::PluginError) -> Response {
    error(e.status(), e.to_string())
}

/// Runs a blocking plugin operation (compiling, `init`) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, wasmq_plugin_host::PluginError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| plugin_error(&e)),
        Err(e) => Err(error(500, format!("plugin task failed: {e}"))),
    }
}

async fn list_plugins(State(s): State<AdminState>) -> Json<Vec<PluginDetail>> {
    Json(s.plugins.list())
}

async fn upload_plugin(State(s): State<AdminState>, body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(413, format!("a plugin may be at most {} MiB", wasmq_plugin_host::PLUGIN_BYTES_MAX >> 20));
        }
        Err(e) => return error(400, e.body_text()),
    };
    if body.is_empty() {
        return error(400, "empty body: send the plugin's .wasm bytes");
    }
    let plugins = Arc::clone(&s.plugins);
    match blocking(move || plugins.upload(&body)).await {
        Ok(v) => (if v.created { StatusCode::CREATED } else { StatusCode::OK }, Json::<PluginVersion>(v)).into_response(),
        Err(r) => r,
    }
}

async fn describe_plugin(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.plugins.describe(&name) {
        Some(p) => Json(p).into_response(),
        None => error(404, format!("no plugin {name}")),
    }
}

async fn list_attachments(State(s): State<AdminState>) -> Json<Vec<AttachmentView>> {
    Json(s.plugins.attachments())
}

/// A topic plugin's role from the path; the error is the 400 answer's text.
fn topic_role(role: &str) -> Result<wasmq_plugin_host::Role, String> {
    match wasmq_plugin_host::parse_role(role) {
        Some(r @ (wasmq_plugin_host::Role::Router | wasmq_plugin_host::Role::OrderingKey)) => Ok(r),
        _ => Err(format!("role {role:?}: a topic takes a `router` or an `ordering-key` plugin (filters attach to groups)")),
    }
}

async fn attach(s: AdminState, role: wasmq_plugin_host::Role, topic: String, group: Option<String>, req: AttachPlugin) -> Response {
    if s.engine.topic(&topic).is_none() {
        return error(404, format!("topic {topic} does not exist"));
    }
    let plugins = Arc::clone(&s.plugins);
    match blocking(move || plugins.attach(role, &topic, group.as_deref(), req)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn attach_topic_plugin(
    State(s): State<AdminState>,
    Path((topic, role)): Path<(String, String)>,
    body: Result<Json<AttachPlugin>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let role = match topic_role(&role) {
        Ok(r) => r,
        Err(m) => return error(400, m),
    };
    match json_body(body) {
        Ok(req) => attach(s, role, topic, None, req).await,
        Err(r) => *r,
    }
}

async fn detach_topic_plugin(State(s): State<AdminState>, Path((topic, role)): Path<(String, String)>) -> Response {
    match topic_role(&role).map(|r| s.plugins.detach(r, &topic, None)) {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => plugin_error(&e),
        Err(m) => error(400, m),
    }
}

async fn attach_filter(
    State(s): State<AdminState>,
    Path((group, topic)): Path<(String, String)>,
    body: Result<Json<AttachPlugin>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match json_body(body) {
        Ok(req) => attach(s, wasmq_plugin_host::Role::Filter, topic, Some(group), req).await,
        Err(r) => *r,
    }
}

async fn detach_filter(State(s): State<AdminState>, Path((group, topic)): Path<(String, String)>) -> Response {
    match s.plugins.detach(wasmq_plugin_host::Role::Filter, &topic, Some(&group)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => plugin_error(&e),
    }
}

fn mode_name(m: wasmq_engine::GroupMode) -> String {
    match m {
        wasmq_engine::GroupMode::Clustering => "clustering".into(),
        wasmq_engine::GroupMode::Broadcasting => "broadcasting".into(),
    }
}

async fn list_groups(State(s): State<AdminState>) -> Json<Vec<GroupSummary>> {
    Json(
        s.engine
            .groups()
            .into_iter()
            .map(|name| {
                let view = s.engine.describe_group(&name);
                GroupSummary {
                    mode: view.as_ref().filter(|v| !v.members.is_empty()).map_or_else(|| "none".into(), |v| mode_name(v.mode)),
                    members: view.map_or(0, |v| v.members.len()),
                    name,
                }
            })
            .collect(),
    )
}

/// A client not heard from for this long is no longer listed as a group's member (RocketMQ 5
/// clients send a heartbeat every 10 to 30 s).
const CLIENT_SILENT_MS: u64 = 90_000;

async fn describe_group(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    let engine = &s.engine;
    let view = engine.describe_group(&name);
    let committed = engine.offsets().groups.get(&name).cloned().unwrap_or_default();
    let settings = engine.group_settings(&name);
    if view.is_none() && committed.is_empty() && !engine.groups().contains(&name) {
        return error(404, format!("group {name} does not exist"));
    }
    let mut owners = std::collections::BTreeMap::new();
    let mut members = Vec::new();
    for (client_id, a) in view.as_ref().map(|v| v.members.clone()).unwrap_or_default() {
        for q in &a.queues {
            owners.insert(q.clone(), client_id.clone());
        }
        let queues = a.queues.iter().map(|(t, q)| format!("{t}/{q}")).collect();
        members.push(GroupMember { client_id, queues, protocol: "native".into(), language: String::new(), version: String::new() });
    }
    // Clients of the group that receive message by message (RocketMQ 5 gRPC), heard from lately.
    let now_ms = crate::now_ms();
    let mut receivers: Vec<GroupMember> = engine
        .clients()
        .into_iter()
        .filter(|(id, c)| {
            c.consumer_groups.contains(&name)
                && now_ms.saturating_sub(c.last_seen_ms) <= CLIENT_SILENT_MS
                && !members.iter().any(|m| &m.client_id == id)
        })
        .map(|(client_id, c)| GroupMember {
            client_id,
            queues: Vec::new(),
            protocol: c.about.protocol,
            language: c.about.language,
            version: c.about.version,
        })
        .collect();
    receivers.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    members.extend(receivers);
    let mut keys: std::collections::BTreeSet<(String, u32)> = owners.keys().cloned().collect();
    for (topic, queues) in &committed {
        keys.extend(queues.keys().map(|q| (topic.clone(), *q)));
    }
    // Every queue of a topic the group reads, also those it has not committed on yet (their lag
    // counts from the queue's start).
    let topics: std::collections::BTreeSet<String> = keys.iter().map(|(t, _)| t.clone()).collect();
    for topic in topics {
        if let Some(c) = engine.topic(&topic) {
            keys.extend((0..c.queues).map(|q| (topic.clone(), q)));
        }
    }
    let now = crate::now_ms();
    let queues = keys
        .into_iter()
        .map(|(topic, queue_id)| {
            let (min, max_offset) = engine.store().queue_bounds(&topic, queue_id);
            let c = committed.get(&topic).and_then(|q| q.get(&queue_id)).copied();
            let from = c.unwrap_or(min).max(min);
            let lag = max_offset.saturating_sub(from);
            let lag_ms = if lag == 0 {
                0
            } else {
                engine
                    .store()
                    .queue_entries(&topic, queue_id, from, 1)
                    .ok()
                    .and_then(|e| e.first().and_then(|e| engine.store().read(e.log_offset).ok()))
                    .map_or(0, |m| now.saturating_sub(m.store_ms))
            };
            let owner = owners.get(&(topic.clone(), queue_id)).cloned();
            GroupQueue { topic, queue_id, committed: c, max_offset, lag, lag_ms, owner }
        })
        .collect();
    Json(GroupDetail {
        name,
        mode: view.as_ref().map_or_else(|| "none".into(), |v| mode_name(v.mode)),
        generation: view.map_or(0, |v| v.generation),
        fifo: settings.fifo,
        members,
        queues,
    })
    .into_response()
}

async fn set_group_settings(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<GroupSettings>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let g = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    match s.engine.set_group_settings(&name, wasmq_engine::GroupSettings { fifo: g.fifo }) {
        Ok(()) => Json(g).into_response(),
        Err(e @ wasmq_engine::EngineError::Invalid(_)) => error(400, e.to_string()),
        Err(e @ wasmq_engine::EngineError::ReadOnly(_)) => error(409, e.to_string()),
        Err(e) => error(500, e.to_string()),
    }
}

async fn reset_offset(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<ResetOffset>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let r = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    match s.engine.reset_offsets(&name, &r.topic, &r.to) {
        Ok(_) => describe_group(State(s), Path(name)).await,
        Err(e) => error(400, e.to_string()),
    }
}

/// Most dead letters one listing returns.
const DEAD_LETTERS_LIST_MAX: usize = 1000;

async fn list_dead_letters(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    let dlq = wasmq_engine::dlq_topic(&name);
    let (min, _) = s.engine.store().queue_bounds(&dlq, 0);
    let read = match s.engine.pull(&dlq, 0, min, DEAD_LETTERS_LIST_MAX, 64 << 20) {
        Ok(r) => r,
        Err(wasmq_engine::PullError::UnknownTopic(_)) => return Json(Vec::<DeadLetter>::new()).into_response(),
        Err(e) => return error(500, e.to_string()),
    };
    let items: Vec<DeadLetter> = read
        .messages
        .into_iter()
        .map(|m| DeadLetter {
            queue_offset: m.queue_offset,
            message_id: m.properties.unique_id.clone().unwrap_or_default(),
            origin_topic: m
                .properties
                .user
                .iter()
                .find(|(k, _)| k == wasmq_engine::ORIGIN_TOPIC_PROPERTY)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            reconsume_times: m.properties.reconsume_times,
            store_ms: m.store_ms,
            body_preview: String::from_utf8_lossy(&m.body[..m.body.len().min(256)]).into_owned(),
        })
        .collect();
    Json(items).into_response()
}

async fn resend_dead_letter(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<Resend>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let r = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    match s.engine.resend_dead_letter(&name, r.queue_offset) {
        Ok((topic, queue_id, queue_offset)) => Json(Resent { topic, queue_id, queue_offset }).into_response(),
        Err(e) => error(400, e.to_string()),
    }
}

/// Every dead letter of the group sent back to its origin topic (the DLQ keeps its copies).
async fn resend_all_dead_letters(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    let dlq = wasmq_engine::dlq_topic(&name);
    let (min, max) = s.engine.store().queue_bounds(&dlq, 0);
    if s.engine.topic(&dlq).is_none() {
        return error(404, format!("group {name} has no dead letters"));
    }
    let (mut resent, mut errors) = (0u64, Vec::new());
    for offset in min..max {
        match s.engine.resend_dead_letter(&name, offset) {
            Ok(_) => resent += 1,
            Err(e) => errors.push(format!("offset {offset}: {e}")),
        }
    }
    Json(wasmq_admin_types::ResentAll { resent, errors }).into_response()
}

/// `[[at_ms, lag], …]`: the group's lag at each sample of the last ten minutes.
async fn group_lag_history(State(s): State<AdminState>, Path(name): Path<String>) -> Json<Vec<(u64, u64)>> {
    Json(s.stats.group_lag(&name))
}

/// `[[at_ms, messages_per_second], …]`: the topic's produce rate over the last ten minutes.
async fn topic_rate(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    if s.engine.topic(&name).is_none() {
        return error(404, format!("topic {name} does not exist"));
    }
    Json(s.stats.topic_rate(&name)).into_response()
}

async fn delete_group(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.engine.delete_group(&name) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(409, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(app: &Router, method: &str, uri: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
        let mut req = axum::http::Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    const TOKEN: &str = "0123456789abcdef0123";
    const READ_TOKEN: &str = "read-only-token-0123456789";

    /// The admin router over a new engine in `dir`.
    fn app(dir: &std::path::Path) -> (Router, Arc<Engine>) {
        let (router, engine, _) = app_with_service(dir);
        (router, engine)
    }

    fn app_with_service(dir: &std::path::Path) -> (Router, Arc<Engine>, Arc<wasmq_service::Service>) {
        let (store, _) = wasmq_store::Store::open(wasmq_store::StoreConfig::small_for_tests(dir.join("s"))).unwrap();
        let engine = Arc::new(Engine::open(Arc::new(store), dir.join("c"), "b", Arc::new(wasmq_store::SystemClock)).unwrap());
        let limits = wasmq_plugin_host::Limits { instances_max: 4, ..Default::default() };
        let plugins = Arc::new(wasmq_plugin_host::PluginRegistry::open(dir, limits).unwrap());
        let replication = wasmq_service::Replication::new(&engine, "b", 0, wasmq_service::Role::Master, wasmq_service::Mode::Async, 0);
        let service = Arc::new(wasmq_service::Service::new(Arc::clone(&engine), plugins.clone(), Arc::clone(&replication)));
        let state = AdminState {
            service: Arc::clone(&service),
            engine: Arc::clone(&engine),
            plugins,
            producers: Arc::new(wasmq_service::AllProducers::default()),
            replication,
            stats: Arc::default(),
            token: TOKEN.into(),
            read_token: Some(READ_TOKEN.into()),
            listen: "l".into(),
            admin_listen: "a".into(),
            started_ms: crate::now_ms(),
            cluster: "c".into(),
            namesrvs: Vec::new(),
            names: None,
            controller: None,
        };
        (router(state), engine, service)
    }

    /// Families the Grafana dashboard in docs/ names that `text` (a /metrics answer) lacks.
    fn dashboard_families_missing(text: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut missing = Vec::new();
        for p in dashboard["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for (i, _) in expr.match_indices("wasmq_") {
                    let name: String = expr[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    let base = ["_total", "_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
                    if !text.contains(&format!("# TYPE {base} ")) && !missing.contains(&name) {
                        missing.push(name);
                    }
                }
            }
        }
        missing
    }

    /// Every family the dashboard asks for is exported once it has a sample.
    #[tokio::test]
    async fn the_grafana_dashboard_asks_only_for_exported_families() {
        use wasmq_service::metrics::{DeliveryLabels, GroupLabels, TopicLabels};
        let dir = tempfile::tempdir().unwrap();
        let (app, _engine, service) = app_with_service(dir.path());
        let m = service.metrics();
        let topic = TopicLabels { topic: "t".into() };
        m.messages_in.get_or_create(&topic).inc();
        m.bytes_in.get_or_create(&topic).inc();
        let out = DeliveryLabels { topic: "t".into(), group: "g".into() };
        m.messages_out.get_or_create(&out).inc();
        m.bytes_out.get_or_create(&out).inc();
        m.request("native", "send", true, std::time::Duration::from_micros(10));
        m.connections.get_or_create(&wasmq_service::metrics::ProtocolLabels { protocol: "native" }).inc();
        m.retries.get_or_create(&GroupLabels { group: "g".into() }).inc();
        m.dead_letters.get_or_create(&GroupLabels { group: "g".into() }).inc();
        let (s, text) = call_text(&app, "GET", "/metrics", &[("authorization", &format!("Bearer {TOKEN}"))], "").await;
        assert_eq!(s, 200);
        assert_eq!(dashboard_families_missing(&text), Vec::<String>::new(), "{text}");
    }

    /// A request with extra headers; the status and the body as text.
    async fn call_text(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut req = axum::http::Request::builder().method(method).uri(uri).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
    }

    #[tokio::test]
    async fn roles_origins_messages_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let (app, engine) = app(dir.path());
        let read = Some(READ_TOKEN);
        // The read-only token reads and changes nothing; the API says so.
        assert_eq!(call(&app, "GET", "/api/v1/topics", read, "").await.0, 200);
        let (s, v) = call(&app, "POST", "/api/v1/topics", read, r#"{"name":"orders","queues":2}"#).await;
        assert_eq!(s, 403);
        assert!(v["error"].as_str().unwrap().contains("read-only"), "{v}");
        assert!(engine.topic("orders").is_none());
        assert_eq!(call(&app, "DELETE", "/api/v1/groups/g", read, "").await.0, 403);
        // Another origin is refused even with the admin token; the console's own origin is not.
        let bearer = format!("Bearer {TOKEN}");
        let evil = [("authorization", bearer.as_str()), ("host", "127.0.0.1:7071"), ("origin", "https://evil.example")];
        assert_eq!(call_text(&app, "POST", "/api/v1/topics", &evil, r#"{"name":"orders","queues":2}"#).await.0, 403);
        let own = [("authorization", bearer.as_str()), ("host", "127.0.0.1:7071"), ("origin", "https://127.0.0.1:7071")];
        assert_eq!(call_text(&app, "POST", "/api/v1/topics", &own, r#"{"name":"orders","queues":2}"#).await.0, 201);

        // A test message, found by id, by key and by browsing its queue.
        let (s, sent) = call(
            &app,
            "POST",
            "/api/v1/topics/orders/messages",
            Some(TOKEN),
            r#"{"body":"{\"n\":1}","key":"order-7","tags":"new","queue_id":1}"#,
        )
        .await;
        assert_eq!(s, 201, "{sent}");
        let id = sent["message_id"].as_str().unwrap();
        let (s, m) = call(&app, "GET", &format!("/api/v1/messages/{id}"), read, "").await;
        assert_eq!(
            (s, m["queue_id"].as_u64(), m["tags"].as_str(), m["body_base64"].as_str()),
            (200, Some(1), Some("new"), Some("eyJuIjoxfQ=="))
        );
        let (s, found) = call(&app, "GET", "/api/v1/topics/orders/messages?key=order-7", read, "").await;
        assert_eq!((s, found[0]["unique_id"].as_str()), (200, Some(id)));
        let (s, page) = call(&app, "GET", "/api/v1/topics/orders/queues/1/messages?offset=0&count=10", read, "").await;
        assert_eq!((s, page["messages"].as_array().map(Vec::len), page["next_offset"].as_u64()), (200, Some(1), Some(1)));
        let (s, page) = call(&app, "GET", "/api/v1/topics/orders/queues/1/messages?time=0", read, "").await;
        assert_eq!((s, page["messages"][0]["unique_id"].as_str()), (200, Some(id)), "browsing from a time");
        // Bad input: clear errors.
        assert_eq!(call(&app, "GET", "/api/v1/messages/nope", read, "").await.0, 404);
        assert_eq!(call(&app, "GET", "/api/v1/topics/orders/queues/9/messages", read, "").await.0, 404);
        assert_eq!(call(&app, "GET", "/api/v1/topics/nope/messages?key=k", read, "").await.0, 404);
        assert_eq!(call(&app, "POST", "/api/v1/topics/nope/messages", Some(TOKEN), r#"{"body":"x"}"#).await.0, 404);
        assert_eq!(call(&app, "POST", "/api/v1/topics/%HALF%/messages", Some(TOKEN), r#"{"body":"x"}"#).await.0, 400);
        assert_eq!(call(&app, "POST", "/api/v1/topics/orders/messages", Some(TOKEN), r#"{"body":"x","queue_id":5}"#).await.0, 400);

        // Prometheus metrics, for either token.
        engine.commit_offset("billing", "orders", 1, 0).unwrap();
        let (s, text) = call_text(&app, "GET", "/metrics", &[("authorization", &format!("Bearer {READ_TOKEN}"))], "").await;
        assert_eq!(s, 200);
        assert!(text.contains("# TYPE wasmq_log_end_offset gauge"), "{text}");
        assert!(text.contains("wasmq_queue_max_offset{topic=\"orders\",queue=\"1\"} 1"), "{text}");
        assert!(text.contains("wasmq_group_lag{group=\"billing\",topic=\"orders\",queue=\"1\"} 1"), "{text}");
        assert!(!text.contains("%HALF%"), "internal topics stay out: {text}");
        // The service's counters follow, and the exposition ends as OpenMetrics requires.
        assert!(text.contains("# TYPE wasmq_messages_in counter") && text.contains("# TYPE wasmq_transactions_ended counter"), "{text}");
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1, "{text}");
        assert!(dashboard_families_missing(&text).contains(&"wasmq_retries_total".to_owned()), "a family shows once it has a sample");
        assert_eq!(call_text(&app, "GET", "/metrics", &[], "").await.0, 401);
        // The console's page needs no token (it asks for one); unknown API paths stay JSON 404s.
        let (s, page) = call_text(&app, "GET", "/", &[], "").await;
        assert_eq!(s, 200);
        // The build script built the console unless told not to.
        let built = env!("WASMQ_CONSOLE_BUILT") == "1";
        assert_eq!(crate::console::built(), built);
        assert!(page.contains(if built { "src=\"boot.js\"" } else { "WASMQ_CONSOLE=off" }), "{page}");
        assert_eq!(call(&app, "GET", "/api/v1/nope", Some(TOKEN), "").await.0, 404);

        // Charts: rate and lag history (sampled by the broker every few seconds), and a DLQ
        // resent whole.
        assert_eq!(call(&app, "GET", "/api/v1/topics/orders/rate", read, "").await, (200, serde_json::json!([])));
        assert_eq!(call(&app, "GET", "/api/v1/topics/nope/rate", read, "").await.0, 404);
        assert_eq!(call(&app, "GET", "/api/v1/groups/billing/lag-history", read, "").await.0, 200);
        assert_eq!(call(&app, "POST", "/api/v1/groups/billing/dlq/resend-all", Some(TOKEN), "").await.0, 404);
        let log_offset = m["log_offset"].as_u64().unwrap();
        engine.send_back("billing", "orders", 1, log_offset, true, None).unwrap();
        let (s, v) = call(&app, "POST", "/api/v1/groups/billing/dlq/resend-all", Some(TOKEN), "").await;
        assert_eq!((s, v["resent"].as_u64()), (200, Some(1)), "{v}");
        assert_eq!(engine.store().queue_bounds("orders", 1).1 + engine.store().queue_bounds("orders", 0).1, 2, "back on its topic");
        assert_eq!(call(&app, "POST", "/api/v1/groups/billing/dlq/resend-all", read, "").await.0, 403);
    }

    #[tokio::test]
    async fn cluster_broker_retention_uploads_and_the_openapi_document() {
        let dir = tempfile::tempdir().unwrap();
        let (app, engine) = app(dir.path());
        let read = Some(READ_TOKEN);
        // The broker and the cluster as this (name-server-less) master sees it.
        let (s, b) = call(&app, "GET", "/api/v1/broker", read, "").await;
        assert_eq!((s, b["role"].as_str(), b["cluster"].as_str()), (200, Some("master"), Some("c")));
        assert!(b["disk_total_bytes"].as_u64().unwrap() >= b["disk_used_bytes"].as_u64().unwrap(), "{b}");
        assert!(b["disk_used_bytes"].as_u64().unwrap() > 0 && b["log_bytes"].as_u64().unwrap() > 0, "{b}");
        let (s, c) = call(&app, "GET", "/api/v1/cluster", read, "").await;
        assert_eq!((s, c["source"].as_str(), c["error"].is_null()), (200, Some("local"), true), "{c}");
        assert_eq!(c["broker_sets"][0]["broker_name"], "b");
        assert_eq!(
            (c["broker_sets"][0]["brokers"][0]["role"].as_str(), c["broker_sets"][0]["brokers"][0]["version"].as_str()),
            (Some("master"), Some(env!("CARGO_PKG_VERSION")))
        );
        for path in ["/api/v1/replicas", "/api/v1/transactions", "/api/v1/scheduled", "/api/v1/attachments"] {
            assert_eq!(call(&app, "GET", path, read, "").await.0, 200, "{path}");
            assert_eq!(call(&app, "GET", path, None, "").await.0, 401, "{path}");
        }

        // A topic with its own retention, shown back; a bad one refused.
        let (s, v) = call(&app, "POST", "/api/v1/topics", Some(TOKEN), r#"{"name":"clicks","queues":2,"retention_ms":60000}"#).await;
        assert_eq!((s, v["retention_ms"].as_u64()), (201, Some(60_000)), "{v}");
        assert_eq!(call(&app, "GET", "/api/v1/topics/clicks", read, "").await.1["retention_ms"], 60_000);
        assert_eq!(engine.topic("clicks").unwrap().retention_ms, Some(60_000));
        let (s, v) = call(&app, "POST", "/api/v1/topics", Some(TOKEN), r#"{"name":"never","queues":2,"retention_ms":0}"#).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("retention"), "{v}");
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(TOKEN), r#"{"name":"many","queues":100000}"#).await.0, 400);

        // An upload over the limit is refused with the limit in words.
        let big = "x".repeat(wasmq_plugin_host::PLUGIN_BYTES_MAX + 10);
        let (s, v) = call(&app, "POST", "/api/v1/plugins", Some(TOKEN), &big).await;
        assert_eq!(s, 413, "{v}");
        assert!(v["error"].as_str().unwrap().contains("10 MiB"), "{v}");
        assert_eq!(call(&app, "POST", "/api/v1/plugins", read, "\0asm").await.0, 403, "read-only uploads nothing");
        // Filters: nothing to detach; the read-only token attaches nothing; an unknown plugin.
        let attach = r#"{"plugin":"nope","version":1}"#;
        assert_eq!(call(&app, "DELETE", "/api/v1/groups/g/filters/clicks", Some(TOKEN), "").await.0, 404);
        assert_eq!(call(&app, "PUT", "/api/v1/groups/g/filters/clicks", read, attach).await.0, 403);
        assert_eq!(call(&app, "PUT", "/api/v1/groups/g/filters/clicks", Some(TOKEN), attach).await.0, 404);
        assert_eq!(call(&app, "GET", "/api/v1/groups/g/dlq", read, "").await, (200, serde_json::json!([])), "no dead letters yet");

        // The API's description, without a token.
        let (s, doc) = call(&app, "GET", "/api/v1/openapi.json", None, "").await;
        assert_eq!((s, doc["openapi"].as_str()), (200, Some("3.1.0")));
        assert!(doc["paths"]["/api/v1/cluster"]["get"].is_object());
    }

    #[tokio::test]
    async fn topics_crud_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let (app, app_engine) = app(dir.path());
        let token = TOKEN;
        assert_eq!(call(&app, "GET", "/api/v1/topics", None, "").await.0, 401);
        assert_eq!(call(&app, "GET", "/api/v1/topics", Some("wrong-token-xxxxxx"), "").await.0, 401);
        let (s, v) = call(&app, "POST", "/api/v1/topics", Some(token), r#"{"name":"orders","queues":4}"#).await;
        assert_eq!((s, v["queues"].as_u64()), (201, Some(4)));
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(token), r#"{"name":"orders","queues":4}"#).await.0, 409);
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(token), r#"{"name":"bad name","queues":4}"#).await.0, 400);
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(token), r#"{"name":"x","queues":0}"#).await.0, 400);
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(token), "not json").await.0, 400);
        let (s, v) = call(&app, "GET", "/api/v1/topics/orders", Some(token), "").await;
        assert_eq!((s, v["queues"].as_array().map(Vec::len)), (200, Some(4)));
        assert_eq!(call(&app, "GET", "/api/v1/topics", Some(token), "").await.1.as_array().map(Vec::len), Some(1));
        assert_eq!(call(&app, "GET", "/api/v1/broker", Some(token), "").await.1["topics"], 1);
        // Plugins: bad uploads and attachments are refused with the reason.
        let (s, v) = call(&app, "POST", "/api/v1/plugins", Some(token), "definitely not wasm").await;
        assert_eq!(s, 400);
        assert!(v["error"].as_str().unwrap().contains("bad magic"), "{v}");
        assert_eq!(call(&app, "POST", "/api/v1/plugins", Some(token), "").await.0, 400);
        let attach = r#"{"plugin":"nope","version":1}"#;
        assert_eq!(call(&app, "PUT", "/api/v1/topics/orders/plugins/router", Some(token), attach).await.0, 404, "unknown plugin");
        assert_eq!(call(&app, "PUT", "/api/v1/topics/ghost/plugins/router", Some(token), attach).await.0, 404, "unknown topic");
        let (s, v) = call(&app, "PUT", "/api/v1/topics/orders/plugins/filter", Some(token), attach).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(
            call(&app, "PUT", "/api/v1/topics/orders/plugins/router", Some(token), r#"{"plugin":"x","version":1,"on_error":"maybe"}"#)
                .await
                .0,
            400
        );
        assert_eq!(call(&app, "DELETE", "/api/v1/topics/orders/plugins/router", Some(token), "").await.0, 404);
        assert_eq!(call(&app, "GET", "/api/v1/plugins", Some(token), "").await.1.as_array().map(Vec::len), Some(0));
        assert_eq!(call(&app, "GET", "/api/v1/plugins/nope", Some(token), "").await.0, 404);
        // Groups: offsets, lag, reset, delete.
        let engine = &app_engine;
        engine
            .send("orders", Some(1), vec![wasmq_store::NewMessage { body: bytes::Bytes::from_static(b"x"), ..Default::default() }; 3])
            .unwrap();
        engine.commit_offset("g1", "orders", 1, 1).unwrap();
        let (s, v) = call(&app, "GET", "/api/v1/groups/g1", Some(token), "").await;
        assert_eq!(s, 200);
        assert_eq!(v["queues"].as_array().map(Vec::len), Some(4), "every queue of the topic it reads: {v}");
        assert_eq!((v["queues"][1]["lag"].as_u64(), v["queues"][1]["committed"].as_u64()), (Some(2), Some(1)));
        assert_eq!((v["queues"][0]["lag"].as_u64(), v["queues"][0]["committed"].as_u64()), (Some(0), None), "not committed yet");
        assert_eq!(call(&app, "GET", "/api/v1/groups", Some(token), "").await.1[0]["name"], "g1");
        let (s, v) = call(&app, "POST", "/api/v1/groups/g1/reset-offset", Some(token), r#"{"topic":"orders","to":"latest"}"#).await;
        assert_eq!(s, 200);
        assert_eq!(v["queues"].as_array().unwrap().iter().map(|q| q["lag"].as_u64().unwrap()).sum::<u64>(), 0);
        let (s, _) = call(&app, "POST", "/api/v1/groups/g1/reset-offset", Some(token), r#"{"topic":"orders","to":"0"}"#).await;
        assert_eq!(s, 200, "a timestamp before everything is the earliest offset");
        assert_eq!(engine.query_offset("g1", "orders", 1), Some(0));
        assert_eq!(call(&app, "POST", "/api/v1/groups/g1/reset-offset", Some(token), r#"{"topic":"orders","to":"soon"}"#).await.0, 400);
        assert_eq!(call(&app, "DELETE", "/api/v1/groups/g1", Some(token), "").await.0, 204);
        assert_eq!(call(&app, "GET", "/api/v1/groups/g1", Some(token), "").await.0, 404);

        assert_eq!(call(&app, "DELETE", "/api/v1/topics/orders", Some(token), "").await.0, 204);
        assert_eq!(call(&app, "GET", "/api/v1/topics/orders", Some(token), "").await.0, 404);
    }
}
