//! The per-message receive use case ("pop"): messages of a group's subscribed topics, and of its
//! retry topic, handed out one by one with receipt handles and hidden until acknowledged
//! ([`wasmq_engine::Engine::receive`] keeps the state), waiting (long poll) when there is
//! nothing; and the timer that makes unacknowledged messages visible again ([`reviver`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmq_engine::{Engine, PullError, Received, Wake};

use crate::{PULL_BYTES_MAX, Service, ServiceError};

/// How often messages whose invisible time ended are made visible again.
pub const REVIVE_INTERVAL: Duration = Duration::from_millis(100);
/// A waiting receive looks again at least this often: a retry falling due or a FIFO message
/// becoming visible again append nothing that would wake it.
const RECEIVE_REPOLL: Duration = Duration::from_millis(100);
/// Pause before looking again when a wait could not be set up (a message arrived meanwhile, or
/// a queue has too many waiters), so a waiter flood cannot spin.
const REPARK_PAUSE: Duration = Duration::from_millis(1);
/// The most messages one receive hands out.
pub const RECEIVE_BATCH_MAX: usize = 1024;

/// A group's receive over the topics it subscribes.
#[derive(Debug, Clone)]
pub struct Receive {
    pub group: String,
    /// Topics, each with a tag expression (`A || B`, `*`) or none.
    pub topics: Vec<(String, Option<String>)>,
    pub max_messages: usize,
    pub invisible: Duration,
    /// How long to wait for a message when there is none.
    pub wait: Duration,
    /// FIFO: one message at a time per queue, redelivered in place.
    pub fifo: bool,
    /// Keep the messages hidden while this client lives, until acknowledged (auto-renew).
    pub renew_for: Option<String>,
}

impl Service {
    /// Hands `r.group` up to `r.max_messages` messages from its topics' queues (and its retry
    /// topic's), each hidden for `r.invisible` unless acknowledged; with none, waits until one
    /// arrives, the wait ends or `cancel` fires.
    ///
    /// # Errors
    /// Internal or unknown topics, a bad filter, a failed read.
    pub async fn receive(&self, r: &Receive, cancel: &CancellationToken) -> Result<Vec<Received>, ServiceError> {
        let engine = &self.engine;
        for (topic, _) in &r.topics {
            if wasmq_engine::is_internal_topic(topic) {
                return Err(ServiceError::InvalidTopic(format!("{topic} is internal to the broker")));
            }
            if engine.topic(topic).is_none() {
                return Err(crate::unknown_topic(topic));
            }
        }
        let max = r.max_messages.clamp(1, RECEIVE_BATCH_MAX);
        let invisible_ms = u64::try_from(r.invisible.as_millis()).unwrap_or(u64::MAX);
        let deadline = tokio::time::Instant::now() + r.wait;
        let retry = wasmq_engine::retry_topic(&r.group);
        loop {
            // The subscribed topics' queues, then the retry topic's, from a rotating start so no
            // queue waits behind the others.
            let mut queues: Vec<(&str, Option<&str>, u32)> = Vec::new();
            for (topic, filter) in &r.topics {
                let n = engine.topic(topic).map_or(0, |c| c.queues);
                queues.extend((0..n).map(|q| (topic.as_str(), filter.as_deref(), q)));
            }
            let retry_queues = engine.topic(&retry).map_or(0, |c| c.queues);
            queues.extend((0..retry_queues).map(|q| (retry.as_str(), None, q)));
            let start = self.receive_turn.fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::new();
            for i in 0..queues.len() {
                let (topic, tag_filter, queue_id) = queues[(start + i) % queues.len()];
                let receive = wasmq_engine::Receive {
                    group: &r.group,
                    topic,
                    queue_id,
                    max_messages: max - out.len(),
                    max_bytes: PULL_BYTES_MAX as usize,
                    invisible_ms,
                    tag_filter,
                    fifo: r.fifo,
                    renew_for: r.renew_for.as_deref(),
                };
                match engine.receive(&receive) {
                    Ok(got) => out.extend(got),
                    Err(PullError::UnknownTopic(_)) if topic == retry => {}
                    Err(e) => return Err(e.into()),
                }
                if out.len() >= max {
                    break;
                }
            }
            let now = tokio::time::Instant::now();
            if !out.is_empty() || now >= deadline || cancel.is_cancelled() {
                for m in &out {
                    let labels = crate::metrics::DeliveryLabels { topic: m.message.topic.clone(), group: r.group.clone() };
                    self.metrics.messages_out.get_or_create(&labels).inc();
                    self.metrics.bytes_out.get_or_create(&labels).inc_by(m.message.body.len() as u64);
                }
                return Ok(out);
            }
            // Wake on an append to any of the queues (past its current end), or look again soon.
            let notify = Arc::new(Notify::new());
            let waiting = Waiting::new(&self.metrics.long_polls_waiting);
            let mut look_again = false;
            for (topic, _, queue_id) in &queues {
                let end = engine.store().queue_bounds(topic, *queue_id).1;
                let waker = Box::new(QueueWaker { notify: Arc::clone(&notify), done: Arc::clone(&waiting.done) });
                // Something arrived meanwhile, or the queue has too many waiters.
                look_again |= engine.wait_for(topic, *queue_id, end, waker).is_some();
            }
            let pause = if look_again { REPARK_PAUSE } else { RECEIVE_REPOLL };
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(pause.min(deadline - now)) => {}
                () = cancel.cancelled() => {}
            }
            drop(waiting);
        }
    }
}

impl Service {
    /// Acknowledges received messages for `group`, answering once the acknowledgements are as
    /// safe as the broker set promises (flushed under sync flush): one result per handle —
    /// [`ServiceError::InvalidReceipt`] for a stale one, the flush's error if it failed.
    pub async fn ack(&self, group: &str, handles: &[&str]) -> Vec<Result<(), ServiceError>> {
        let mut results: Vec<Result<(), ServiceError>> =
            self.engine.ack_many(group, handles).into_iter().map(|r| r.map(|_| ()).map_err(Into::into)).collect();
        if results.iter().any(Result::is_ok) {
            let end = self.engine.store().end_offset();
            if let Err(e) = self.durable(end, || format!("acknowledgements of group {group}")).await {
                results.iter_mut().filter(|r| r.is_ok()).for_each(|r| *r = Err(e.clone()));
            }
        }
        results
    }

    /// Hides a received message for `invisible` from now (zero: visible again at once); the
    /// answer carries its new receipt handle.
    ///
    /// # Errors
    /// [`ServiceError::InvalidReceipt`].
    pub fn change_invisible(&self, group: &str, handle: &str, invisible: Duration) -> Result<Received, ServiceError> {
        let ms = u64::try_from(invisible.as_millis()).unwrap_or(u64::MAX);
        self.engine.change_invisible(group, handle, ms).map_err(Into::into)
    }

    /// Moves a received message to the group's dead-letter topic.
    ///
    /// # Errors
    /// A stale handle; the append failed.
    pub async fn forward_to_dead_letter(&self, group: &str, handle: &str) -> Result<(), ServiceError> {
        self.engine.forward_to_dead_letter(group, handle)?;
        self.metrics.dead_letters.get_or_create(&crate::metrics::GroupLabels { group: group.to_owned() }).inc();
        self.durable(self.engine.store().end_offset(), || format!("a dead letter of group {group}")).await?;
        Ok(())
    }
}

/// A receive's wait: counted in `long_polls_waiting` and its wakers live while it lasts — also
/// when the receive is dropped midway (a gRPC client that went away).
struct Waiting<'a> {
    gauge: &'a prometheus_client::metrics::gauge::Gauge,
    done: Arc<AtomicBool>,
}

impl<'a> Waiting<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self { gauge, done: Arc::new(AtomicBool::new(false)) }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        self.gauge.dec();
    }
}

/// One receive's wake-up, registered on each queue it waits for.
struct QueueWaker {
    notify: Arc<Notify>,
    done: Arc<AtomicBool>,
}

impl Wake for QueueWaker {
    fn wake(self: Box<Self>) {
        self.notify.notify_one();
    }

    fn is_cancelled(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Makes received messages whose invisible time ended visible again, every
/// [`REVIVE_INTERVAL`], until `stop`.
pub async fn reviver(engine: Arc<Engine>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REVIVE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let engine = Arc::clone(&engine);
        if let Ok(n) = tokio::task::spawn_blocking(move || engine.revive_expired()).await
            && n > 0
        {
            tracing::debug!(messages = n, "unacknowledged messages visible again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmq_store::{NewMessage, Store, StoreConfig, SystemClock};

    fn service(dir: &std::path::Path) -> Service {
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.join("s"))).unwrap();
        let engine = Arc::new(Engine::open(Arc::new(store), dir.join("c"), "b", Arc::new(SystemClock)).unwrap());
        engine.create_topic("t", 2).unwrap();
        let replication = crate::Replication::new(&engine, "b", 0, crate::Role::Master, crate::Mode::Async, 0);
        Service::new(engine, Arc::new(wasmq_engine::NoPlugins), replication)
    }

    fn request(wait: Duration) -> Receive {
        Receive {
            group: "g".into(),
            topics: vec![("t".into(), None)],
            max_messages: 8,
            invisible: Duration::from_secs(30),
            wait,
            fifo: false,
            renew_for: None,
        }
    }

    /// A waiting receive answers soon after a message arrives in any of its queues, not at the
    /// end of its wait; one dropped midway (a client that went away) leaves no waiter counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receive_wakes_on_a_send_and_a_dropped_one_leaves_no_count() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(service(dir.path()));
        let cancel = CancellationToken::new();
        let waiting = {
            let (s, cancel) = (Arc::clone(&s), cancel.clone());
            tokio::spawn(async move { s.receive(&request(Duration::from_secs(10)), &cancel).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(s.metrics().long_polls_waiting.get(), 1);
        let started = tokio::time::Instant::now();
        let m = NewMessage { body: bytes::Bytes::from_static(b"x"), ..NewMessage::default() };
        s.engine().send("t", Some(1), vec![m]).unwrap();
        let got = waiting.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(1), "answered after the send, not at the wait's end");
        let dropped = tokio::time::timeout(Duration::from_millis(50), s.receive(&request(Duration::from_secs(10)), &cancel)).await;
        assert!(dropped.is_err(), "nothing to receive: still waiting when dropped");
        assert_eq!(s.metrics().long_polls_waiting.get(), 0, "the dropped receive is not counted");
    }
}
