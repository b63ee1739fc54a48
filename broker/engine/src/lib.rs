//! wasmq's broker domain over the store: the topic registry, sends with queue selection,
//! pulls with long-poll waiters, consumer-group offsets and client liveness.
//!
//! Knows topics, queues, groups and offsets; knows nothing of sockets, TLS, the wire format or
//! async runtimes. Long polling is a callback ([`Wake`]) the I/O shell implements; time comes
//! from the store's [`wasmq_store::Clock`].

mod engine;
mod groups;
mod offsets;
mod parked;
mod plugin;
mod replica;
mod topics;

pub use engine::{
    ClientAbout, ClientInfo, Engine, EngineError, GROUP_SESSION_TIMEOUT_MS_DEFAULT, GroupCommitError, GroupSettings,
    MAX_RECONSUME_TIMES_DEFAULT, ORDER_LOCK_TTL_MS_DEFAULT, ORIGIN_TOPIC_PROPERTY, PlainSend, PullError, RECEIPTS_TOPIC,
    RECEIVED_PER_QUEUE_MAX, RENEW_AHEAD_MS, RENEW_CLIENT_SILENT_MS, RENEW_MAX_MS, RENEW_SLICE_MS, RETRY_DELAYS_MS_DEFAULT, Receipt,
    ReceiptError, Receive, Received, SendBackOutcome, SendError, Wake, dlq_topic, retry_topic,
};
pub use groups::{Assignment, Coordinator, FenceError, GROUP_MEMBERS_MAX, GROUP_TOPICS_MAX, GroupMode, GroupView, TagFilter};
pub use offsets::OffsetTable;
pub use parked::{
    CheckDue, DELAY_MAX_MS_DEFAULT, Decided, Decision, EndOutcome, HALF_TOPIC, PENDING_HALVES_MAX, ParkPolicy, PendingTransactions,
    RECALLED_TOPIC, RECEIVE_STATE_FILE, RecallError, SCHEDULE_TOPIC, SCHEDULED_MAX, ScheduleStatus, TX_CHECK_INTERVAL_MS_DEFAULT,
    TX_CHECKS_MAX_DEFAULT, TX_OP_TOPIC, TxCounters, WATERMARKS_FILE, forget_recovery_state, is_internal_topic,
};
pub use plugin::{
    Attachment, Delivery, DeliveryFilter, FailurePolicy, KeySelector, NoPlugins, OrderingKey, PlacementError, PluginMessage, Plugins,
    Route, Router, SendPath, Verdict, key_hash, place,
};
pub use topics::{
    MessageType, QUEUES_PER_TOPIC_MAX, QueueStatus, TOPICS_MAX, TopicConfig, TopicError, TopicOptions, TopicStatus, validate_group,
};
