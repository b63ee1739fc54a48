//! Pull consumption with long polling.

use std::time::Duration;

use wasmq_protocol::{PullRequest, PullResponse, PulledMessage, Request, Response};

use crate::{ClientError, Connection};

/// Reads queues from offsets the caller chooses.
#[derive(Debug, Clone)]
pub struct PullConsumer {
    conn: Connection,
    group: Option<String>,
}

impl PullConsumer {
    pub fn new(conn: Connection) -> Self {
        Self { conn, group: None }
    }

    /// A consumer that pulls on behalf of `group`: a filter plugin attached to the group's
    /// subscription then runs on the broker for these pulls.
    pub fn for_group(conn: Connection, group: impl Into<String>) -> Self {
        Self { conn, group: Some(group.into()) }
    }

    /// One pull: up to `max_messages` from `offset`; waits up to `wait` when there is nothing.
    ///
    /// # Errors
    /// Unknown topic or queue, trimmed offset, connection failure.
    pub async fn pull(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_messages: u32,
        wait: Duration,
    ) -> Result<PullResponse, ClientError> {
        self.pull_filtered(topic, queue_id, offset, max_messages, wait, None).await
    }

    /// As [`PullConsumer::pull`], keeping only messages whose tag matches `filter` (`A || B`);
    /// skipped messages still advance `next_offset`.
    ///
    /// # Errors
    /// As [`PullConsumer::pull`], or an invalid filter.
    pub async fn pull_filtered(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_messages: u32,
        wait: Duration,
        filter: Option<&str>,
    ) -> Result<PullResponse, ClientError> {
        let req = Request::Pull(PullRequest {
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_messages,
            max_bytes: 4 << 20,
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            filter: filter.map(str::to_owned),
            group: self.group.clone(),
        });
        let timeout = self.conn.options().request_timeout + wait;
        match self.conn.call_with_timeout(&req, timeout).await? {
            Response::Pull(p) => Ok(p),
            _ => Err(ClientError::Malformed("Pull answered with another response".into())),
        }
    }

    /// Reads one queue from `offset` onwards, message by message.
    pub fn reader(&self, topic: &str, queue_id: u32, offset: u64) -> QueueReader {
        QueueReader {
            consumer: self.clone(),
            topic: topic.to_owned(),
            queue_id,
            offset,
            skip_to: offset,
            buffered: std::collections::VecDeque::new(),
            wait: Duration::from_secs(5),
        }
    }
}

/// An iterator-like reader of one queue: `next().await` returns the next message, long-polling
/// when the queue is drained.
#[derive(Debug)]
pub struct QueueReader {
    consumer: PullConsumer,
    topic: String,
    queue_id: u32,
    offset: u64,
    /// Where the last pull said the next one starts (past messages it skipped).
    skip_to: u64,
    buffered: std::collections::VecDeque<PulledMessage>,
    wait: Duration,
}

impl QueueReader {
    /// The offset of the next message this reader will return.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next message, or `None` if none arrived within one long poll.
    ///
    /// # Errors
    /// As [`PullConsumer::pull`].
    pub async fn next(&mut self) -> Result<Option<PulledMessage>, ClientError> {
        if self.buffered.is_empty() {
            // Messages the broker skipped after the last one returned are passed too.
            self.offset = self.offset.max(self.skip_to);
            let p = self.consumer.pull(&self.topic, self.queue_id, self.offset, 256, self.wait).await?;
            self.skip_to = p.next_offset;
            if p.messages.is_empty() {
                self.offset = self.offset.max(p.next_offset);
            }
            self.buffered.extend(p.messages);
        }
        let m = self.buffered.pop_front();
        if let Some(m) = &m {
            self.offset = m.queue_offset + 1;
        }
        Ok(m)
    }
}
