//! The controller's data: broker sets, elections, the commands that change them and their
//! outcomes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A broker's id within its set.
pub type BrokerId = u32;

/// One broker set (a master and its slaves, sharing one log) as the controller holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerSet {
    /// Every broker that registered, by id: its protocol address.
    pub members: BTreeMap<BrokerId, String>,
    /// The one member that may take writes in `epoch`.
    pub master: Option<BrokerId>,
    /// Raised at every change of master: a broker that learns of a higher epoch than its own
    /// stops writing, and a log records where each epoch began.
    pub epoch: u64,
    /// The members that hold everything the master acknowledged (the master included): only
    /// they may be elected without losing acknowledged messages.
    pub in_sync: BTreeSet<BrokerId>,
}

/// How a new master is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Election {
    /// The master is gone: the in-sync member (other than it) whose log ends furthest, by the
    /// log ends the leader last heard from each (ties: the lowest id). A member whose log end
    /// the leader has not heard is not a candidate.
    Failover { log_ends: BTreeMap<BrokerId, u64> },
    /// An operator's choice, which must be in sync (a planned switchover).
    To(BrokerId),
    /// An operator's choice from outside the in-sync set: what it lacks of the acknowledged
    /// messages is lost. Never taken without an operator asking.
    Unclean(BrokerId),
}

/// A change of the state. Each one names the epoch it was decided in, so that one decided on
/// stale knowledge is refused rather than applied twice or over a newer master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker joins its set, or joins again after a restart (its address may have changed).
    /// The first broker of a set that never had a master becomes its master, in epoch 1.
    Register { set: String, id: BrokerId, addr: String },
    /// The master of `epoch` reports its in-sync set: a slave caught up (in) or fell behind
    /// (out). The set must hold the master and only members.
    AlterInSync { set: String, master: BrokerId, epoch: u64, in_sync: BTreeSet<BrokerId> },
    /// A new master for `set`, replacing the master of `epoch`; the epoch goes up by one and the
    /// old master leaves the in-sync set (it rejoins once it has cut any tail the new master lacks
    /// and caught up); after an unclean election the new master is the in-sync set alone.
    Elect { set: String, epoch: u64, how: Election },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied: the set as it is now.
    Applied(BrokerSet),
    /// Refused, and why; nothing changed.
    Refused(String),
}
