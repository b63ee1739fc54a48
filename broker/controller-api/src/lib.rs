//! What a client of the wasmq failover controller needs — brokers sending heartbeats, the CLI
//! asking for status or an election: the controller's data ([`BrokerSet`], [`Election`],
//! [`Outcome`]), its calls and answers ([`rpc`], JSON in the native protocol's `Controller`
//! op) and a [`Client`] that finds the leader. No Raft here: the nodes are `wasmq-controller`.

mod client;
pub mod rpc;
mod types;

pub use client::Client;
pub use rpc::{CALL_TIMEOUT, NodeId};
pub use types::{BrokerId, BrokerSet, Command, Election, Outcome};
