//! The RocketMQ 5 gRPC API, `apache.rocketmq.v2`, generated at build time from the `.proto`
//! files vendored unmodified in `third_party/rocketmq-apis` (compiled by `protox`: no `protoc`
//! to install): the messages, the `MessagingService` server trait the gRPC front end implements,
//! and the client `wasmq bench grpc` drives it with. One crate, so that the CLI gets the client
//! without the broker's crates. Both sides run a connection's HTTP/2 streams on the
//! connection's own task ([`local`]). [`sign`] makes the request signatures clients send; [`client`] carries a generated
//! client's requests on one HTTP/2 connection.

pub mod client;
pub mod local;
pub mod sign;

/// The generated API.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("apache.rocketmq.v2");
}
