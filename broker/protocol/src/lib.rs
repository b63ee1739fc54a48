//! wasmq's wire protocol: frames, requests, responses and error codes, as a pure codec.
//!
//! Knows bytes and message shapes; knows nothing of sockets, TLS, async runtimes or storage.
//! The byte layout is documented in `docs/protocol.md`. All integers are little-endian.
//!
//! ```text
//! frame    := frame_bytes u32 | kind u8 | request_id u32 | code u16 | body
//! kind     := 1 request (code = op) | 2 response (code = status: 0 ok, else an ErrorCode)
//! ```
//! `frame_bytes` counts everything after itself. A request with `request_id` 0 is one-way: the
//! broker sends no response.

mod codec;
mod error;
mod frame;
mod message;

pub use codec::{DecodeError, Reader, Writer};
pub use error::ErrorCode;
pub use frame::{
    FRAME_BYTES_MAX, FRAME_HEADER_BYTES, Frame, FrameDecoder, FrameError, Kind, OutFrame, WRITE_BATCH_BYTES_MAX, gather_batch,
};
pub use message::{
    BATCH_MESSAGES_MAX, BROKERS_MAX, BrokerEntry, BrokerLive, BrokerRoute, CheckTransactionRequest, Credentials, ENDPOINTS_MAX,
    EPOCHS_LISTED_MAX, EndTransactionRequest, EndTransactionResponse, Endpoint, GetRouteResponse, GroupCommitRequest,
    GroupHeartbeatRequest, GroupHeartbeatResponse, GroupLeaveRequest, GroupMode, HeartbeatRequest, HelloRequest, HelloResponse,
    LockQueueRequest, MESSAGE_BYTES_MAX, Message, OffsetCommitRequest, OffsetQueryRequest, OffsetQueryResponse, Op, PROTOCOL_VERSION,
    PULL_MESSAGES_MAX, PULL_WAIT_MAX_MS, PullRequest, PullResponse, PulledMessage, QUEUE_ANY, ReadFrom, RegisterBrokerRequest,
    ReplicaFetchRequest, ReplicaFetchResponse, ReplicaMetaRequest, ReplicaMetaResponse, Request, Response, RouteRequest, RouteResponse,
    SendBackRequest, SendRequest, SendResponse, SendResult, SendStatus, TOPICS_PER_BROKER_MAX, TxDecision, TxState,
};
