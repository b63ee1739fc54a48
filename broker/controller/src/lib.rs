//! The controller of automatic failover. It holds, per broker set, the members, the master, the
//! **master epoch** and the **in-sync set**, and changes them only by [`Command`]s that every
//! controller node applies in the same order ([`ControllerState::apply`]: deterministic, no clock
//! and no I/O), so that replicated through a Raft log the nodes agree on who may write.
//! Decisions that depend on time — a master silent for too long — are taken outside, by the
//! controller leader, which proposes an [`Command::Elect`] carrying what it observed.

pub mod log_store;
pub mod raft;
mod state;

pub use log_store::LogStore;
pub use raft::{NodeId, Raft, StateMachine, TypeConfig};
pub use state::{BrokerId, BrokerSet, Command, ControllerState, Election, Outcome};
