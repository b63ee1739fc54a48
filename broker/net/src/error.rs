use wasmq_protocol::ErrorCode;

/// What went wrong talking to a broker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("broker answered {code}: {message}")]
    Broker { code: ErrorCode, message: String },
    #[error("broker answered unknown status {0}")]
    UnknownStatus(u16),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("admin API {status}: {message}")]
    Admin { status: u16, message: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again (elsewhere) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Broker { code, .. } => code.is_retryable(),
            Self::Closed(_) | Self::Timeout(_) | Self::Connect { .. } => true,
            _ => false,
        }
    }
}
