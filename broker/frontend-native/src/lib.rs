//! The native protocol front end: the connection loop (`conn.rs`: TLS stream, frames, Hello,
//! requests in flight, each answered by the [`wasmq_service::Service`]), the one mapping
//! between service and wire (`wire.rs`), what each request needs to be allowed (`authz.rs`), producer connections for check-backs
//! (`producers.rs`), and a slave's follower of its master (`follower.rs`).
//!
//! A new protocol front end has the same shape: a crate beside this one that serves its
//! listener's connections by calling the service, and maps the service's errors in one file.

pub mod authz;
mod conn;
mod follower;
mod producers;
pub mod wire;

pub use conn::{Shared, serve};
pub use follower::follow;
pub use producers::Producers;

/// The ALPN protocol name of the native protocol.
pub const ALPN: &[u8] = b"wasmq/1";
