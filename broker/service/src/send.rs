//! The send use case: place, hold or append, then wait for the promised durability.

use std::sync::Arc;

use wasmq_engine::{MessageType, PlainSend, place};
use wasmq_store::{Appended, FlushMode, NewMessage};

use crate::{Service, ServiceError};

/// A transactional send: the messages are half messages of `producer_group`'s transaction.
#[derive(Debug, Clone)]
pub struct TransactionSend {
    pub producer_group: String,
    /// When to ask a producer first if no decision came (none: the broker's default).
    pub check_after_ms: Option<u64>,
}

/// A producer's batch for one topic.
#[derive(Debug)]
pub struct Send {
    pub topic: String,
    /// `None`: the topic's plugins, else round robin.
    pub queue: Option<u32>,
    pub messages: Vec<NewMessage>,
    pub transaction: Option<TransactionSend>,
}

/// How safe a stored batch is when the sender is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Everything the broker set promises: flushed under sync flush, and on enough slaves under
    /// synchronous replication.
    Ok,
    /// Stored (and flushed, under sync flush) on the master; not on enough slaves within the
    /// replica timeout.
    SlaveTimeout,
    /// Stored on the master; too few slaves connected to wait for.
    SlaveNotAvailable,
}

/// Where a batch was stored.
#[derive(Debug)]
pub struct Sent {
    /// The first message's queue.
    pub queue_id: u32,
    /// Each message's queue, when plugins or holding chose them (else all are `queue_id`).
    pub queue_ids: Vec<u32>,
    pub appended: Appended,
}

impl Sent {
    /// Message `i`'s queue.
    #[must_use]
    pub fn queue_of(&self, i: usize) -> u32 {
        self.queue_ids.get(i).copied().unwrap_or(self.queue_id)
    }
}

/// Sends gathered for one group append by [`Service::send_gathered`]. No limit of its own: each
/// entry is a request in flight, which its front end bounds (gRPC: `STREAMS_MAX` per
/// connection, and the broker's connection limit); the group append then takes them in groups of
/// at most `GROUP_SENDS_MAX`.
#[derive(Default)]
pub(crate) struct Gathered(std::sync::Mutex<Vec<(Send, Answer)>>);

impl std::fmt::Debug for Gathered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gathered").finish_non_exhaustive()
    }
}

impl Gathered {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Send, Answer)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a sender queued with [`Service::submit`] is told (by whichever task appended it).
pub type Answer = Box<dyn FnOnce(Result<(Sent, Guarantee), ServiceError>) + std::marker::Send>;

/// A send placed and checked, not yet stored.
enum Prepared {
    /// A transaction's half messages or scheduled messages, stored already (held messages are
    /// appended on their own, with the engine's bookkeeping around the append).
    Held(Sent),
    /// A plain send for the group append; `queue_ids` as in [`Sent`].
    Plain { plain: PlainSend, queue_ids: Vec<u32> },
}

impl Service {
    /// Stores a batch and waits until it is as safe as the broker set promises.
    ///
    /// # Errors
    /// Unknown topic or queue, a plugin's refusal, the store's refusal, a flush timeout.
    pub async fn send(&self, send: Send) -> Result<(Sent, Guarantee), ServiceError> {
        let sent = self.store(send).await?;
        let first = sent.appended.messages[0].log_offset;
        let guarantee = self.durable(sent.appended.end_offset, || format!("stored at log offset {first}")).await?;
        Ok((sent, guarantee))
    }

    /// Queues sends and returns, having appended them (and others queued meanwhile) unless
    /// another sender was appending already; each one's `done` gets its result once it is
    /// appended, on whichever task appended it (it should only hand the answer on). For a front
    /// end that answers sends without waiting for each before reading the next request, so the
    /// sends of one connection (all it read at once: one queue entry) share a group append.
    /// Held messages (halves, scheduled) are stored as they are placed, ahead of plain sends
    /// queued before them in the same call: they go to the broker's own topics, so no queue's
    /// order changes. Where the broker set promises more than the append
    /// ([`Service::answers_at_append`] is false) each is [`Service::send`] awaited here, in order.
    pub async fn submit(&self, sends: Vec<(Send, Answer)>) {
        if !self.answers_at_append() {
            for (send, done) in sends {
                done(self.send(send).await);
            }
            return;
        }
        self.append_queued(sends);
    }

    /// Stores a send as [`Service::send`] does, gathered with the sends other tasks make
    /// meanwhile into one group append: for a front end that serves each request on a task of
    /// its own (gRPC streams), whose sends would otherwise each append alone. The first sender
    /// to find nothing gathered starts a task that lets the tasks ready now run first, then
    /// appends everything gathered.
    ///
    /// # Errors
    /// As [`Service::send`].
    pub async fn send_gathered(self: &Arc<Self>, send: Send) -> Result<(Sent, Guarantee), ServiceError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let answer: Answer = Box::new(move |r| {
            let _ = tx.send(r);
        });
        let first = {
            let mut gathered = self.gathered.lock();
            gathered.push((send, answer));
            gathered.len() == 1
        };
        if first {
            // On a task of its own: a sender whose request is dropped must not strand the rest.
            let service = Arc::clone(self);
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                let sends = std::mem::take(&mut *service.gathered.lock());
                service.append_queued(sends);
            });
        }
        let (sent, _) = rx.await.map_err(|_| ServiceError::ShuttingDown("the appender stopped".into()))??;
        if self.answers_at_append() {
            return Ok((sent, Guarantee::Ok));
        }
        let first = sent.appended.messages[0].log_offset;
        let guarantee = self.durable(sent.appended.end_offset, || format!("stored at log offset {first}")).await?;
        Ok((sent, guarantee))
    }

    /// Places sends and hands the plain ones to the group append; each one's answer comes once
    /// it is appended (held ones once stored), with [`Guarantee::Ok`]: not yet durable.
    fn append_queued(&self, sends: Vec<(Send, Answer)>) {
        let mut plain = Vec::with_capacity(sends.len());
        for (send, done) in sends {
            match self.prepare(send) {
                Err(e) => done(Err(e)),
                Ok(Prepared::Held(sent)) => done(Ok((sent, Guarantee::Ok))),
                Ok(Prepared::Plain { plain: p, queue_ids }) => {
                    let answer = move |r: Result<(u32, Appended), wasmq_engine::SendError>| {
                        done(r.map(|(queue_id, appended)| (sent(queue_id, queue_ids, appended), Guarantee::Ok)).map_err(Into::into));
                    };
                    plain.push((p, Box::new(answer) as crate::appender::Done));
                }
            }
        }
        self.appender.submit(plain);
    }

    /// Stores a batch as the topic's plugins and the messages ask: routing and ordering-key
    /// plugins choose queues; a transaction's half messages and scheduled messages are held;
    /// plain sends go through the group append. Not yet durable (see [`Service::durable`]).
    ///
    /// # Errors
    /// As [`Service::send`], but for the durability wait.
    pub async fn store(&self, send: Send) -> Result<Sent, ServiceError> {
        match self.prepare(send)? {
            Prepared::Held(sent) => Ok(sent),
            Prepared::Plain { plain, queue_ids } => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let done: crate::appender::Done = Box::new(move |r| {
                    let _ = tx.send(r);
                });
                self.appender.submit(vec![(plain, done)]);
                let (queue_id, appended) = rx.await.map_err(|_| ServiceError::ShuttingDown("the appender stopped".into()))??;
                Ok(sent(queue_id, queue_ids, appended))
            }
        }
    }

    /// Places a batch (plugins, held messages) and stores held ones.
    fn prepare(&self, send: Send) -> Result<Prepared, ServiceError> {
        let engine = &self.engine;
        let Send { topic, queue, mut messages, transaction } = send;
        if topic.starts_with('%') {
            return Err(ServiceError::InvalidTopic(format!("{topic}: topics starting with % are the broker's own")));
        }
        if messages.is_empty() {
            return Err(wasmq_store::AppendError::EmptyBatch.into());
        }
        engine.check_message_type(&topic, message_type(&messages, transaction.is_some())).map_err(|e| match e {
            wasmq_engine::TopicError::WrongMessageType { .. } => ServiceError::WrongMessageType(e.to_string()),
            other => ServiceError::Internal(other.to_string()),
        })?;
        // Routing and ordering-key plugins attached to the topic choose each message's queue; a
        // topic without them costs one map lookup here.
        let mut routed = false;
        if let Some(path) = self.plugins.send_path(&topic)
            && let Some(config) = engine.topic(&topic)
        {
            let default_queue = queue.unwrap_or_else(|| engine.pick_queue(config.queues));
            place(path.router.as_deref(), path.key.as_deref(), &mut messages, config.queues, default_queue)?;
            routed = true;
        }
        let now = crate::now_ms();
        let scheduled = messages.iter().any(|m| m.properties.delivery_ms.is_some_and(|d| d > now));
        let held = transaction.is_some() || scheduled;
        if held && !routed {
            // Held messages are stored elsewhere first: their queue is chosen now.
            let queues = engine.topic(&topic).map(|c| c.queues).ok_or_else(|| crate::unknown_topic(&topic))?;
            let q = queue.unwrap_or_else(|| engine.pick_queue(queues));
            messages.iter_mut().for_each(|m| m.queue_id = q);
        }
        let queue_ids: Vec<u32> = if routed || held { messages.iter().map(|m| m.queue_id).collect() } else { Vec::new() };
        let first = queue_ids.first().copied().unwrap_or_default();
        let (n, bytes) = (messages.len() as u64, messages.iter().map(|m| m.body.len() as u64).sum());
        if let Some(tx) = transaction {
            let appended = engine.send_half(&topic, &tx.producer_group, tx.check_after_ms, messages)?;
            self.metrics.stored(&topic, n, bytes);
            return Ok(Prepared::Held(Sent { queue_id: first, queue_ids, appended }));
        }
        if scheduled {
            let appended = engine.send_scheduled(&topic, messages)?;
            self.metrics.stored(&topic, n, bytes);
            return Ok(Prepared::Held(Sent { queue_id: first, queue_ids, appended }));
        }
        Ok(Prepared::Plain { plain: PlainSend { topic, queue, routed, messages }, queue_ids })
    }

    /// Waits until the log up to `end_offset` is as safe as the broker set promises: fsynced
    /// under sync flush (`what` names the write in a timeout's message), and held by enough
    /// slaves under synchronous replication (else the guarantee says why not: the bytes are on
    /// the master). Every write a client or the admin API makes waits here before it is
    /// answered.
    ///
    /// # Errors
    /// [`ServiceError::FlushTimeout`], a failed store, shutdown.
    pub async fn durable(&self, end_offset: u64, what: impl FnOnce() -> String) -> Result<Guarantee, ServiceError> {
        let store = self.engine.store();
        if let FlushMode::Sync { timeout } = store.config().flush {
            let (tx, rx) = tokio::sync::oneshot::channel();
            store.on_durable(end_offset, move |r| {
                let _ = tx.send(r);
            });
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(ServiceError::StoreFailed(e.to_string())),
                Ok(Err(_)) => return Err(ServiceError::ShuttingDown("store closed before the flush".into())),
                Err(_) => return Err(ServiceError::FlushTimeout(format!("{} but not flushed within {timeout:?}", what()))),
            }
        }
        let guarantee = if matches!(self.replication.mode, crate::Mode::Sync { .. }) {
            let started = std::time::Instant::now();
            let guarantee = self.replication.replicated(end_offset).await;
            self.metrics.replication_wait_seconds.observe(started.elapsed().as_secs_f64());
            guarantee
        } else {
            crate::Guarantee::Ok
        };
        // Checked last, at the moment of answering: a master paused or cut off past its lease
        // acknowledges nothing, whatever it stored meanwhile.
        if let Some(over) = self.replication.lease_expired() {
            return Err(ServiceError::NotMaster(format!(
                "{} but not acknowledged: this master's lease from the failover controller ran out {} ms ago (another master may have been elected)",
                what(),
                over.as_millis()
            )));
        }
        Ok(guarantee)
    }
}

/// The kind of message a batch carries, as a topic's message type names it: a transaction's,
/// else delayed if any message has a delivery time, else FIFO if any has an ordering key (a
/// RocketMQ message group).
fn message_type(messages: &[NewMessage], transaction: bool) -> MessageType {
    if transaction {
        MessageType::Transaction
    } else if messages.iter().any(|m| m.properties.delivery_ms.is_some()) {
        MessageType::Delay
    } else if messages.iter().any(|m| m.properties.ordering_key.is_some()) {
        MessageType::Fifo
    } else {
        MessageType::Normal
    }
}

/// Where a plain send was stored: routed sends report the first message's queue and each
/// message's; others the one queue.
fn sent(queue_id: u32, queue_ids: Vec<u32>, appended: Appended) -> Sent {
    Sent { queue_id: queue_ids.first().copied().unwrap_or(queue_id), queue_ids, appended }
}
