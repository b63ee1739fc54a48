//! A controller node as a process runs it (`wasmq-broker controller`): the Raft node over its
//! files, its peers reached over TLS in the native protocol's framing (the `Controller` op,
//! `wasmq_controller_api::rpc`), brokers' heartbeats heard, and — while it leads — the watch that elects a
//! new master for a set whose master fell silent.

// openraft's network trait returns its own (large) error type.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, ServerState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmq_net::{ClientError, Connection, ConnectionOptions};
use wasmq_protocol::{ErrorCode, Frame, FrameDecoder, HelloResponse, Kind, Op, PROTOCOL_VERSION, Request, Response};

use crate::log_store::LogStore;
use crate::raft::{NodeId, Raft, StateMachine};
use wasmq_controller_api::rpc::{self, Answer, CALL_TIMEOUT, Call, Heard, Heartbeat, RaftCall, SetStatus, Status};
use wasmq_controller_api::{BrokerId, Command, Election, Outcome};

/// The Raft leader's heartbeat to the other controller nodes.
pub const RAFT_HEARTBEAT: Duration = Duration::from_millis(100);
/// A follower that hears no leader for a random time in this range stands for election.
pub const RAFT_ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(800);
pub const RAFT_ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1600);
/// A broker set's master silent this long is replaced (RocketMQ's controller: 10 s by default;
/// Kafka's broker session timeout: 9 s). Configurable per controller.
pub const MASTER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// How often the leader looks for silent masters.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// A controller node answered within this long counts as up in the status.
const NODE_UP_WITHIN: Duration = Duration::from_secs(2);
/// Largest frame a controller node reads (a snapshot of every broker set's state fits many
/// times over).
const FRAME_BYTES_MAX: usize = 16 << 20;
/// Calls one connection may have in flight (as its Hello says).
const IN_FLIGHT_MAX: usize = 64;
/// Connections one node keeps open at once (peers, brokers, the CLI).
pub const CONNECTIONS_MAX: usize = 4096;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A refused automatic election is logged again at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How a controller node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every controller node by id (this one included): its address.
    pub nodes: BTreeMap<NodeId, String>,
    /// Its log, vote and snapshots.
    pub dir: PathBuf,
    /// The CA that signed the other nodes' certificates.
    pub peer_ca: PathBuf,
    /// A master silent this long is replaced.
    pub master_timeout: Duration,
}

impl NodeConfig {
    /// Checks the configuration, naming what is wrong.
    ///
    /// # Errors
    /// This node not among the nodes; an even number of nodes (a majority of 2 or 4 tolerates
    /// no more failures than 1 or 3, and 2 halves can both stall); a zero timeout.
    pub fn validate(&self) -> Result<(), String> {
        if !self.nodes.contains_key(&self.id) {
            return Err(format!("controller node {} is not among the nodes {:?}", self.id, self.nodes.keys().collect::<Vec<_>>()));
        }
        if self.nodes.len().is_multiple_of(2) {
            return Err(format!("{} controller nodes: run an odd number (1, 3 or 5)", self.nodes.len()));
        }
        if self.master_timeout.is_zero() {
            return Err("master timeout must be above 0".into());
        }
        Ok(())
    }
}

/// What the leader heard from one broker.
#[derive(Debug, Clone, Copy)]
struct Heartbeat1 {
    at: Instant,
    log_end: u64,
    epoch: u64,
}

#[derive(Debug, Default)]
struct Watch {
    /// Since when this node has been the leader (`None`: it is not). Masters are given the
    /// whole timeout from then: a new leader has not heard anyone yet.
    leading_since: Option<Instant>,
    /// By (set, member): its last heartbeat.
    heard: HashMap<(String, BrokerId), Heartbeat1>,
    /// By set: the epoch and time a refused election was last logged.
    refused_logged: HashMap<String, (u64, Instant)>,
}

/// A running controller node.
pub struct Node {
    raft: Raft,
    sm: StateMachine,
    config: NodeConfig,
    watch: Mutex<Watch>,
    /// By peer: when it last answered a Raft call.
    peers_answered: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.config.id).field("nodes", &self.config.nodes).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Node {
    /// Opens the node's files in `config.dir`, starts Raft and, if this cluster of nodes was
    /// never formed, forms it (every node does so with the same members, which openraft allows).
    ///
    /// # Errors
    /// A bad configuration, unreadable files, Raft refusing to start.
    pub async fn start(config: NodeConfig) -> Result<Arc<Self>, String> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir).map_err(|e| format!("creating {}: {e}", config.dir.display()))?;
        let log = LogStore::open(&config.dir.join("raft.redb")).map_err(|e| format!("{}: {e}", config.dir.join("raft.redb").display()))?;
        let sm = StateMachine::open(&config.dir).map_err(|e| format!("{}: {e}", config.dir.join("snapshot.json").display()))?;
        let raft_config = Config {
            cluster_name: "wasmq-controller".into(),
            heartbeat_interval: RAFT_HEARTBEAT.as_millis() as u64,
            election_timeout_min: RAFT_ELECTION_TIMEOUT_MIN.as_millis() as u64,
            election_timeout_max: RAFT_ELECTION_TIMEOUT_MAX.as_millis() as u64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())?;
        let peers_answered = Arc::new(Mutex::new(HashMap::new()));
        let network = Network { ca: config.peer_ca.clone(), answered: Arc::clone(&peers_answered) };
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm.clone()).await.map_err(|e| e.to_string())?;
        if !raft.is_initialized().await.map_err(|e| e.to_string())? {
            let members: BTreeMap<NodeId, BasicNode> = config.nodes.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect();
            if let Err(e) = raft.initialize(members).await {
                // Another node formed the cluster first and told this one: fine.
                tracing::debug!(error = %e, "controller already formed");
            }
        }
        Ok(Arc::new(Self { raft, sm, config, watch: Mutex::default(), peers_answered }))
    }

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The Raft node (metrics, tests).
    #[must_use]
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    fn leading(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.config.id)
    }

    fn not_leader(&self) -> Answer {
        let leader = self.raft.metrics().borrow().current_leader.filter(|l| *l != self.config.id);
        Answer::NotLeader { leader: leader.and_then(|l| self.config.nodes.get(&l).cloned()) }
    }

    /// Answers one call.
    pub async fn answer(&self, call: Call) -> Answer {
        match call {
            Call::Raft(kind, body) => match self.raft_call(kind, body).await {
                Ok(v) => Answer::Raft(v),
                Err(why) => Answer::Failed(why),
            },
            Call::Heartbeat(h) => self.heartbeat(h).await,
            Call::Elect { set, to, unclean } => self.elect_by_operator(&set, to, unclean).await,
            Call::Status => self.status().await,
        }
    }

    /// A Raft message from another node, handed to openraft; its result as JSON.
    async fn raft_call(&self, kind: RaftCall, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let bad = |e: serde_json::Error| format!("malformed Raft {kind:?}: {e}");
        let v = match kind {
            RaftCall::AppendEntries => serde_json::to_value(self.raft.append_entries(serde_json::from_value(body).map_err(bad)?).await),
            RaftCall::Vote => serde_json::to_value(self.raft.vote(serde_json::from_value(body).map_err(bad)?).await),
            RaftCall::InstallSnapshot => serde_json::to_value(self.raft.install_snapshot(serde_json::from_value(body).map_err(bad)?).await),
        };
        v.map_err(|e| format!("Raft {kind:?} result: {e}"))
    }

    /// `command` through Raft: its outcome once a majority has it, or why not.
    async fn propose(&self, command: Command) -> Result<Outcome, Answer> {
        match self.raft.client_write(command).await {
            Ok(r) => Ok(r.data),
            Err(e) if e.forward_to_leader::<BasicNode>().is_some() => Err(self.not_leader()),
            Err(e) => Err(Answer::Failed(format!("the controller could not commit the change: {e}"))),
        }
    }

    async fn heartbeat(&self, h: Heartbeat) -> Answer {
        if !self.leading() {
            return self.not_leader();
        }
        let heard = Heartbeat1 { at: Instant::now(), log_end: h.log_end, epoch: h.epoch };
        let known = self.sm.state().await.sets.get(&h.set).cloned();
        let mut set = match known {
            Some(s) if s.members.get(&h.id) == Some(&h.addr) => s,
            _ => match self.propose(Command::Register { set: h.set.clone(), id: h.id, addr: h.addr.clone() }).await {
                Ok(Outcome::Applied(s)) => {
                    tracing::info!(set = %h.set, broker = h.id, addr = %h.addr, master = ?s.master, epoch = s.epoch, "broker registered");
                    s
                }
                Ok(Outcome::Refused(why)) => return Answer::Failed(why),
                Err(a) => return a,
            },
        };
        // Only members are remembered (the state bounds them), so `heard` is bounded too.
        lock(&self.watch).heard.insert((h.set.clone(), h.id), heard);
        if let Some(in_sync) = h.in_sync
            && set.master == Some(h.id)
            && set.epoch == h.epoch
            && set.in_sync != in_sync
        {
            let alter = Command::AlterInSync { set: h.set.clone(), master: h.id, epoch: h.epoch, in_sync: in_sync.clone() };
            match self.propose(alter).await {
                Ok(Outcome::Applied(s)) => {
                    tracing::info!(set = %h.set, epoch = s.epoch, in_sync = ?s.in_sync, "in-sync set changed");
                    set = s;
                }
                Ok(Outcome::Refused(why)) => tracing::info!(set = %h.set, %why, "in-sync change refused"),
                Err(a) => return a,
            }
        }
        Answer::Beat { set, master_timeout_ms: self.config.master_timeout.as_millis() as u64 }
    }

    /// Log ends heard within the master timeout from members of `set`.
    fn log_ends(&self, set: &str) -> BTreeMap<BrokerId, u64> {
        let now = Instant::now();
        lock(&self.watch)
            .heard
            .iter()
            .filter(|((s, _), h)| s == set && now.duration_since(h.at) <= self.config.master_timeout)
            .map(|((_, id), h)| (*id, h.log_end))
            .collect()
    }

    async fn elect_by_operator(&self, set: &str, to: Option<BrokerId>, unclean: bool) -> Answer {
        if !self.leading() {
            return self.not_leader();
        }
        let Some(current) = self.sm.state().await.sets.get(set).cloned() else {
            return Answer::Elected(Outcome::Refused(format!("no broker set {set}")));
        };
        let how = match (to, unclean) {
            (Some(id), true) => Election::Unclean(id),
            (Some(id), false) => Election::To(id),
            (None, false) => Election::Failover { log_ends: self.log_ends(set) },
            (None, true) => return Answer::Failed("an unclean election names the broker to elect".into()),
        };
        if unclean {
            tracing::warn!(set, broker = ?to, epoch = current.epoch, "UNCLEAN election asked by an operator: what the new master lacks of acknowledged messages is lost");
        }
        match self.propose(Command::Elect { set: set.to_owned(), epoch: current.epoch, how }).await {
            Ok(o) => {
                if let Outcome::Applied(s) = &o {
                    tracing::warn!(set, master = ?s.master, epoch = s.epoch, "new master elected by an operator");
                }
                Answer::Elected(o)
            }
            Err(a) => a,
        }
    }

    async fn status(&self) -> Answer {
        if !self.leading() {
            return self.not_leader();
        }
        let state = self.sm.state().await;
        let now = Instant::now();
        let (heard, mut nodes_up) = {
            let w = lock(&self.watch);
            let answered = lock(&self.peers_answered);
            let up: BTreeSet<NodeId> =
                answered.iter().filter(|(_, at)| now.duration_since(**at) <= NODE_UP_WITHIN).map(|(id, _)| *id).collect();
            (w.heard.clone(), up)
        };
        nodes_up.insert(self.config.id);
        let sets = state
            .sets
            .into_iter()
            .map(|(name, set)| {
                let heard = heard
                    .iter()
                    .filter(|((s, _), _)| *s == name)
                    .map(|((_, id), h)| {
                        (*id, Heard { ms_ago: now.duration_since(h.at).as_millis() as u64, log_end: h.log_end, epoch: h.epoch })
                    })
                    .collect();
                (name, SetStatus { set, heard })
            })
            .collect();
        Answer::Status(Status {
            node: self.config.id,
            term: self.raft.metrics().borrow().current_term,
            nodes: self.config.nodes.clone(),
            nodes_up,
            sets,
        })
    }

    /// While this node leads: every [`WATCH_INTERVAL`], a set whose master has been silent past
    /// the master timeout gets a new master — the most advanced in-sync member heard from
    /// within the timeout. Runs until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.cancelled() => return,
            }
            if !self.leading() {
                let mut w = lock(&self.watch);
                w.leading_since = None;
                // A later leadership starts from what it hears then.
                w.heard.clear();
                continue;
            }
            let now = Instant::now();
            let since = *lock(&self.watch).leading_since.get_or_insert(now);
            for (name, set) in self.sm.state().await.sets {
                let Some(master) = set.master else { continue };
                let last = lock(&self.watch).heard.get(&(name.clone(), master)).map_or(since, |h| h.at.max(since));
                let silent = now.duration_since(last);
                if silent <= self.config.master_timeout {
                    continue;
                }
                let log_ends = self.log_ends(&name);
                let elect = Command::Elect { set: name.clone(), epoch: set.epoch, how: Election::Failover { log_ends: log_ends.clone() } };
                match self.propose(elect).await {
                    Ok(Outcome::Applied(s)) => tracing::warn!(
                        set = %name,
                        old_master = master,
                        silent_ms = silent.as_millis() as u64,
                        new_master = ?s.master,
                        epoch = s.epoch,
                        ?log_ends,
                        "master silent: new master elected"
                    ),
                    Ok(Outcome::Refused(why)) => {
                        let mut w = lock(&self.watch);
                        let logged = w.refused_logged.entry(name.clone()).or_insert((set.epoch, now - REFUSAL_LOG_INTERVAL));
                        if logged.0 != set.epoch || now.duration_since(logged.1) >= REFUSAL_LOG_INTERVAL {
                            *logged = (set.epoch, now);
                            tracing::error!(set = %name, master, silent_ms = silent.as_millis() as u64, %why, "master silent and no new master can be elected");
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// Serves calls on `listener` until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let stop = shutdown.clone();
        wasmq_net::serve_tls("controller", listener, acceptor, CONNECTIONS_MAX, shutdown, tracker.clone(), move |tls, peer| {
            let (node, stop) = (Arc::clone(&self), stop.clone());
            async move {
                tokio::select! {
                    () = serve_connection(tls, peer, node) => {}
                    () = stop.cancelled() => {}
                }
            }
        })
        .await;
        tracker.close();
        tracker.wait().await;
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "controller shutdown");
        }
    }
}

/// One connection: Hello first, then Controller calls, each answered on its own task (a
/// proposal waits for a majority; a vote or append must not wait behind it).
async fn serve_connection(tls: wasmq_net::TlsStream, peer: SocketAddr, node: Arc<Node>) {
    let (mut read, mut write) = tokio::io::split(tls);
    let (tx, mut rx) = mpsc::channel::<Frame>(IN_FLIGHT_MAX);
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        while let Some(f) = rx.recv().await {
            out.clear();
            f.encode(&mut out);
            if write.write_all(&out).await.is_err() || write.flush().await.is_err() {
                return;
            }
        }
    });
    let decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut hello = false;
    'conn: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "controller connection: bad frame");
                    break 'conn;
                }
            };
            if frame.kind != Kind::Request {
                break 'conn;
            }
            let id = frame.request_id;
            let reply = move |code: u16, body: bytes::Bytes| Frame { kind: Kind::Response, request_id: id, code, body };
            let fail = |code: ErrorCode, text: String| reply(code as u16, bytes::Bytes::from(text));
            let req = match Op::from_u16(frame.code) {
                None => Err(fail(ErrorCode::UnknownOp, format!("unknown op {}", frame.code))),
                Some(op) => Request::decode(op, frame.body).map_err(|e| fail(ErrorCode::Malformed, e.to_string())),
            };
            let call = match req {
                Err(f) => Err(f),
                Ok(Request::Hello(h)) => {
                    if (h.version_min..=h.version_max).contains(&PROTOCOL_VERSION) {
                        hello = true;
                        let r = Response::Hello(HelloResponse {
                            version: PROTOCOL_VERSION,
                            broker_name: format!("controller-{}", node.id()),
                            frame_bytes_max: FRAME_BYTES_MAX as u32,
                            in_flight_max: IN_FLIGHT_MAX as u32,
                            message_bytes_max: 0,
                        });
                        Err(reply(0, r.encode()))
                    } else {
                        Err(fail(ErrorCode::UnsupportedVersion, format!("controller speaks version {PROTOCOL_VERSION}")))
                    }
                }
                Ok(_) if !hello => Err(fail(ErrorCode::HandshakeRequired, "send Hello first".into())),
                Ok(Request::Controller(body)) => rpc::decode::<Call>(&body).map_err(|e| fail(ErrorCode::Malformed, e)),
                Ok(_) => Err(fail(ErrorCode::InvalidRequest, "a controller node answers Hello and Controller".into())),
            };
            match call {
                Err(f) => {
                    if tx.send(f).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(call) => {
                    let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { break 'conn };
                    let (node, tx) = (Arc::clone(&node), tx.clone());
                    tokio::spawn(async move {
                        let answer = node.answer(call).await;
                        let _ = tx.send(reply(0, Response::Controller(rpc::encode(&answer)).encode())).await;
                        drop(permit);
                    });
                }
            }
        }
        match tokio::time::timeout(IDLE_TIMEOUT, read.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Raft's connections to the other controller nodes.
#[derive(Debug, Clone)]
struct Network {
    ca: PathBuf,
    answered: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl RaftNetworkFactory<crate::raft::TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer { target, addr: node.addr.clone(), ca: self.ca.clone(), conn: None, answered: Arc::clone(&self.answered) }
    }
}

/// One other controller node, its connection opened on first use and kept.
struct Peer {
    target: NodeId,
    addr: String,
    ca: PathBuf,
    conn: Option<Connection>,
    answered: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

type RaftResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    async fn call<E: std::error::Error>(&mut self, call: &Call, ttl: Duration) -> RaftResult<Answer, E> {
        let conn = match &self.conn {
            Some(c) => c.clone(),
            None => {
                let mut options = ConnectionOptions::new(&self.addr, &self.ca);
                options.request_timeout = ttl.min(CALL_TIMEOUT);
                let c = Connection::connect(options).await.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                self.conn = Some(c.clone());
                c
            }
        };
        let answer = match conn.call_with_timeout(&Request::Controller(rpc::encode(call)), ttl).await {
            Ok(Response::Controller(body)) => rpc::decode::<Answer>(&body).map_err(|e| RPCError::Network(NetworkError::new(&io(e))))?,
            Ok(_) => return Err(RPCError::Network(NetworkError::new(&io("the peer answered another op".into())))),
            Err(e @ (ClientError::Connect { .. } | ClientError::Closed(_))) => {
                self.conn = None;
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        lock(&self.answered).insert(self.target, Instant::now());
        Ok(answer)
    }
}

fn io(e: String) -> std::io::Error {
    std::io::Error::other(e)
}

impl Peer {
    /// Raft message `rpc` of `kind` to this peer; its result.
    async fn raft<Q: serde::Serialize, R: serde::de::DeserializeOwned, E: std::error::Error + serde::de::DeserializeOwned>(
        &mut self,
        kind: RaftCall,
        rpc: &Q,
        ttl: Duration,
    ) -> RaftResult<R, E> {
        let network = |e: String| RPCError::Network(NetworkError::new(&io(e)));
        let body = serde_json::to_value(rpc).map_err(|e| network(e.to_string()))?;
        match self.call(&Call::Raft(kind, body), ttl).await? {
            Answer::Raft(v) => {
                let r: Result<R, RaftError<NodeId, E>> =
                    serde_json::from_value(v).map_err(|e| network(format!("malformed Raft {kind:?} answer: {e}")))?;
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            a => Err(network(format!("unexpected answer to Raft {kind:?}: {a:?}"))),
        }
    }
}

impl RaftNetwork<crate::raft::TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<crate::raft::TypeConfig>,
        option: RPCOption,
    ) -> RaftResult<AppendEntriesResponse<NodeId>> {
        self.raft(RaftCall::AppendEntries, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<crate::raft::TypeConfig>,
        option: RPCOption,
    ) -> RaftResult<InstallSnapshotResponse<NodeId>, openraft::error::InstallSnapshotError> {
        self.raft(RaftCall::InstallSnapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RaftResult<VoteResponse<NodeId>> {
        self.raft(RaftCall::Vote, &rpc, option.hard_ttl()).await
    }
}
