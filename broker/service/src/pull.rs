//! The pull use case: a queue read with filters, waiting (long poll) for something to read.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmq_engine::Wake;
use wasmq_store::QueueRead;

use crate::{Service, ServiceError};

/// Largest pull answer (message bytes) the broker builds.
pub const PULL_BYTES_MAX: u32 = 8 << 20;
/// Pause before reading again when a long poll could not park (something arrived meanwhile,
/// or the queue has too many waiters), so a waiter flood cannot spin.
const REPARK_PAUSE: Duration = Duration::from_millis(1);

/// A consumer's read of one queue.
#[derive(Debug, Clone)]
pub struct Pull {
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    pub max_messages: usize,
    pub max_bytes: usize,
    /// How long to wait for a message when there is none (0: answer at once).
    pub wait: Duration,
    /// A tag expression (`A || B`, `*`).
    pub tag_filter: Option<String>,
    /// The consumer group, whose filter plugin on this topic judges what it gets.
    pub group: Option<String>,
}

/// Where a consumer should read next (RocketMQ's `suggestPullingFromSlave`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Here,
    Slave,
    Master,
}

/// A pull's answer.
#[derive(Debug)]
pub struct Pulled {
    pub read: QueueRead,
    pub suggest: ReadFrom,
}

impl Service {
    /// Reads a queue; with nothing to return, waits until a message arrives, a held retry falls
    /// due, the wait ends or `cancel` fires. A read below the retained range answers where the
    /// queue now begins (RocketMQ's OFFSET_TOO_SMALL with its next begin offset).
    ///
    /// # Errors
    /// Internal topics, unknown topic or queue, a bad tag filter, a failed read.
    pub async fn pull(&self, p: &Pull, cancel: &CancellationToken) -> Result<Pulled, ServiceError> {
        let engine = &self.engine;
        if wasmq_engine::is_internal_topic(&p.topic) {
            // Half messages must stay invisible; held messages are read through their topic.
            return Err(ServiceError::InvalidTopic(format!("{} is internal to the broker", p.topic)));
        }
        let deadline = tokio::time::Instant::now() + p.wait;
        let filter = p.group.as_deref().and_then(|g| self.plugins.delivery_filter(&p.topic, g).map(|f| (g, f)));
        loop {
            let pulled = match p.tag_filter.as_deref() {
                Some(f) => engine.pull_filtered(&p.topic, p.queue_id, p.offset, p.max_messages, p.max_bytes, f),
                None => engine.pull(&p.topic, p.queue_id, p.offset, p.max_messages, p.max_bytes),
            };
            let read = match pulled {
                // A filter plugin on the group's subscription keeps what the group gets.
                Ok(r) => match &filter {
                    Some((g, f)) => engine.filter_delivery(g, &p.topic, f.as_ref(), r),
                    None => r,
                },
                Err(wasmq_engine::PullError::Read(wasmq_store::ReadError::Trimmed { .. })) => {
                    let (min_offset, max_offset) = engine.store().queue_bounds(&p.topic, p.queue_id);
                    let read = QueueRead { messages: Vec::new(), next_offset: min_offset, min_offset, max_offset };
                    return Ok(Pulled { read, suggest: ReadFrom::Here });
                }
                Err(e) => return Err(e.into()),
            };
            let now = tokio::time::Instant::now();
            // A filtered pull that skipped messages answers at once, so the offset moves on.
            if !read.messages.is_empty() || read.next_offset > p.offset || now >= deadline || cancel.is_cancelled() {
                let suggest = self.replication.suggest(engine.store().end_offset(), read.messages.first().map(|m| m.log_offset));
                if !read.messages.is_empty() {
                    let labels = crate::metrics::DeliveryLabels { topic: p.topic.clone(), group: p.group.clone().unwrap_or_default() };
                    let m = &self.metrics;
                    m.messages_out.get_or_create(&labels).inc_by(read.messages.len() as u64);
                    m.bytes_out.get_or_create(&labels).inc_by(read.messages.iter().map(|m| m.body.len() as u64).sum());
                }
                return Ok(Pulled { read, suggest });
            }
            if read.max_offset > p.offset {
                // Messages are there but held (a retry queue): sleep until the next is due.
                let due_in = engine
                    .held_until(&p.topic, p.queue_id, p.offset)
                    .map_or(REPARK_PAUSE, |due| Duration::from_millis(due.saturating_sub(engine.now_ms())));
                tokio::select! {
                    () = tokio::time::sleep(due_in.min(deadline - now)) => {}
                    () = cancel.cancelled() => {}
                }
                continue;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if engine.wait_for(&p.topic, p.queue_id, p.offset, Box::new(Waker(tx))).is_some() {
                // Something arrived meanwhile (or the queue has too many waiters): read again
                // after a short pause.
                tokio::time::sleep(REPARK_PAUSE).await;
                continue;
            }
            self.metrics.long_polls_waiting.inc();
            tokio::select! {
                _ = rx => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = cancel.cancelled() => {}
            }
            self.metrics.long_polls_waiting.dec();
        }
    }
}

/// A long poll's wake-up: a oneshot to the waiting request.
struct Waker(tokio::sync::oneshot::Sender<()>);

impl Wake for Waker {
    fn wake(self: Box<Self>) {
        let _ = self.0.send(());
    }

    fn is_cancelled(&self) -> bool {
        self.0.is_closed()
    }
}
