//! Error codes on the wire: a small, stable set. Numbers never change meaning; the golden test
//! below pins each one.

/// A response status other than 0 (ok). The response body is a UTF-8 message for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame or body could not be decoded.
    Malformed = 1,
    /// No protocol version in common.
    UnsupportedVersion = 2,
    /// An op this broker does not know.
    UnknownOp = 3,
    /// A request other than Hello before the handshake.
    HandshakeRequired = 4,
    /// The frame is larger than the broker's limit.
    FrameTooLarge = 5,
    /// The connection has too many requests in flight.
    TooManyInFlight = 6,
    /// The topic does not exist.
    UnknownTopic = 10,
    /// The topic exists already.
    TopicExists = 11,
    /// The topic name is not valid.
    InvalidTopic = 12,
    /// The queue id is not below the topic's queue count.
    InvalidQueue = 13,
    /// A message body is over the limit.
    MessageTooLarge = 14,
    /// Too many messages or bytes in one batch.
    BatchTooLarge = 15,
    /// A message is invalid (property limits, empty batch, …).
    InvalidMessage = 16,
    /// The pull offset was deleted by retention; the body names the lowest offset.
    OffsetTrimmed = 20,
    /// Stored on the broker but not fsynced within the timeout (sync flush): the send may or
    /// may not survive a power loss.
    FlushTimeout = 30,
    /// The store stopped accepting writes (a failed fsync): nothing more will be stored.
    StoreFailed = 31,
    /// The disk is full: the message was not stored.
    DiskFull = 32,
    /// The broker is shutting down.
    ShuttingDown = 33,
    /// Stored data is corrupt at the offset named in the body.
    Corrupt = 34,
    /// The group, client or offset request is invalid.
    InvalidRequest = 40,
    /// A group commit from a member that no longer owns the queue at that generation: rejoin.
    Fenced = 41,
    /// This broker is a slave: it takes no writes (the body names its master).
    NotMaster = 42,
    /// An unexpected broker error; the body says what.
    Internal = 50,
    /// A plugin attached to the topic refused the message (the body gives its reason); sending
    /// it again gets the same answer.
    PluginRejected = 60,
    /// A fail-closed plugin attached to the topic failed (trap, timeout, open breaker): nothing
    /// was stored. Retrying later may succeed.
    PluginFailed = 61,
    /// Hello's credentials were refused (wrong user or password, too many failed logins, or
    /// none where the broker requires them): the connection is closed.
    NotAuthenticated = 70,
    /// The policies do not allow this user this action on this resource (the body says which);
    /// the connection stays usable.
    NotAuthorized = 71,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 27] = [
        Self::Malformed,
        Self::UnsupportedVersion,
        Self::UnknownOp,
        Self::HandshakeRequired,
        Self::FrameTooLarge,
        Self::TooManyInFlight,
        Self::UnknownTopic,
        Self::TopicExists,
        Self::InvalidTopic,
        Self::InvalidQueue,
        Self::MessageTooLarge,
        Self::BatchTooLarge,
        Self::InvalidMessage,
        Self::OffsetTrimmed,
        Self::FlushTimeout,
        Self::StoreFailed,
        Self::DiskFull,
        Self::ShuttingDown,
        Self::Corrupt,
        Self::InvalidRequest,
        Self::Fenced,
        Self::NotMaster,
        Self::Internal,
        Self::PluginRejected,
        Self::PluginFailed,
        Self::NotAuthenticated,
        Self::NotAuthorized,
    ];

    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u16 == v)
    }

    /// Whether sending the same request again (to another queue) may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::TooManyInFlight | Self::FlushTimeout | Self::ShuttingDown | Self::Internal | Self::DiskFull | Self::PluginFailed
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?} ({})", *self as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: the wire numbers. Changing one breaks every deployed client.
    #[test]
    fn error_code_numbers_are_pinned() {
        let golden = [
            (ErrorCode::Malformed, 1),
            (ErrorCode::UnsupportedVersion, 2),
            (ErrorCode::UnknownOp, 3),
            (ErrorCode::HandshakeRequired, 4),
            (ErrorCode::FrameTooLarge, 5),
            (ErrorCode::TooManyInFlight, 6),
            (ErrorCode::UnknownTopic, 10),
            (ErrorCode::TopicExists, 11),
            (ErrorCode::InvalidTopic, 12),
            (ErrorCode::InvalidQueue, 13),
            (ErrorCode::MessageTooLarge, 14),
            (ErrorCode::BatchTooLarge, 15),
            (ErrorCode::InvalidMessage, 16),
            (ErrorCode::OffsetTrimmed, 20),
            (ErrorCode::FlushTimeout, 30),
            (ErrorCode::StoreFailed, 31),
            (ErrorCode::DiskFull, 32),
            (ErrorCode::ShuttingDown, 33),
            (ErrorCode::Corrupt, 34),
            (ErrorCode::InvalidRequest, 40),
            (ErrorCode::Fenced, 41),
            (ErrorCode::NotMaster, 42),
            (ErrorCode::Internal, 50),
            (ErrorCode::PluginRejected, 60),
            (ErrorCode::PluginFailed, 61),
            (ErrorCode::NotAuthenticated, 70),
            (ErrorCode::NotAuthorized, 71),
        ];
        assert_eq!(golden.len(), ErrorCode::ALL.len(), "every code is pinned");
        for (code, n) in golden {
            assert_eq!(code as u16, n, "{code:?}");
            assert_eq!(ErrorCode::from_u16(n), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(0), None, "0 is ok, not an error");
        assert_eq!(ErrorCode::from_u16(999), None);
    }
}
