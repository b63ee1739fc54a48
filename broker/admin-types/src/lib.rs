//! The admin API's JSON bodies (`/api/v1`). Plain serde types with no I/O, so the broker, the
//! client, the CLI and the (wasm) console share one definition.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/broker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BrokerInfo {
    pub broker_name: String,
    pub version: String,
    pub listen: String,
    pub admin_listen: String,
    /// `sync` or `async`.
    pub flush: String,
    pub log_min_offset: u64,
    pub log_end_offset: u64,
    pub log_durable_offset: u64,
    pub store_failure: Option<String>,
    pub topics: usize,
    pub cluster: String,
    pub broker_id: u32,
    /// `master` or `slave`.
    pub role: String,
    pub started_ms: u64,
    pub uptime_ms: u64,
    /// Disk space the CommitLog's segment files take.
    pub log_bytes: u64,
    /// The file system holding the data directory.
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
}

/// `POST /api/v1/groups/{name}/dlq/resend-all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResentAll {
    pub resent: u64,
    /// Dead letters that could not be resent, with why.
    pub errors: Vec<String>,
}

/// `GET /api/v1/cluster`: every broker set, from the name servers when the broker has some,
/// else this broker and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClusterView {
    pub cluster: String,
    /// `namesrv` (what the name servers know) or `local` (this broker and its replicas).
    pub source: String,
    pub name_servers: Vec<String>,
    /// Why the name servers could not be asked, when they could not.
    pub error: Option<String>,
    pub broker_sets: Vec<BrokerSetView>,
}

/// The failover controller as the broker's admin API asks it (`GET /api/v1/controller`): its
/// nodes and leader, and each broker set's master, epoch, in-sync set and members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ControllerView {
    /// The controller nodes this broker is configured with (empty: it is not under a failover
    /// controller, and its role is its own settings').
    pub nodes: Vec<ControllerNode>,
    /// The leader's node id and Raft term, when a leader answered.
    pub leader: Option<u64>,
    pub term: Option<u64>,
    /// Why no leader answered, when none did.
    pub error: Option<String>,
    pub sets: Vec<ControllerSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ControllerNode {
    /// Null for a configured address the leader does not list.
    pub id: Option<u64>,
    pub addr: String,
    /// `leader`, `follower` (heard by the leader within the election timeout), `down`, or
    /// `unknown` (no leader answered).
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ControllerSet {
    pub broker_name: String,
    pub master: Option<u32>,
    /// Raised at every change of master.
    pub epoch: u64,
    /// The members that may be elected without losing an acknowledged message.
    pub in_sync: Vec<u32>,
    pub members: Vec<ControllerMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ControllerMember {
    pub broker_id: u32,
    pub addr: String,
    /// `master` or `slave`.
    pub role: String,
    pub in_sync: bool,
    /// From its last heartbeat to the leader (null: none since that node became leader).
    pub log_end_offset: Option<u64>,
    /// Bytes behind the master, by the log ends both last reported.
    pub lag_bytes: Option<u64>,
    pub heard_ms_ago: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BrokerSetView {
    pub broker_name: String,
    /// Master first, then slaves by id.
    pub brokers: Vec<ClusterBroker>,
}

/// A broker in a cluster view; what is not known (a slave seen only from its master) is null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClusterBroker {
    pub broker_id: u32,
    /// `master` or `slave`.
    pub role: String,
    pub addr: Option<String>,
    pub admin_addr: String,
    pub version: Option<String>,
    pub uptime_ms: Option<u64>,
    pub log_end_offset: u64,
    /// Bytes behind its master (slaves).
    pub lag_bytes: Option<u64>,
    pub log_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    pub topics: Option<u32>,
    /// How long since the name servers last heard from it.
    pub last_seen_ms_ago: Option<u64>,
    /// `up`, or `down` as the name servers hold it: its connection to them closed, or it missed
    /// three registrations (without name servers, a slave: once its master has not heard from it
    /// for three of its fetch waits).
    #[serde(default)]
    pub status: String,
    /// Since when a down broker is down (ms since the epoch).
    #[serde(default)]
    pub down_since_ms: Option<u64>,
}

/// An item of `GET /api/v1/topics`; also the answer to a create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TopicSummary {
    pub name: String,
    pub queues: u32,
    pub created_ms: u64,
    /// The topic's own retention (null: the log's).
    #[serde(default)]
    pub retention_ms: Option<u64>,
    #[serde(default)]
    pub message_type: TopicMessageType,
}

/// The kind of message a topic takes (RocketMQ 5's topic message type): a send of another kind
/// is refused. `MIXED`, the default, takes every kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum TopicMessageType {
    Normal,
    /// Messages with a message group (ordering key).
    Fifo,
    /// Messages with a delivery time.
    Delay,
    /// Transactional messages.
    Transaction,
    #[default]
    Mixed,
}

impl TopicMessageType {
    pub const ALL: [Self; 5] = [Self::Normal, Self::Fifo, Self::Delay, Self::Transaction, Self::Mixed];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Fifo => "FIFO",
            Self::Delay => "DELAY",
            Self::Transaction => "TRANSACTION",
            Self::Mixed => "MIXED",
        }
    }
}

impl std::fmt::Display for TopicMessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TopicMessageType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("message type {s:?}: one of {}", Self::ALL.map(Self::as_str).join(", ")))
    }
}

/// `POST /api/v1/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateTopic {
    pub name: String,
    pub queues: u32,
    /// Messages stay readable this long (the log's own retention still applies when shorter).
    #[serde(default)]
    pub retention_ms: Option<u64>,
    #[serde(default)]
    pub message_type: TopicMessageType,
}

/// `PATCH /api/v1/topics/{name}`: what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateTopic {
    pub message_type: TopicMessageType,
}

/// `GET /api/v1/topics/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TopicDetail {
    pub name: String,
    pub created_ms: u64,
    #[serde(default)]
    pub retention_ms: Option<u64>,
    #[serde(default)]
    pub message_type: TopicMessageType,
    pub queues: Vec<QueueOffsets>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct QueueOffsets {
    pub queue_id: u32,
    pub min_offset: u64,
    pub max_offset: u64,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiError {
    pub error: String,
}

/// An item of `GET /api/v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GroupSummary {
    pub name: String,
    /// `clustering`, `broadcasting`, or `none` when no member is connected.
    pub mode: String,
    pub members: usize,
}

/// `PUT /api/v1/groups/{name}`: a consumer group's own settings (RocketMQ's subscription group
/// config); setting them creates the group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GroupSettings {
    /// FIFO consumption for RocketMQ 5 consumers (message by message): one batch of a queue in
    /// flight at a time for the group, so each message group is consumed in order, the next
    /// message only after the ack.
    #[serde(default)]
    pub fifo: bool,
}

/// `GET /api/v1/groups/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GroupDetail {
    pub name: String,
    pub mode: String,
    pub generation: u64,
    /// The group's FIFO setting (see [`GroupSettings`]).
    #[serde(default)]
    pub fifo: bool,
    pub members: Vec<GroupMember>,
    /// One per (topic, queue) the group has committed for or is assigned.
    pub queues: Vec<GroupQueue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GroupMember {
    pub client_id: String,
    /// `topic/queue` items assigned to the member (none for a member that receives message by
    /// message from every queue, as RocketMQ 5 gRPC consumers do).
    pub queues: Vec<String>,
    /// The protocol it speaks (`native`, `grpc`), and its language and version as it says them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub language: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GroupQueue {
    pub topic: String,
    pub queue_id: u32,
    pub committed: Option<u64>,
    pub max_offset: u64,
    /// Messages not yet committed.
    pub lag: u64,
    /// Age in ms of the oldest message not yet committed (0 without lag).
    pub lag_ms: u64,
    pub owner: Option<String>,
}

/// `POST /api/v1/groups/{name}/reset-offset`: move the group's offsets of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResetOffset {
    pub topic: String,
    /// `earliest`, `latest`, or a timestamp in ms since the epoch (the first message stored at
    /// or after it).
    pub to: String,
}

/// An item of `GET /api/v1/groups/{name}/dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeadLetter {
    pub queue_offset: u64,
    pub message_id: String,
    pub origin_topic: String,
    pub reconsume_times: u32,
    pub store_ms: u64,
    /// The body as text (lossy), at most 256 bytes of it.
    pub body_preview: String,
}

/// `POST /api/v1/groups/{name}/dlq/resend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Resend {
    pub queue_offset: u64,
}

/// The answer to a resend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Resent {
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
}

/// A plugin version: the answer to an upload (`POST /api/v1/plugins`, body: the `.wasm`), and an
/// item of a plugin's versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PluginVersion {
    pub name: String,
    /// The broker's version number for this name: 1, 2, … in upload order. Immutable.
    pub version: u32,
    /// SHA-256 of the uploaded bytes: the same bytes uploaded again give the same version.
    pub sha256: String,
    pub size: usize,
    /// The author's version label (the plugin crate's version).
    pub label: String,
    /// `router`, `ordering-key`, `filter`.
    pub roles: Vec<String>,
    /// The message fields it reads: `key`, `tags`, `properties`, `body`.
    pub needs: Vec<String>,
    pub uploaded_ms: u64,
    /// False when these bytes were uploaded before (the existing version is returned).
    #[serde(default)]
    pub created: bool,
}

/// An item of `GET /api/v1/plugins`; also `GET /api/v1/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PluginDetail {
    pub name: String,
    pub versions: Vec<PluginVersion>,
    /// Where its versions are attached, with each attachment's stats.
    pub attachments: Vec<AttachmentView>,
}

/// `PUT /api/v1/topics/{topic}/plugins/{role}` (role `router` or `ordering-key`) and
/// `PUT /api/v1/groups/{group}/filters/{topic}`: attach a pinned plugin version, or swap the
/// attached one (takes effect at the next batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AttachPlugin {
    pub plugin: String,
    pub version: u32,
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// `fail-open` (default: carry on as without the plugin) or `fail-closed` (refuse the send;
    /// dead-letter the message on delivery).
    #[serde(default)]
    pub on_error: Option<String>,
}

/// An attachment (`GET /api/v1/attachments`, and the answer to an attach).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AttachmentView {
    /// `router`, `ordering-key` or `filter`.
    pub role: String,
    pub topic: String,
    /// The consumer group (filters).
    pub group: Option<String>,
    pub plugin: String,
    pub version: u32,
    pub sha256: String,
    pub config: std::collections::BTreeMap<String, String>,
    pub on_error: String,
    pub attached_ms: u64,
    /// Why the attachment is not running (its module failed to load at start-up); its
    /// failure policy then applies to every message.
    pub error: Option<String>,
    pub stats: PluginStats,
}

/// Counters of one attachment since it was attached (or the broker started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PluginStats {
    pub calls: u64,
    pub messages: u64,
    pub errors: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub memory_exhausted: u64,
    pub stack_overflows: u64,
    pub breaker_trips: u64,
    pub breaker_open: bool,
    pub instances: u64,
    /// Largest linear memory any instance was granted, in bytes (at most the sandbox's cap).
    #[serde(default)]
    pub memory_peak_bytes: u64,
    /// Longest call stopped at its deadline, host side included, in nanoseconds (0: none was).
    #[serde(default)]
    pub timeout_call_max_ns: u64,
    /// Mean time per message, host side included.
    pub ns_per_message: f64,
    /// Messages for which the failure policy decided (the plugin could not).
    pub policy_applied: u64,
    /// The plugin's own counters.
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// `GET /api/v1/transactions`: undecided transactions and what happened to the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Transactions {
    pub pending: Vec<PendingTransactions>,
    /// Connected producers per producer group (those a check-back can reach).
    pub producers: Vec<ProducerGroupLive>,
    /// Counters since the broker started.
    pub committed: u64,
    pub rolled_back: u64,
    /// Still unknown after the maximum number of checks (or their topic was deleted).
    pub discarded: u64,
    pub checks_sent: u64,
    pub unknown_answers: u64,
    /// Ends of transactions that had already ended (changed nothing).
    pub late_ends: u64,
}

/// Undecided transactions of one (topic, producer group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PendingTransactions {
    pub topic: String,
    pub producer_group: String,
    pub pending: u64,
    pub oldest_stored_ms: u64,
    /// Checks sent for these transactions in total, and the most for one.
    pub checks: u64,
    pub most_checks: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProducerGroupLive {
    pub producer_group: String,
    pub connections: usize,
}

/// `GET /api/v1/scheduled`: scheduled messages not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Scheduled {
    pub pending: u64,
    /// Due now and not yet moved (normally 0 or a handful).
    pub overdue: u64,
    pub next_due_ms: Option<u64>,
    /// Cumulative: how many are due within each horizon from now.
    pub due_within: Vec<DueWithin>,
    /// Since the broker started: delivered, and dropped because their topic was deleted.
    pub released: u64,
    pub dropped: u64,
    /// Since the broker started: cancelled by their producer before they were due.
    #[serde(default)]
    pub recalled: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DueWithin {
    pub within_ms: u64,
    pub count: u64,
}

/// `GET /api/v1/replicas`: this broker's place in its broker set and replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReplicaStatus {
    pub broker_name: String,
    pub broker_id: u32,
    /// `master` or `slave`.
    pub role: String,
    /// `async`, or `sync` with the number of slaves a send waits for.
    pub replication: String,
    pub listen: String,
    pub admin_listen: String,
    pub log_end_offset: u64,
    pub log_durable_offset: u64,
    /// On a master: its slaves.
    pub slaves: Vec<SlaveStatus>,
    /// On a slave: its master.
    pub master: Option<MasterStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SlaveStatus {
    pub broker_id: u32,
    pub admin_addr: String,
    /// Everything below this is on the slave.
    pub acked_offset: u64,
    pub lag_bytes: u64,
    /// How long since the slave last held everything the master had (0 when it does).
    pub lag_ms: u64,
    pub connected: bool,
    pub last_seen_ms_ago: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MasterStatus {
    pub addr: String,
    pub connected: bool,
    /// The master's log end at the last contact.
    pub master_end_offset: u64,
    pub lag_bytes: u64,
    pub last_contact_ms_ago: Option<u64>,
    pub error: Option<String>,
}

/// A stored message (`GET /messages/{id}`, `GET /topics/{t}/messages?key=`, queue browsing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MessageView {
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub log_offset: u64,
    pub store_ms: u64,
    pub born_ms: u64,
    pub unique_id: Option<String>,
    pub tags: Option<String>,
    pub keys: Vec<String>,
    pub properties: Vec<(String, String)>,
    pub reconsume_times: u32,
    pub delivery_ms: Option<u64>,
    pub body_size: usize,
    /// The body (standard base64), cut at 64 KiB.
    pub body_base64: String,
    pub body_truncated: bool,
}

/// A page of a queue (`GET /topics/{t}/queues/{q}/messages?offset=N|time=MS&count=C`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct QueuePage {
    pub messages: Vec<MessageView>,
    /// Where the next page starts.
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
}

/// `POST /topics/{t}/messages`: a test message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SendMessage {
    pub body: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub properties: Vec<(String, String)>,
    /// A queue of the topic (default: the broker's round robin).
    #[serde(default)]
    pub queue_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SentMessage {
    pub message_id: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub log_offset: u64,
    /// `ok`, or (synchronous replication) why it is only on the master.
    #[serde(default)]
    pub status: String,
}

/// `POST /api/v1/login`: a user name and password. Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("user", &self.user).finish_non_exhaustive()
    }
}

/// The answer to a login: the session (also set as the `wasmq_session` cookie, for the
/// console; tools send it as `Authorization: Bearer <token>`) and who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Session {
    pub token: String,
    pub me: Me,
}

/// `GET /api/v1/me`: who the request's credentials name and what the console may show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Me {
    pub user: String,
    pub roles: Vec<String>,
    /// The highest built-in role (`viewer`, `operator`, `admin`), if any: what the console shows.
    #[serde(default)]
    pub console_role: Option<String>,
}

/// A user as the API shows it (no credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UserView {
    pub name: String,
    pub roles: Vec<String>,
    /// Whether the user has an access secret for RocketMQ 5 clients (its access key is its name).
    pub access_key: bool,
    /// Client certificate names (subject CN, DNS or email SAN) that log in as this user.
    #[serde(default)]
    pub certificates: Vec<String>,
}

/// `POST /api/v1/users`. Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateUser {
    pub name: String,
    pub password: String,
    /// Built-in (`viewer`, `operator`, `admin`) or any other role name policies use.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser").field("name", &self.name).field("roles", &self.roles).finish_non_exhaustive()
    }
}

/// `PATCH /api/v1/users/{name}`: what to change (absent: unchanged). Changing one's own
/// password needs the current one.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateUser {
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub current_password: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub certificates: Option<Vec<String>>,
}

impl std::fmt::Debug for UpdateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateUser").field("roles", &self.roles).field("certificates", &self.certificates).finish_non_exhaustive()
    }
}

/// `POST /api/v1/users/{name}/access-key`: a new access secret, shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccessKey {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey").field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

/// A policy: `subject` (`user:NAME` or `role:NAME`) may (`allow`) or may not (`deny`) do
/// `actions` (produce, consume, create, delete, alter, describe, admin) on `resource`
/// (`topic:NAME`, `group:NAME` — NAME may end with `*` — or `cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PolicyView {
    pub subject: String,
    pub resource: String,
    pub actions: Vec<String>,
    /// `allow` (the default) or `deny`; a matching deny wins.
    #[serde(default = "allow")]
    pub effect: String,
}

fn allow() -> String {
    "allow".into()
}

/// `POST /api/v1/tokens`: an API token for the caller (or, for an admin, `user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateToken {
    pub name: String,
    #[serde(default)]
    pub user: Option<String>,
    /// Lifetime in milliseconds (none: until deleted).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenView {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_ms: u64,
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

/// A token just made: its secret is shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenCreated {
    pub token: String,
    pub view: TokenView,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated").field("view", &self.view).finish_non_exhaustive()
    }
}

/// An item of `GET /api/v1/audit`: an admin change, a refused request or a failed login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditEntry {
    pub at_ms: u64,
    pub user: String,
    #[serde(default)]
    pub from: Option<String>,
    /// `native`, `grpc` or `admin`.
    pub via: String,
    /// An action (`produce`, `login`, …) or an admin request (`POST /api/v1/users`).
    pub what: String,
    pub resource: String,
    /// `ok`, `denied: …` or `failed: STATUS`.
    pub result: String,
}
