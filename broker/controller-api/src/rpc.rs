//! What controller nodes, brokers and the CLI say to a controller node: one JSON [`Call`] in the
//! body of a native-protocol `Controller` request, one JSON [`Answer`] in its response
//! (docs/protocol.md). JSON because every message here is small and rare (heartbeats every few
//! hundred milliseconds, Raft entries of one command) and openraft's messages come with serde.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{BrokerId, BrokerSet, Outcome};

/// A controller node's id.
pub type NodeId = u64;

/// Longest a call between controller nodes, or a client's call, may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A call to a controller node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    /// Raft, between controller nodes: openraft's message as JSON (its types live with the
    /// nodes, not here, so that clients need no Raft).
    Raft(RaftCall, serde_json::Value),
    /// A broker is alive, and where it stands (leader only).
    Heartbeat(Heartbeat),
    /// An operator asks for a new master of `set` (leader only): `to` a given member, or the
    /// most advanced in-sync one; `unclean` lets `to` be out of sync (losing what it lacks).
    Elect { set: String, to: Option<BrokerId>, unclean: bool },
    /// The controller's view (leader only): nodes, leader, every set and what each broker last
    /// said.
    Status,
}

/// Which Raft message a [`Call::Raft`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftCall {
    /// From the leader: entries to append (or a heartbeat).
    AppendEntries,
    /// From a candidate.
    Vote,
    /// From the leader: a snapshot chunk.
    InstallSnapshot,
}

/// What a broker tells the controller leader every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its broker set (the broker name).
    pub set: String,
    pub id: BrokerId,
    /// Its native-protocol address, the one slaves replicate from when it is master.
    pub addr: String,
    /// The highest master epoch it knows.
    pub epoch: u64,
    /// Where its log ends.
    pub log_end: u64,
    /// From the master of `epoch`: the members caught up with it, itself included. The leader
    /// makes it the set's in-sync set when it differs.
    pub in_sync: Option<BTreeSet<BrokerId>>,
}

/// A controller node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// To a Raft call: openraft's result as JSON.
    Raft(serde_json::Value),
    /// To a heartbeat: the broker's set as the controller holds it now (its master and epoch),
    /// and the controller's master timeout: a master that has not had an answer for that long
    /// (counted from when it sent the heartbeat answered last) must stop taking writes, for by
    /// then another may have been elected.
    Beat {
        set: BrokerSet,
        master_timeout_ms: u64,
    },
    /// To an election: what became of it.
    Elected(Outcome),
    Status(Status),
    /// This node is not the leader; `leader` is the address of the one it knows, if any.
    NotLeader {
        leader: Option<String>,
    },
    /// The call could not be carried out (the reason).
    Failed(String),
}

/// The controller as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The node that answered (the leader).
    pub node: NodeId,
    pub term: u64,
    /// Every controller node, by id: its address.
    pub nodes: BTreeMap<NodeId, String>,
    /// The nodes the leader has heard from within the election timeout (itself included).
    pub nodes_up: BTreeSet<NodeId>,
    pub sets: BTreeMap<String, SetStatus>,
}

impl Status {
    /// Node `id` as the leader sees it: `leader`, `follower` (heard within the election timeout)
    /// or `down`.
    #[must_use]
    pub fn node_role(&self, id: NodeId) -> &'static str {
        if id == self.node {
            "leader"
        } else if self.nodes_up.contains(&id) {
            "follower"
        } else {
            "down"
        }
    }
}

/// One broker set: the replicated state, and what each member said in its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStatus {
    pub set: BrokerSet,
    /// By member id; members the leader has not heard from since it became leader are absent.
    pub heard: BTreeMap<BrokerId, Heard>,
}

/// A member's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    pub ms_ago: u64,
    pub log_end: u64,
    pub epoch: u64,
}

/// A call or an answer as bytes.
///
/// # Panics
/// Never: these types always serialize.
#[must_use]
pub fn encode<T: Serialize>(v: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(v).expect("controller messages serialize"))
}

/// A call or an answer from bytes.
///
/// # Errors
/// Not JSON of `T`, named in the message.
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("malformed controller message ({} bytes): {e}", b.len()))
}
