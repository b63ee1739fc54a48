//! The controller of automatic failover. It holds, per broker set, the members, the master, the
//! **master epoch** and the **in-sync set**, and changes them only by [`Command`]s that every
//! controller node applies in the same order ([`ControllerState::apply`]: deterministic, no clock
//! and no I/O), so that replicated through a Raft log the nodes agree on who may write.
//! Decisions that depend on time — a master silent for too long — are taken outside, by the
//! controller leader ([`Node::watch`]), which proposes an [`Command::Elect`] carrying what it
//! observed.
//!
//! A controller node ([`Node`]) serves the native protocol's framing over TLS, answering the
//! `Controller` op (`wasmq_controller_api::rpc`): Raft between nodes, heartbeats from brokers,
//! status and elections from operators. Brokers and the CLI reach the leader through
//! `wasmq_controller_api::Client`, which needs no Raft.

pub mod log_store;
mod node;
pub mod raft;
mod state;

pub use log_store::LogStore;
pub use node::{
    CONNECTIONS_MAX, MASTER_TIMEOUT_DEFAULT, Node, NodeConfig, RAFT_ELECTION_TIMEOUT_MAX, RAFT_ELECTION_TIMEOUT_MIN, RAFT_HEARTBEAT,
};
pub use raft::{Raft, StateMachine, TypeConfig};
pub use state::{BROKER_SETS_MAX, ControllerState, MEMBERS_PER_SET_MAX};
pub use wasmq_controller_api::{BrokerId, BrokerSet, Command, Election, NodeId, Outcome};
