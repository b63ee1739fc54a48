//! Requests and responses, and their bodies.

use bytes::Bytes;

use crate::codec::{DecodeError, Reader, SHARED_BYTES_MIN, Writer};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 7;
/// Most messages in one send.
pub const BATCH_MESSAGES_MAX: usize = 1024;
/// Largest message body a client may send (the broker may set a lower limit).
pub const MESSAGE_BYTES_MAX: usize = 4 << 20;
/// Most messages one pull returns.
pub const PULL_MESSAGES_MAX: u32 = 1024;
/// Longest a pull may wait for messages (long polling).
pub const PULL_WAIT_MAX_MS: u32 = 30_000;
/// In a send: let the broker choose the queue (round robin).
pub const QUEUE_ANY: u32 = u32::MAX;
/// Most topics one broker registers with a name server (a broker's own limit).
pub const TOPICS_PER_BROKER_MAX: usize = 10_000;
/// Most brokers in one route or cluster answer.
pub const BROKERS_MAX: usize = 1_024;
/// Most user properties, keys or topics in one message or request.
const LIST_MAX: usize = 64;
/// Most front-end endpoints one broker registers.
pub const ENDPOINTS_MAX: usize = 16;

/// Request ops (the `code` of a request frame). Numbers are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    Hello = 1,
    Send = 2,
    Pull = 3,
    Route = 4,
    OffsetCommit = 5,
    OffsetQuery = 6,
    Heartbeat = 7,
    GroupHeartbeat = 8,
    GroupLeave = 9,
    GroupCommit = 10,
    SendBack = 11,
    LockQueue = 12,
    /// A producer commits or rolls back a transaction (or answers a check).
    EndTransaction = 13,
    /// Sent by the broker to a producer of a group (one-way): what became of this transaction?
    CheckTransaction = 14,
    /// A slave fetches its master's log from its own end (which acknowledges what it holds).
    ReplicaFetch = 15,
    /// A slave exchanges topics and consumer offsets with its master.
    ReplicaMeta = 16,
    /// A broker registers with a name server (and says it is alive).
    RegisterBroker = 17,
    /// A client asks a name server for a topic's route.
    GetRoute = 18,
    /// Every live broker a name server knows.
    GetCluster = 19,
    /// A call to a controller node (from a broker, the CLI or another controller node); the
    /// body is the controller's own message (`wasmq-controller`'s `rpc` module), both ways.
    Controller = 20,
}

impl Op {
    /// Every op, in number order.
    pub const ALL: [Op; 20] = [
        Self::Hello,
        Self::Send,
        Self::Pull,
        Self::Route,
        Self::OffsetCommit,
        Self::OffsetQuery,
        Self::Heartbeat,
        Self::GroupHeartbeat,
        Self::GroupLeave,
        Self::GroupCommit,
        Self::SendBack,
        Self::LockQueue,
        Self::EndTransaction,
        Self::CheckTransaction,
        Self::ReplicaFetch,
        Self::ReplicaMeta,
        Self::RegisterBroker,
        Self::GetRoute,
        Self::GetCluster,
        Self::Controller,
    ];

    /// The operation's name in logs and metrics (`send`, `group_heartbeat`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Send => "send",
            Self::Pull => "pull",
            Self::Route => "route",
            Self::OffsetCommit => "offset_commit",
            Self::OffsetQuery => "offset_query",
            Self::Heartbeat => "heartbeat",
            Self::GroupHeartbeat => "group_heartbeat",
            Self::GroupLeave => "group_leave",
            Self::GroupCommit => "group_commit",
            Self::SendBack => "send_back",
            Self::LockQueue => "lock_queue",
            Self::EndTransaction => "end_transaction",
            Self::CheckTransaction => "check_transaction",
            Self::ReplicaFetch => "replica_fetch",
            Self::ReplicaMeta => "replica_meta",
            Self::RegisterBroker => "register_broker",
            Self::GetRoute => "get_route",
            Self::GetCluster => "get_cluster",
            Self::Controller => "controller",
        }
    }

    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|o| *o as u16 == v)
    }
}

/// First request on a connection: the client's version range and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloRequest {
    pub version_min: u16,
    pub version_max: u16,
    pub client_id: String,
    /// The user and password to log in as (none: anonymous, or the user its client certificate
    /// names). Optional at the end of the body: a Hello without them is an anonymous one.
    pub credentials: Option<Credentials>,
}

/// A user name and password. Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloResponse {
    pub version: u16,
    pub broker_name: String,
    pub frame_bytes_max: u32,
    pub in_flight_max: u32,
    pub message_bytes_max: u32,
}

/// A message as a producer sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Producer-generated unique id (deduplication, lookup).
    pub unique_id: String,
    pub tags: Option<String>,
    pub keys: Vec<String>,
    pub ordering_key: Option<String>,
    /// Deliver no earlier than this (ms since the epoch); 0 = now.
    pub delivery_ms: u64,
    pub born_ms: u64,
    pub flags: u32,
    pub properties: Vec<(String, String)>,
    pub body: Bytes,
}

/// Send a batch to one queue of a topic (`QUEUE_ANY`: the broker picks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub topic: String,
    pub queue_id: u32,
    pub producer_group: String,
    pub messages: Vec<Message>,
    /// Store the messages as half messages of a transaction of `producer_group`: invisible
    /// until an [`EndTransactionRequest`] commits them.
    pub transactional: bool,
    /// Transactional: ask the producer group after this long without a decision (0: the
    /// broker's check interval).
    pub check_after_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    /// The queue the message went to: the request's, unless a routing or ordering-key plugin
    /// attached to the topic chose another.
    pub queue_id: u32,
    pub queue_offset: u64,
    pub log_offset: u64,
}

/// How a stored send stands with the broker set's replication (RocketMQ's `SendStatus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SendStatus {
    /// Stored as the broker set's mode requires.
    #[default]
    Ok = 0,
    /// Synchronous replication: stored on the master, but not on enough slaves within the
    /// timeout.
    FlushSlaveTimeout = 1,
    /// Synchronous replication: stored on the master; too few slaves are connected and caught
    /// up to wait for.
    SlaveNotAvailable = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResponse {
    /// The first message's queue (see each result's `queue_id`).
    pub queue_id: u32,
    /// One per message, in order; message ids are the request's.
    pub results: Vec<SendResult>,
    pub status: SendStatus,
}

/// Read a queue from an offset; wait up to `wait_ms` if nothing is there (long polling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    pub max_messages: u32,
    pub max_bytes: u32,
    pub wait_ms: u32,
    /// Tag filter (`*`, `A || B`); messages that do not match are skipped and still advance
    /// `next_offset`.
    pub filter: Option<String>,
    /// The consumer group pulling, if any: a filter plugin attached to the group's subscription
    /// of this topic then decides which messages are delivered.
    pub group: Option<String>,
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PulledMessage {
    pub queue_offset: u64,
    pub log_offset: u64,
    pub store_ms: u64,
    pub reconsume_times: u32,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResponse {
    pub messages: Vec<PulledMessage>,
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    /// Where the broker suggests this consumer reads next (a master far ahead of the consumer
    /// sends it to a slave; a slave the consumer has caught up with sends it back).
    pub suggest: ReadFrom,
}

/// A broker's suggestion of where to read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadFrom {
    #[default]
    Here = 0,
    Slave = 1,
    Master = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRequest {
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteResponse {
    pub topic: String,
    pub queues: u32,
    pub broker_name: String,
}

/// Commit a consumer group's offset for a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetQueryRequest {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetQueryResponse {
    /// `None`: the group never committed for this queue.
    pub offset: Option<u64>,
}

/// A client says it is alive, with the groups it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub client_id: String,
    pub producer_groups: Vec<String>,
    pub consumer_groups: Vec<String>,
}

/// How a consumer group consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMode {
    /// The group's queues are shared out among its members.
    Clustering = 1,
    /// Every member reads every queue.
    Broadcasting = 2,
}

/// A group member joins, or says it is alive, with what it subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatRequest {
    pub group: String,
    pub client_id: String,
    pub mode: GroupMode,
    /// (topic, tag filter).
    pub subscriptions: Vec<(String, String)>,
}

/// The member's assignment: read these queues; commit with this generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatResponse {
    pub generation: u64,
    pub queues: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLeaveRequest {
    pub group: String,
    pub client_id: String,
}

/// An offset commit fenced by membership and generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommitRequest {
    pub group: String,
    pub client_id: String,
    pub generation: u64,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
}

/// A consumer could not handle a message: the broker schedules it again through the group's
/// retry topic (or moves it to the dead-letter topic after the maximum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBackRequest {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub log_offset: u64,
    /// Straight to the dead-letter topic (an orderly consumer that retried in place up to the
    /// maximum).
    pub dead_letter: bool,
    /// The group's maximum number of reconsumes before the dead-letter topic; 0: the broker's
    /// default (`max_reconsume_times`).
    pub max_reconsume_times: u32,
}

/// Orderly consumption: take (or renew) a group's lock on a queue, or release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockQueueRequest {
    pub group: String,
    pub client_id: String,
    pub topic: String,
    pub queue_id: u32,
    /// Release instead of take.
    pub unlock: bool,
}

/// A producer's decision on a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxDecision {
    Commit = 1,
    Rollback = 2,
    /// Not known yet (the broker asks again later).
    Unknown = 3,
}

/// Ends a transaction: the half message at `log_offset` (the send result's) with `unique_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndTransactionRequest {
    pub producer_group: String,
    pub log_offset: u64,
    pub unique_id: String,
    pub decision: TxDecision,
    /// An answer to a [`CheckTransactionRequest`] rather than the sender's own end.
    pub from_check: bool,
}

/// Where a transaction stands after an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    Committed = 1,
    RolledBack = 2,
    /// No decision after the broker's maximum number of checks (or its topic was deleted).
    Discarded = 3,
    /// Still undecided (an unknown answer).
    Pending = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTransactionResponse {
    pub state: TxState,
    /// False when the transaction had already ended: a late or repeated end changes nothing.
    pub applied: bool,
}

/// The broker asks a producer of the group how a transaction ended (request id 0: the
/// producer answers with an [`EndTransactionRequest`] with `from_check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTransactionRequest {
    pub producer_group: String,
    pub log_offset: u64,
    /// Checks sent before this one.
    pub checks: u32,
    pub topic: String,
    pub queue_id: u32,
    pub message: Message,
}

/// A slave asks for its master's log from `from` (its own end: everything below it is held by
/// the slave, which is its acknowledgement). The master waits up to `wait_ms` if it has nothing
/// past `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    pub broker_name: String,
    pub broker_id: u32,
    pub from: u64,
    pub max_bytes: u32,
    pub wait_ms: u32,
    /// The slave's own admin address (for cluster status).
    pub admin_addr: String,
    /// The newest master epoch the slave knows: a master behind it is no longer master.
    pub epoch: u64,
}

/// Raw log bytes (whole records) starting at `start_offset`: `from`, or for an empty slave
/// behind the master's retained log, the master's lowest offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    pub start_offset: u64,
    pub master_end: u64,
    pub segment_bytes: u64,
    /// The master's epochs: (epoch, the log offset it began at), oldest first.
    pub epochs: Vec<(u64, u64)>,
    pub bytes: Bytes,
}

/// Most epochs a ReplicaFetch answer lists.
pub const EPOCHS_LISTED_MAX: usize = 4096;

/// Metadata kept in step: the slave sends the offsets committed on it since the last exchange
/// (JSON); the master merges them and answers with its topics and offsets (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaMetaRequest {
    pub broker_id: u32,
    pub local_offsets_json: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaMetaResponse {
    pub topics_json: String,
    pub offsets_json: String,
    /// Consumer groups' settings (FIFO and the like).
    pub groups_json: String,
    /// The master's users and policies (`wasmq-auth`'s state), which the slave adopts whole;
    /// optional at the end of the body (empty: none sent).
    pub security_json: String,
}

/// A broker's registration with a name server, repeated as its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBrokerRequest {
    pub cluster: String,
    pub broker_name: String,
    /// 0: master; 1 and up: slave.
    pub broker_id: u32,
    /// Protocol and admin addresses.
    pub addr: String,
    pub admin_addr: String,
    /// (topic, queues) of every topic the broker serves.
    pub topics: Vec<(String, u32)>,
    pub live: BrokerLive,
    /// How often the broker registers: a name server marks it down once it misses a few.
    pub register_interval_ms: u32,
    /// Where its other front ends listen (the native protocol's address is `addr`).
    pub endpoints: Vec<Endpoint>,
    /// It is its set's master (without a failover controller: `broker_id` 0).
    pub master: bool,
    /// The newest master epoch it knows (0 without a controller): of two brokers of a set that
    /// both say master, routes name the one of the newer epoch.
    pub epoch: u64,
}

/// A protocol front end's address: where clients of that protocol reach a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The front end's name, as the broker's table of front ends calls it (`grpc`).
    pub protocol: String,
    /// `host:port`.
    pub addr: String,
}

impl Endpoint {
    /// The address of `protocol` among `endpoints`.
    #[must_use]
    pub fn find<'a>(endpoints: &'a [Self], protocol: &str) -> Option<&'a str> {
        endpoints.iter().find(|e| e.protocol == protocol).map(|e| e.addr.as_str())
    }
}

fn put_endpoints(w: &mut Writer, v: &[Endpoint]) {
    w.count(v.len());
    for e in v {
        w.string(&e.protocol).string(&e.addr);
    }
}

fn get_endpoints(r: &mut Reader) -> Result<Vec<Endpoint>, DecodeError> {
    let n = r.count("endpoints", ENDPOINTS_MAX, 4)?;
    r.list(n, |r| Ok(Endpoint { protocol: r.string("protocol")?, addr: r.string("addr")? }))
}

/// What a broker reports of itself with each registration, for cluster views.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerLive {
    /// The broker's release (`CARGO_PKG_VERSION`).
    pub version: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    pub log_end_offset: u64,
    /// Bytes its CommitLog holds, and the size of the file system holding it.
    pub log_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
}

impl BrokerLive {
    fn put(&self, w: &mut Writer) {
        w.string(&self.version).u64(self.started_ms).u64(self.log_end_offset).u64(self.log_bytes);
        w.u64(self.disk_total_bytes).u64(self.disk_used_bytes);
    }

    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            version: r.string("version")?,
            started_ms: r.u64("started_ms")?,
            log_end_offset: r.u64("log_end_offset")?,
            log_bytes: r.u64("log_bytes")?,
            disk_total_bytes: r.u64("disk_total_bytes")?,
            disk_used_bytes: r.u64("disk_used_bytes")?,
        })
    }
}

/// One broker set serving a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRoute {
    pub broker_name: String,
    pub queues: u32,
    /// The master's protocol address, if it is alive.
    pub master: Option<String>,
    /// Live slaves' protocol addresses.
    pub slaves: Vec<String>,
    /// The master's other front ends (none while it is down).
    pub master_endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRouteResponse {
    pub topic: String,
    pub brokers: Vec<BrokerRoute>,
}

/// A live broker as a name server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEntry {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: u32,
    pub addr: String,
    pub admin_addr: String,
    pub topics: u32,
    pub last_seen_ms_ago: u64,
    /// How long the name server has held the broker down (its connection closed, or it missed
    /// registrations); `None` while it is up. A down broker is in no route.
    pub down_ms_ago: Option<u64>,
    pub live: BrokerLive,
    /// Its other front ends.
    pub endpoints: Vec<Endpoint>,
    /// As it registered: its set's master, in this epoch.
    pub master: bool,
    pub epoch: u64,
}

/// A request with its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello(HelloRequest),
    Send(SendRequest),
    Pull(PullRequest),
    Route(RouteRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetQuery(OffsetQueryRequest),
    Heartbeat(HeartbeatRequest),
    GroupHeartbeat(GroupHeartbeatRequest),
    GroupLeave(GroupLeaveRequest),
    GroupCommit(GroupCommitRequest),
    SendBack(SendBackRequest),
    LockQueue(LockQueueRequest),
    EndTransaction(EndTransactionRequest),
    CheckTransaction(CheckTransactionRequest),
    ReplicaFetch(ReplicaFetchRequest),
    ReplicaMeta(ReplicaMetaRequest),
    RegisterBroker(RegisterBrokerRequest),
    GetRoute(RouteRequest),
    GetCluster,
    /// A controller call, its body opaque here.
    Controller(Bytes),
}

/// A successful response with its body (errors are a status code and a text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Hello(HelloResponse),
    Send(SendResponse),
    Pull(PullResponse),
    Route(RouteResponse),
    OffsetQuery(OffsetQueryResponse),
    GroupHeartbeat(GroupHeartbeatResponse),
    /// Whether the lock is now this member's (until `expires_in_ms`).
    LockQueue {
        granted: bool,
        expires_in_ms: u64,
    },
    EndTransaction(EndTransactionResponse),
    ReplicaFetch(ReplicaFetchResponse),
    ReplicaMeta(ReplicaMetaResponse),
    GetRoute(GetRouteResponse),
    GetCluster(Vec<BrokerEntry>),
    /// A controller's answer, its body opaque here.
    Controller(Bytes),
    /// OffsetCommit, Heartbeat, GroupLeave and GroupCommit answer with an empty body.
    Empty,
}

fn put_strings(w: &mut Writer, v: &[String]) {
    w.count(v.len());
    for s in v {
        w.string(s);
    }
}

fn get_strings(r: &mut Reader, what: &'static str) -> Result<Vec<String>, DecodeError> {
    let n = r.count(what, LIST_MAX, 2)?;
    r.list(n, |r| r.string(what))
}

/// Roughly the encoded size of a message, to size buffers once.
fn message_bytes_hint(m: &Message) -> usize {
    64 + m.unique_id.len()
        + m.tags.as_ref().map_or(0, String::len)
        + m.keys.iter().map(|k| k.len() + 2).sum::<usize>()
        + m.ordering_key.as_ref().map_or(0, String::len)
        + m.properties.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>()
        + if m.body.len() < SHARED_BYTES_MIN { m.body.len() } else { 0 }
}

fn put_message(w: &mut Writer, m: &Message) {
    w.string(&m.unique_id).opt_string(m.tags.as_deref());
    put_strings(w, &m.keys);
    w.opt_string(m.ordering_key.as_deref()).u64(m.delivery_ms).u64(m.born_ms).u32(m.flags);
    w.count(m.properties.len());
    for (k, v) in &m.properties {
        w.string(k).string(v);
    }
    w.shared_bytes(&m.body);
}

fn get_message(r: &mut Reader) -> Result<Message, DecodeError> {
    let unique_id = r.string("unique_id")?;
    let tags = r.opt_string("tags")?;
    let keys = get_strings(r, "keys")?;
    let ordering_key = r.opt_string("ordering_key")?;
    let delivery_ms = r.u64("delivery_ms")?;
    let born_ms = r.u64("born_ms")?;
    let flags = r.u32("flags")?;
    let n = r.count("properties", LIST_MAX, 4)?;
    let properties = r.list(n, |r| Ok((r.string("property name")?, r.string("property value")?)))?;
    let body = r.bytes("body")?;
    Ok(Message { unique_id, tags, keys, ordering_key, delivery_ms, born_ms, flags, properties, body })
}

/// A JSON document carried as bytes (its length may pass a string's 64 KiB).
fn json(r: &mut Reader, what: &'static str) -> Result<String, DecodeError> {
    let b = r.bytes(what)?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid { what, value: 0 })
}

/// Smallest encoded message (empty strings and lists).
const MESSAGE_BYTES_MIN: usize = 2 + 1 + 4 + 1 + 8 + 8 + 4 + 4 + 4;

impl Request {
    pub fn op(&self) -> Op {
        match self {
            Self::Hello(_) => Op::Hello,
            Self::Send(_) => Op::Send,
            Self::Pull(_) => Op::Pull,
            Self::Route(_) => Op::Route,
            Self::OffsetCommit(_) => Op::OffsetCommit,
            Self::OffsetQuery(_) => Op::OffsetQuery,
            Self::Heartbeat(_) => Op::Heartbeat,
            Self::GroupHeartbeat(_) => Op::GroupHeartbeat,
            Self::GroupLeave(_) => Op::GroupLeave,
            Self::GroupCommit(_) => Op::GroupCommit,
            Self::SendBack(_) => Op::SendBack,
            Self::LockQueue(_) => Op::LockQueue,
            Self::EndTransaction(_) => Op::EndTransaction,
            Self::CheckTransaction(_) => Op::CheckTransaction,
            Self::ReplicaFetch(_) => Op::ReplicaFetch,
            Self::ReplicaMeta(_) => Op::ReplicaMeta,
            Self::RegisterBroker(_) => Op::RegisterBroker,
            Self::GetRoute(_) => Op::GetRoute,
            Self::GetCluster => Op::GetCluster,
            Self::Controller(_) => Op::Controller,
        }
    }

    /// The body in one buffer.
    pub fn encode(&self) -> Bytes {
        self.write().finish()
    }

    /// The body in parts: message bodies are referenced, not copied (see [`crate::OutFrame`]).
    pub fn encode_parts(&self) -> Vec<Bytes> {
        self.write().finish_parts()
    }

    fn write(&self) -> Writer {
        let hint = match self {
            Self::Send(s) => 64 + s.topic.len() + s.producer_group.len() + s.messages.iter().map(message_bytes_hint).sum::<usize>(),
            _ => 128,
        };
        let mut w = Writer::with_capacity(hint);
        match self {
            Self::Hello(h) => {
                w.u16(h.version_min).u16(h.version_max).string(&h.client_id);
                if let Some(c) = &h.credentials {
                    w.string(&c.user).string(&c.password);
                }
            }
            Self::Send(s) => {
                w.string(&s.topic).u32(s.queue_id).string(&s.producer_group).count(s.messages.len());
                for m in &s.messages {
                    put_message(&mut w, m);
                }
                w.bool(s.transactional).u32(s.check_after_ms);
            }
            Self::Pull(p) => {
                w.string(&p.topic)
                    .u32(p.queue_id)
                    .u64(p.offset)
                    .u32(p.max_messages)
                    .u32(p.max_bytes)
                    .u32(p.wait_ms)
                    .opt_string(p.filter.as_deref())
                    .opt_string(p.group.as_deref());
            }
            Self::Route(r) => {
                w.string(&r.topic);
            }
            Self::OffsetCommit(c) => {
                w.string(&c.group).string(&c.topic).u32(c.queue_id).u64(c.offset);
            }
            Self::OffsetQuery(q) => {
                w.string(&q.group).string(&q.topic).u32(q.queue_id);
            }
            Self::Heartbeat(h) => {
                w.string(&h.client_id);
                put_strings(&mut w, &h.producer_groups);
                put_strings(&mut w, &h.consumer_groups);
            }
            Self::GroupHeartbeat(h) => {
                w.string(&h.group).string(&h.client_id).u8(h.mode as u8).count(h.subscriptions.len());
                for (t, f) in &h.subscriptions {
                    w.string(t).string(f);
                }
            }
            Self::GroupLeave(l) => {
                w.string(&l.group).string(&l.client_id);
            }
            Self::GroupCommit(c) => {
                w.string(&c.group).string(&c.client_id).u64(c.generation).string(&c.topic).u32(c.queue_id).u64(c.offset);
            }
            Self::SendBack(b) => {
                w.string(&b.group).string(&b.topic).u32(b.queue_id).u64(b.log_offset).bool(b.dead_letter).u32(b.max_reconsume_times);
            }
            Self::LockQueue(l) => {
                w.string(&l.group).string(&l.client_id).string(&l.topic).u32(l.queue_id).bool(l.unlock);
            }
            Self::EndTransaction(e) => {
                w.string(&e.producer_group).u64(e.log_offset).string(&e.unique_id).u8(e.decision as u8).bool(e.from_check);
            }
            Self::CheckTransaction(c) => {
                w.string(&c.producer_group).u64(c.log_offset).u32(c.checks).string(&c.topic).u32(c.queue_id);
                put_message(&mut w, &c.message);
            }
            Self::ReplicaFetch(f) => {
                w.string(&f.broker_name).u32(f.broker_id).u64(f.from).u32(f.max_bytes).u32(f.wait_ms).string(&f.admin_addr).u64(f.epoch);
            }
            Self::ReplicaMeta(m) => {
                w.u32(m.broker_id).bytes(m.local_offsets_json.as_bytes());
            }
            Self::RegisterBroker(b) => {
                w.string(&b.cluster).string(&b.broker_name).u32(b.broker_id).string(&b.addr).string(&b.admin_addr).count(b.topics.len());
                for (t, q) in &b.topics {
                    w.string(t).u32(*q);
                }
                b.live.put(&mut w);
                w.u32(b.register_interval_ms);
                put_endpoints(&mut w, &b.endpoints);
                w.bool(b.master).u64(b.epoch);
            }
            Self::GetRoute(r) => {
                w.string(&r.topic);
            }
            Self::GetCluster => {}
            Self::Controller(b) => {
                w.bytes(b);
            }
        }
        w
    }

    /// Decodes a request body for `op`.
    ///
    /// # Errors
    /// [`DecodeError`] for a malformed body.
    pub fn decode(op: Op, body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let req = match op {
            Op::Hello => Self::Hello(HelloRequest {
                version_min: r.u16("version_min")?,
                version_max: r.u16("version_max")?,
                client_id: r.string("client_id")?,
                credentials: if r.at_end() { None } else { Some(Credentials { user: r.string("user")?, password: r.string("password")? }) },
            }),
            Op::Send => {
                let topic = r.string("topic")?;
                let queue_id = r.u32("queue_id")?;
                let producer_group = r.string("producer_group")?;
                let n = r.count("messages", BATCH_MESSAGES_MAX, MESSAGE_BYTES_MIN)?;
                let messages = r.list(n, get_message)?;
                let transactional = r.bool("transactional")?;
                let check_after_ms = r.u32("check_after_ms")?;
                Self::Send(SendRequest { topic, queue_id, producer_group, messages, transactional, check_after_ms })
            }
            Op::Pull => Self::Pull(PullRequest {
                topic: r.string("topic")?,
                queue_id: r.u32("queue_id")?,
                offset: r.u64("offset")?,
                max_messages: r.u32("max_messages")?,
                max_bytes: r.u32("max_bytes")?,
                wait_ms: r.u32("wait_ms")?,
                filter: r.opt_string("filter")?,
                group: r.opt_string("group")?,
            }),
            Op::Route => Self::Route(RouteRequest { topic: r.string("topic")? }),
            Op::OffsetCommit => Self::OffsetCommit(OffsetCommitRequest {
                group: r.string("group")?,
                topic: r.string("topic")?,
                queue_id: r.u32("queue_id")?,
                offset: r.u64("offset")?,
            }),
            Op::OffsetQuery => {
                Self::OffsetQuery(OffsetQueryRequest { group: r.string("group")?, topic: r.string("topic")?, queue_id: r.u32("queue_id")? })
            }
            Op::Heartbeat => Self::Heartbeat(HeartbeatRequest {
                client_id: r.string("client_id")?,
                producer_groups: get_strings(&mut r, "producer_groups")?,
                consumer_groups: get_strings(&mut r, "consumer_groups")?,
            }),
            Op::GroupHeartbeat => {
                let group = r.string("group")?;
                let client_id = r.string("client_id")?;
                let mode = match r.u8("mode")? {
                    1 => GroupMode::Clustering,
                    2 => GroupMode::Broadcasting,
                    v => return Err(DecodeError::Invalid { what: "mode", value: u64::from(v) }),
                };
                let n = r.count("subscriptions", LIST_MAX, 4)?;
                let subscriptions = r.list(n, |r| Ok((r.string("topic")?, r.string("filter")?)))?;
                Self::GroupHeartbeat(GroupHeartbeatRequest { group, client_id, mode, subscriptions })
            }
            Op::GroupLeave => Self::GroupLeave(GroupLeaveRequest { group: r.string("group")?, client_id: r.string("client_id")? }),
            Op::GroupCommit => Self::GroupCommit(GroupCommitRequest {
                group: r.string("group")?,
                client_id: r.string("client_id")?,
                generation: r.u64("generation")?,
                topic: r.string("topic")?,
                queue_id: r.u32("queue_id")?,
                offset: r.u64("offset")?,
            }),
            Op::SendBack => Self::SendBack(SendBackRequest {
                group: r.string("group")?,
                topic: r.string("topic")?,
                queue_id: r.u32("queue_id")?,
                log_offset: r.u64("log_offset")?,
                dead_letter: r.bool("dead_letter")?,
                max_reconsume_times: r.u32("max_reconsume_times")?,
            }),
            Op::LockQueue => Self::LockQueue(LockQueueRequest {
                group: r.string("group")?,
                client_id: r.string("client_id")?,
                topic: r.string("topic")?,
                queue_id: r.u32("queue_id")?,
                unlock: r.bool("unlock")?,
            }),
            Op::EndTransaction => Self::EndTransaction(EndTransactionRequest {
                producer_group: r.string("producer_group")?,
                log_offset: r.u64("log_offset")?,
                unique_id: r.string("unique_id")?,
                decision: match r.u8("decision")? {
                    1 => TxDecision::Commit,
                    2 => TxDecision::Rollback,
                    3 => TxDecision::Unknown,
                    v => return Err(DecodeError::Invalid { what: "decision", value: u64::from(v) }),
                },
                from_check: r.bool("from_check")?,
            }),
            Op::ReplicaFetch => Self::ReplicaFetch(ReplicaFetchRequest {
                broker_name: r.string("broker_name")?,
                broker_id: r.u32("broker_id")?,
                from: r.u64("from")?,
                max_bytes: r.u32("max_bytes")?,
                wait_ms: r.u32("wait_ms")?,
                admin_addr: r.string("admin_addr")?,
                epoch: r.u64("epoch")?,
            }),
            Op::RegisterBroker => {
                let (cluster, broker_name, broker_id) = (r.string("cluster")?, r.string("broker_name")?, r.u32("broker_id")?);
                let (addr, admin_addr) = (r.string("addr")?, r.string("admin_addr")?);
                let n = r.count("topics", TOPICS_PER_BROKER_MAX, 6)?;
                let topics = r.list(n, |r| Ok((r.string("topic")?, r.u32("queues")?)))?;
                let live = BrokerLive::get(&mut r)?;
                let register_interval_ms = r.u32("register_interval_ms")?;
                let endpoints = get_endpoints(&mut r)?;
                let (master, epoch) = (r.bool("master")?, r.u64("epoch")?);
                Self::RegisterBroker(RegisterBrokerRequest {
                    cluster,
                    broker_name,
                    broker_id,
                    addr,
                    admin_addr,
                    topics,
                    live,
                    register_interval_ms,
                    endpoints,
                    master,
                    epoch,
                })
            }
            Op::GetRoute => Self::GetRoute(RouteRequest { topic: r.string("topic")? }),
            Op::GetCluster => Self::GetCluster,
            Op::Controller => Self::Controller(r.bytes("controller")?),
            Op::ReplicaMeta => Self::ReplicaMeta(ReplicaMetaRequest {
                broker_id: r.u32("broker_id")?,
                local_offsets_json: json(&mut r, "local_offsets_json")?,
            }),
            Op::CheckTransaction => Self::CheckTransaction(CheckTransactionRequest {
                producer_group: r.string("producer_group")?,
                log_offset: r.u64("log_offset")?,
                checks: r.u32("checks")?,
                topic: r.string("topic")?,
                queue_id: r.u32("queue_id")?,
                message: get_message(&mut r)?,
            }),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    /// The body in one buffer.
    pub fn encode(&self) -> Bytes {
        self.write().finish()
    }

    /// The body in parts: message bodies are referenced, not copied (see [`crate::OutFrame`]).
    pub fn encode_parts(&self) -> Vec<Bytes> {
        self.write().finish_parts()
    }

    fn write(&self) -> Writer {
        let hint = match self {
            Self::Pull(p) => 64 + p.messages.iter().map(|m| 28 + message_bytes_hint(&m.message)).sum::<usize>(),
            Self::Send(s) => 16 + 20 * s.results.len(),
            _ => 128,
        };
        let mut w = Writer::with_capacity(hint);
        match self {
            Self::Hello(h) => {
                w.u16(h.version).string(&h.broker_name).u32(h.frame_bytes_max).u32(h.in_flight_max).u32(h.message_bytes_max);
            }
            Self::Send(s) => {
                w.u32(s.queue_id).count(s.results.len());
                for r in &s.results {
                    w.u32(r.queue_id).u64(r.queue_offset).u64(r.log_offset);
                }
                w.u8(s.status as u8);
            }
            Self::ReplicaFetch(f) => {
                w.u64(f.start_offset).u64(f.master_end).u64(f.segment_bytes).count(f.epochs.len());
                for (epoch, start) in &f.epochs {
                    w.u64(*epoch).u64(*start);
                }
                w.shared_bytes(&f.bytes);
            }
            Self::ReplicaMeta(m) => {
                w.bytes(m.topics_json.as_bytes()).bytes(m.offsets_json.as_bytes()).bytes(m.groups_json.as_bytes());
                if !m.security_json.is_empty() {
                    w.bytes(m.security_json.as_bytes());
                }
            }
            Self::GetRoute(g) => {
                w.string(&g.topic).count(g.brokers.len());
                for b in &g.brokers {
                    w.string(&b.broker_name).u32(b.queues).opt_string(b.master.as_deref());
                    put_strings(&mut w, &b.slaves);
                    put_endpoints(&mut w, &b.master_endpoints);
                }
            }
            Self::GetCluster(all) => {
                w.count(all.len());
                for b in all {
                    w.string(&b.cluster).string(&b.broker_name).u32(b.broker_id).string(&b.addr).string(&b.admin_addr);
                    w.u32(b.topics).u64(b.last_seen_ms_ago).opt_u64(b.down_ms_ago);
                    b.live.put(&mut w);
                    put_endpoints(&mut w, &b.endpoints);
                    w.bool(b.master).u64(b.epoch);
                }
            }
            Self::Pull(p) => {
                w.u64(p.next_offset).u64(p.min_offset).u64(p.max_offset).count(p.messages.len());
                for m in &p.messages {
                    w.u64(m.queue_offset).u64(m.log_offset).u64(m.store_ms).u32(m.reconsume_times);
                    put_message(&mut w, &m.message);
                }
                w.u8(p.suggest as u8);
            }
            Self::Route(r) => {
                w.string(&r.topic).u32(r.queues).string(&r.broker_name);
            }
            Self::OffsetQuery(q) => {
                match q.offset {
                    Some(o) => w.bool(true).u64(o),
                    None => w.bool(false),
                };
            }
            Self::GroupHeartbeat(g) => {
                w.u64(g.generation).count(g.queues.len());
                for (t, q) in &g.queues {
                    w.string(t).u32(*q);
                }
            }
            Self::LockQueue { granted, expires_in_ms } => {
                w.bool(*granted).u64(*expires_in_ms);
            }
            Self::EndTransaction(e) => {
                w.u8(e.state as u8).bool(e.applied);
            }
            Self::Controller(b) => {
                w.bytes(b);
            }
            Self::Empty => {}
        }
        w
    }

    /// Decodes the body of a successful response to `op`.
    ///
    /// # Errors
    /// [`DecodeError`] for a malformed body.
    pub fn decode(op: Op, body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let resp = match op {
            Op::Hello => Self::Hello(HelloResponse {
                version: r.u16("version")?,
                broker_name: r.string("broker_name")?,
                frame_bytes_max: r.u32("frame_bytes_max")?,
                in_flight_max: r.u32("in_flight_max")?,
                message_bytes_max: r.u32("message_bytes_max")?,
            }),
            Op::Send => {
                let queue_id = r.u32("queue_id")?;
                let n = r.count("results", BATCH_MESSAGES_MAX, 20)?;
                let results = r.list(n, |r| {
                    Ok(SendResult { queue_id: r.u32("queue_id")?, queue_offset: r.u64("queue_offset")?, log_offset: r.u64("log_offset")? })
                })?;
                let status = match r.u8("status")? {
                    0 => SendStatus::Ok,
                    1 => SendStatus::FlushSlaveTimeout,
                    2 => SendStatus::SlaveNotAvailable,
                    v => return Err(DecodeError::Invalid { what: "status", value: u64::from(v) }),
                };
                Self::Send(SendResponse { queue_id, results, status })
            }
            Op::Pull => {
                let next_offset = r.u64("next_offset")?;
                let min_offset = r.u64("min_offset")?;
                let max_offset = r.u64("max_offset")?;
                let n = r.count("messages", PULL_MESSAGES_MAX as usize, 28 + MESSAGE_BYTES_MIN)?;
                let messages = r.list(n, |r| {
                    Ok(PulledMessage {
                        queue_offset: r.u64("queue_offset")?,
                        log_offset: r.u64("log_offset")?,
                        store_ms: r.u64("store_ms")?,
                        reconsume_times: r.u32("reconsume_times")?,
                        message: get_message(r)?,
                    })
                })?;
                let suggest = match r.u8("suggest")? {
                    0 => ReadFrom::Here,
                    1 => ReadFrom::Slave,
                    2 => ReadFrom::Master,
                    v => return Err(DecodeError::Invalid { what: "suggest", value: u64::from(v) }),
                };
                Self::Pull(PullResponse { messages, next_offset, min_offset, max_offset, suggest })
            }
            Op::Route => {
                Self::Route(RouteResponse { topic: r.string("topic")?, queues: r.u32("queues")?, broker_name: r.string("broker_name")? })
            }
            Op::OffsetQuery => {
                Self::OffsetQuery(OffsetQueryResponse { offset: if r.bool("has_offset")? { Some(r.u64("offset")?) } else { None } })
            }
            Op::GroupHeartbeat => {
                let generation = r.u64("generation")?;
                let n = r.count("queues", 1 << 16, 6)?;
                let queues = r.list(n, |r| Ok((r.string("topic")?, r.u32("queue_id")?)))?;
                Self::GroupHeartbeat(GroupHeartbeatResponse { generation, queues })
            }
            Op::LockQueue => Self::LockQueue { granted: r.bool("granted")?, expires_in_ms: r.u64("expires_in_ms")? },
            Op::EndTransaction => Self::EndTransaction(EndTransactionResponse {
                state: match r.u8("state")? {
                    1 => TxState::Committed,
                    2 => TxState::RolledBack,
                    3 => TxState::Discarded,
                    4 => TxState::Pending,
                    v => return Err(DecodeError::Invalid { what: "state", value: u64::from(v) }),
                },
                applied: r.bool("applied")?,
            }),
            Op::ReplicaFetch => Self::ReplicaFetch(ReplicaFetchResponse {
                start_offset: r.u64("start_offset")?,
                master_end: r.u64("master_end")?,
                segment_bytes: r.u64("segment_bytes")?,
                epochs: {
                    let n = r.count("epochs", EPOCHS_LISTED_MAX, 16)?;
                    r.list(n, |r| Ok((r.u64("epoch")?, r.u64("start")?)))?
                },
                bytes: r.bytes("bytes")?,
            }),
            Op::ReplicaMeta => Self::ReplicaMeta(ReplicaMetaResponse {
                topics_json: json(&mut r, "topics_json")?,
                offsets_json: json(&mut r, "offsets_json")?,
                groups_json: json(&mut r, "groups_json")?,
                security_json: if r.at_end() { String::new() } else { json(&mut r, "security_json")? },
            }),
            Op::GetRoute => {
                let topic = r.string("topic")?;
                let n = r.count("brokers", BROKERS_MAX, 15)?;
                let brokers = r.list(n, |r| {
                    Ok(BrokerRoute {
                        broker_name: r.string("broker_name")?,
                        queues: r.u32("queues")?,
                        master: r.opt_string("master")?,
                        slaves: get_strings(r, "slaves")?,
                        master_endpoints: get_endpoints(r)?,
                    })
                })?;
                Self::GetRoute(GetRouteResponse { topic, brokers })
            }
            Op::GetCluster => {
                let n = r.count("brokers", BROKERS_MAX, 34)?;
                let all = r.list(n, |r| {
                    Ok(BrokerEntry {
                        cluster: r.string("cluster")?,
                        broker_name: r.string("broker_name")?,
                        broker_id: r.u32("broker_id")?,
                        addr: r.string("addr")?,
                        admin_addr: r.string("admin_addr")?,
                        topics: r.u32("topics")?,
                        last_seen_ms_ago: r.u64("last_seen_ms_ago")?,
                        down_ms_ago: r.opt_u64("down_ms_ago")?,
                        live: BrokerLive::get(r)?,
                        endpoints: get_endpoints(r)?,
                        master: r.bool("master")?,
                        epoch: r.u64("epoch")?,
                    })
                })?;
                Self::GetCluster(all)
            }
            Op::Controller => Self::Controller(r.bytes("controller")?),
            Op::OffsetCommit
            | Op::Heartbeat
            | Op::GroupLeave
            | Op::GroupCommit
            | Op::SendBack
            | Op::CheckTransaction
            | Op::RegisterBroker => Self::Empty,
        };
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9é _-]{0,12}"
    }

    prop_compose! {
        fn message()(unique_id in s(), tags in proptest::option::of(s()), keys in proptest::collection::vec(s(), 0..3),
                     ordering_key in proptest::option::of(s()), delivery_ms: u64, born_ms: u64, flags: u32,
                     properties in proptest::collection::vec((s(), s()), 0..3), body in proptest::collection::vec(any::<u8>(), 0..1200))
                     -> Message {
            Message { unique_id, tags, keys, ordering_key, delivery_ms, born_ms, flags, properties, body: Bytes::from(body) }
        }
    }

    prop_compose! {
        fn live()(version in s(), started_ms: u64, log_end_offset: u64, log_bytes: u64, disk_total_bytes: u64, disk_used_bytes: u64) -> BrokerLive {
            BrokerLive { version, started_ms, log_end_offset, log_bytes, disk_total_bytes, disk_used_bytes }
        }
    }

    fn endpoints() -> impl Strategy<Value = Vec<Endpoint>> {
        proptest::collection::vec((s(), s()).prop_map(|(protocol, addr)| Endpoint { protocol, addr }), 0..3)
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u16>(), any::<u16>(), s(), proptest::option::of((s(), s()))).prop_map(|(a, b, c, creds)| Request::Hello(HelloRequest {
                version_min: a,
                version_max: b,
                client_id: c,
                credentials: creds.map(|(user, password)| Credentials { user, password }),
            })),
            (s(), any::<u32>(), s(), proptest::collection::vec(message(), 0..4), any::<bool>(), any::<u32>()).prop_map(
                |(topic, queue_id, producer_group, messages, transactional, check_after_ms)| {
                    Request::Send(SendRequest { topic, queue_id, producer_group, messages, transactional, check_after_ms })
                }
            ),
            (s(), any::<u64>(), s(), 1u8..=3, any::<bool>()).prop_map(|(producer_group, log_offset, unique_id, d, from_check)| {
                let decision = [TxDecision::Commit, TxDecision::Rollback, TxDecision::Unknown][usize::from(d - 1)];
                Request::EndTransaction(EndTransactionRequest { producer_group, log_offset, unique_id, decision, from_check })
            }),
            (s(), any::<u32>(), any::<u64>(), any::<u32>(), any::<u32>(), s(), any::<u64>()).prop_map(
                |(broker_name, broker_id, from, max_bytes, wait_ms, admin_addr, epoch)| {
                    Request::ReplicaFetch(ReplicaFetchRequest { broker_name, broker_id, from, max_bytes, wait_ms, admin_addr, epoch })
                }
            ),
            (any::<u32>(), s())
                .prop_map(|(broker_id, local_offsets_json)| Request::ReplicaMeta(ReplicaMetaRequest { broker_id, local_offsets_json })),
            (
                (s(), s(), any::<u32>(), s(), s()),
                proptest::collection::vec((s(), any::<u32>()), 0..4),
                live(),
                any::<u32>(),
                endpoints(),
                (any::<bool>(), any::<u64>())
            )
                .prop_map(
                    |(
                        (cluster, broker_name, broker_id, addr, admin_addr),
                        topics,
                        live,
                        register_interval_ms,
                        endpoints,
                        (master, epoch),
                    )| {
                        Request::RegisterBroker(RegisterBrokerRequest {
                            cluster,
                            broker_name,
                            broker_id,
                            addr,
                            admin_addr,
                            topics,
                            live,
                            register_interval_ms,
                            endpoints,
                            master,
                            epoch,
                        })
                    }
                ),
            s().prop_map(|topic| Request::GetRoute(RouteRequest { topic })),
            Just(Request::GetCluster),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Request::Controller(Bytes::from(b))),
            (s(), any::<u64>(), any::<u32>(), s(), any::<u32>(), message()).prop_map(
                |(producer_group, log_offset, checks, topic, queue_id, message)| {
                    Request::CheckTransaction(CheckTransactionRequest { producer_group, log_offset, checks, topic, queue_id, message })
                }
            ),
            (
                s(),
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(s()),
                proptest::option::of(s())
            )
                .prop_map(|(topic, queue_id, offset, m, b, w, filter, group)| {
                    Request::Pull(PullRequest { topic, queue_id, offset, max_messages: m, max_bytes: b, wait_ms: w, filter, group })
                }),
            (s(), s(), any::<bool>(), proptest::collection::vec((s(), s()), 0..3)).prop_map(|(group, client_id, b, subscriptions)| {
                Request::GroupHeartbeat(GroupHeartbeatRequest {
                    group,
                    client_id,
                    mode: if b { GroupMode::Clustering } else { GroupMode::Broadcasting },
                    subscriptions,
                })
            }),
            (s(), s()).prop_map(|(group, client_id)| Request::GroupLeave(GroupLeaveRequest { group, client_id })),
            (s(), s(), any::<u64>(), s(), any::<u32>(), any::<u64>()).prop_map(
                |(group, client_id, generation, topic, queue_id, offset)| {
                    Request::GroupCommit(GroupCommitRequest { group, client_id, generation, topic, queue_id, offset })
                }
            ),
            s().prop_map(|topic| Request::Route(RouteRequest { topic })),
            (s(), s(), any::<u32>(), any::<u64>())
                .prop_map(|(group, topic, queue_id, offset)| Request::OffsetCommit(OffsetCommitRequest { group, topic, queue_id, offset })),
            (s(), s(), any::<u32>()).prop_map(|(group, topic, queue_id)| Request::OffsetQuery(OffsetQueryRequest {
                group,
                topic,
                queue_id
            })),
            (s(), proptest::collection::vec(s(), 0..3), proptest::collection::vec(s(), 0..3)).prop_map(|(client_id, p, c)| {
                Request::Heartbeat(HeartbeatRequest { client_id, producer_groups: p, consumer_groups: c })
            }),
        ]
    }

    fn response() -> impl Strategy<Value = (Op, Response)> {
        prop_oneof![
            (any::<u16>(), s(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(v, n, f, i, m)| (
                Op::Hello,
                Response::Hello(HelloResponse { version: v, broker_name: n, frame_bytes_max: f, in_flight_max: i, message_bytes_max: m })
            )),
            (any::<u32>(), proptest::collection::vec((any::<u32>(), any::<u64>(), any::<u64>()), 0..5), 0usize..3).prop_map(
                |(q, r, st)| (
                    Op::Send,
                    Response::Send(SendResponse {
                        queue_id: q,
                        results: r.into_iter().map(|(queue_id, a, b)| SendResult { queue_id, queue_offset: a, log_offset: b }).collect(),
                        status: [SendStatus::Ok, SendStatus::FlushSlaveTimeout, SendStatus::SlaveNotAvailable][st],
                    })
                )
            ),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec((any::<u64>(), any::<u64>()), 0..4),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(a, b, c, epochs, d)| (
                    Op::ReplicaFetch,
                    Response::ReplicaFetch(ReplicaFetchResponse {
                        start_offset: a,
                        master_end: b,
                        segment_bytes: c,
                        epochs,
                        bytes: Bytes::from(d)
                    })
                )),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| (Op::Controller, Response::Controller(Bytes::from(b)))),
            (s(), s(), s(), s()).prop_map(|(t, o, g, sec)| (
                Op::ReplicaMeta,
                Response::ReplicaMeta(ReplicaMetaResponse { topics_json: t, offsets_json: o, groups_json: g, security_json: sec })
            )),
            (
                s(),
                proptest::collection::vec(
                    (s(), any::<u32>(), proptest::option::of(s()), proptest::collection::vec(s(), 0..3), endpoints()),
                    0..3
                )
            )
                .prop_map(|(topic, b)| (
                    Op::GetRoute,
                    Response::GetRoute(GetRouteResponse {
                        topic,
                        brokers: b
                            .into_iter()
                            .map(|(broker_name, queues, master, slaves, master_endpoints)| BrokerRoute {
                                broker_name,
                                queues,
                                master,
                                slaves,
                                master_endpoints
                            })
                            .collect()
                    })
                )),
            proptest::collection::vec(
                (
                    (s(), s(), any::<u32>(), s(), s()),
                    any::<u32>(),
                    any::<u64>(),
                    any::<Option<u64>>(),
                    live(),
                    (endpoints(), any::<bool>(), any::<u64>())
                ),
                0..3
            )
            .prop_map(|v| (
                Op::GetCluster,
                Response::GetCluster(
                    v.into_iter()
                        .map(
                            |(
                                (cluster, broker_name, broker_id, addr, admin_addr),
                                topics,
                                last_seen_ms_ago,
                                down_ms_ago,
                                live,
                                (endpoints, master, epoch),
                            )| {
                                BrokerEntry {
                                    cluster,
                                    broker_name,
                                    broker_id,
                                    addr,
                                    admin_addr,
                                    topics,
                                    last_seen_ms_ago,
                                    down_ms_ago,
                                    live,
                                    endpoints,
                                    master,
                                    epoch,
                                }
                            }
                        )
                        .collect()
                )
            )),
            (
                proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), message()), 0..4),
                any::<u64>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(ms, n, lo, hi)| (
                    Op::Pull,
                    Response::Pull(PullResponse {
                        messages: ms
                            .into_iter()
                            .map(|(q, l, st, rc, message)| PulledMessage {
                                queue_offset: q,
                                log_offset: l,
                                store_ms: st,
                                reconsume_times: rc,
                                message
                            })
                            .collect(),
                        next_offset: n,
                        min_offset: lo,
                        max_offset: hi,
                        suggest: ReadFrom::Slave,
                    })
                )),
            (s(), any::<u32>(), s())
                .prop_map(|(t, q, b)| (Op::Route, Response::Route(RouteResponse { topic: t, queues: q, broker_name: b }))),
            proptest::option::of(any::<u64>()).prop_map(|o| (Op::OffsetQuery, Response::OffsetQuery(OffsetQueryResponse { offset: o }))),
            Just((Op::Heartbeat, Response::Empty)),
            (0usize..4, any::<bool>()).prop_map(|(i, applied)| (
                Op::EndTransaction,
                Response::EndTransaction(EndTransactionResponse {
                    state: [TxState::Committed, TxState::RolledBack, TxState::Discarded, TxState::Pending][i],
                    applied
                })
            )),
            (any::<u64>(), proptest::collection::vec((s(), any::<u32>()), 0..5)).prop_map(|(generation, queues)| (
                Op::GroupHeartbeat,
                Response::GroupHeartbeat(GroupHeartbeatResponse { generation, queues })
            )),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in request()) {
            prop_assert_eq!(Request::decode(req.op(), req.encode()).unwrap(), req);
        }

        #[test]
        fn responses_round_trip((op, resp) in response()) {
            prop_assert_eq!(Response::decode(op, resp.encode()).unwrap(), resp);
        }

        #[test]
        fn parts_join_to_the_same_body(req in request(), (_op, resp) in response()) {
            prop_assert_eq!(req.encode_parts().concat(), req.encode().to_vec());
            prop_assert_eq!(resp.encode_parts().concat(), resp.encode().to_vec());
        }

        #[test]
        fn random_bodies_never_panic(op in 1u16..20, body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let op = Op::from_u16(op).unwrap();
            let _ = Request::decode(op, Bytes::from(body.clone()));
            let _ = Response::decode(op, Bytes::from(body));
        }

        #[test]
        fn truncated_bodies_are_errors(req in request(), cut in any::<proptest::sample::Index>()) {
            let b = req.encode();
            if !b.is_empty() {
                let n = cut.index(b.len());
                match (Request::decode(req.op(), b.slice(..n)), &req) {
                    // Hello's credentials are optional at its end: cut exactly there, it is a
                    // Hello without them (which a broker with users refuses).
                    (Ok(Request::Hello(h)), Request::Hello(full)) => {
                        prop_assert!(full.credentials.is_some() && h.credentials.is_none());
                        prop_assert_eq!(&h.client_id, &full.client_id);
                    }
                    (r, _) => prop_assert!(r.is_err()),
                }
            }
        }
    }

    #[test]
    fn forged_counts_do_not_allocate() {
        let mut w = Writer::new();
        w.string("t").u32(0).string("g").u32(1_000);
        assert!(matches!(Request::decode(Op::Send, w.finish()), Err(DecodeError::Truncated { .. })));
        let mut w = Writer::new();
        w.string("t").u32(0).string("g").u32(u32::MAX);
        assert!(matches!(Request::decode(Op::Send, w.finish()), Err(DecodeError::TooMany { .. })));
    }

    #[test]
    fn op_numbers_are_pinned() {
        for (op, n) in [
            (Op::Hello, 1),
            (Op::Send, 2),
            (Op::Pull, 3),
            (Op::Route, 4),
            (Op::OffsetCommit, 5),
            (Op::OffsetQuery, 6),
            (Op::Heartbeat, 7),
            (Op::EndTransaction, 13),
            (Op::CheckTransaction, 14),
        ] {
            assert_eq!(op as u16, n);
            assert_eq!(Op::from_u16(n), Some(op));
        }
        assert_eq!(Op::from_u16(0), None);
        // ALL lists each op once, in number order, without a gap.
        let numbers: Vec<u16> = Op::ALL.iter().map(|o| *o as u16).collect();
        assert_eq!(numbers, (1..=Op::ALL.len() as u16).collect::<Vec<_>>());
    }
}
