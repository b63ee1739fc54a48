//! wasmq's sockets, shared by the client and the broker's front ends: TLS configuration (ring,
//! TLS 1.3 and 1.2), accepting with a connection limit and a handshake deadline, the
//! read-ahead beneath TLS, vectored writes, and the multiplexed [`Connection`] of the native
//! protocol (a client's, and a broker's to its master or to name servers).
//!
//! Knows sockets, TLS and frames; knows nothing of the broker's domain.

mod accept;
mod connection;
mod error;
mod io;
mod tls;

pub use accept::{HANDSHAKE_TIMEOUT, TlsStream, serve_tls};
pub use connection::{Connection, ConnectionOptions, REPLAY_MAX};
pub use error::ClientError;
pub use io::{READ_AHEAD_BYTES, ResetOnClose, read_ahead, write_parts};
pub use tls::{client_config, provider, server_config, server_name};

/// `n_bytes` random bytes as hex.
pub fn random_hex(n_bytes: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n_bytes).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}
