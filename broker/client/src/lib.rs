//! Async Rust client for wasmq: a multiplexed TLS [`Connection`], a [`Producer`] (sync, async,
//! one-way, batches, retries, round-robin or ordering-key queue choice), a [`PullConsumer`]
//! with long polling, and an [`Admin`] client for the HTTPS admin API.
//!
//! Knows the wire protocol and TLS; knows nothing of the broker's internals.

mod admin;
mod admin_users;
mod cluster;
mod consumer;
mod group;
mod producer;
mod transaction;

pub use admin::{Admin, Browse};
pub use cluster::{AVOID_FAILED_BROKER, Cluster, ClusterConsumer, ClusterProducer, ClusterReceipt, ROUTE_REFRESH};
pub use consumer::{PullConsumer, QueueReader};
pub use group::{ConsumeResult, GroupConsumer, GroupOptions, Handler, StartFrom};
pub use producer::{OutgoingMessage, Producer, RETRIES_DEFAULT, SendReceipt, queue_for_key};
pub use transaction::{Checker, Transaction, TransactionCheck, TransactionProducer, TxDecision, TxState};
pub use wasmq_admin_types as admin_types;
pub use wasmq_net::{ClientError, Connection, ConnectionOptions, READ_AHEAD_BYTES, client_config, read_ahead, write_parts};
pub use wasmq_protocol::{ErrorCode, GroupMode, Message, PullResponse, PulledMessage, SendStatus};
