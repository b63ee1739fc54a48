//! Runs wasmq's WebAssembly plugins under wasmtime.
//!
//! A plugin is a component of the `wasmq:plugin/plugin` world (`plugins/wit/plugin.wit`); a
//! core module built with the SDK for `wasm32-unknown-unknown` is turned into one on load. The
//! pieces, from cold to hot:
//!
//! - [`Runtime`]: one wasmtime engine (pooling allocator, epoch interruption, memory and stack
//!   caps), its epoch ticker, and the on-disk cache of compiled artifacts.
//! - [`Plugin`]: a validated, compiled plugin version (content-addressed by SHA-256), with its
//!   pre-instantiated form and manifest.
//! - [`Session`]: one live instance (a store), reused across batches. Any trap discards it.
//! - [`Attached`]: a plugin bound to a topic or group with a configuration: a small pool of
//!   sessions, per-attachment stats and a circuit breaker. This is what the broker calls.
//!
//! - [`PluginRegistry`]: the broker's uploaded versions and attachments, persisted, with the
//!   live attachments as the engine's plugin traits (`wasmq_engine::Router`, `KeySelector`,
//!   `DeliveryFilter`, looked up through `wasmq_engine::Plugins`).
//!
//! The host only reports failures ([`CallError`]); what a failure means for a message (fail
//! open or closed) is the engine's to apply, by the attachment's [`FailurePolicy`].

mod attached;
mod batch;
mod registry;
mod runtime;
mod session;

/// Bindings generated from `plugins/wit/plugin.wit`.
#[allow(missing_debug_implementations, unreachable_pub, clippy::all)]
pub mod bindings {
    wasmtime::component::bindgen!({ path: "../../plugins/wit", world: "plugin", additional_derives: [PartialEq, Eq] });
}

pub use attached::{
    Attached, BREAKER_BACKOFF, BREAKER_BACKOFF_MAX, BREAKER_FAILURES, BREAKER_WINDOW, Breaker, FailurePolicy, Stats, StatsSnapshot,
};
pub use batch::BatchBuilder;
pub use bindings::wasmq::plugin::host::Level;
pub use bindings::wasmq::plugin::types::{Attachment, Batch, Delivery, Fields, Manifest, OrderingKey, Role, Route};
pub use registry::{PluginError, PluginRegistry};
pub use runtime::{Limits, LoadError, Plugin, Runtime};
pub use session::{COUNTERS_MAX, CallError, LOG_LINE_BYTES_MAX, LOG_LINES_PER_SECOND, LogLine, Session, TrapKind};

/// Largest plugin binary accepted.
pub const PLUGIN_BYTES_MAX: usize = 10 << 20;

pub use wasmq_engine::key_hash;

/// A role's name as operators write it (`router`, `ordering-key`, `filter`).
#[must_use]
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Router => "router",
        Role::OrderingKey => "ordering-key",
        Role::Filter => "filter",
    }
}

/// Parses [`role_name`]'s output.
#[must_use]
pub fn parse_role(s: &str) -> Option<Role> {
    match s {
        "router" => Some(Role::Router),
        "ordering-key" => Some(Role::OrderingKey),
        "filter" => Some(Role::Filter),
        _ => None,
    }
}

/// The field names of a [`Fields`] set (`key`, `tags`, `properties`, `body`).
#[must_use]
pub fn field_names(f: Fields) -> Vec<&'static str> {
    [(Fields::KEY, "key"), (Fields::TAGS, "tags"), (Fields::PROPERTIES, "properties"), (Fields::BODY, "body")]
        .into_iter()
        .filter(|(x, _)| f.contains(*x))
        .map(|(_, n)| n)
        .collect()
}
