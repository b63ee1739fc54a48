//! The group append: plain sends from every connection go into one queue, and one writer at a
//! time takes whatever has gathered there and appends it as one group ([`Engine::send_many`]:
//! one writer-lock section, one `pwrite` of the log and one per consume queue), then answers
//! each sender. The writer is whichever sender finds no writer at work (flat combining): a
//! lone connection appends its own sends, read together, on its own task without a hand-off
//! to another thread; under load, senders queue behind the writer at work instead of
//! contending for the store's lock, and share the cost of its writes. Order per queue and per
//! sender is the queue's order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wasmq_engine::{Engine, PlainSend, SendError};
use wasmq_store::Appended;

/// A group takes no more queued sends once it has this many.
pub const GROUP_SENDS_MAX: usize = 1024;
/// A group takes no more queued sends once it has this many message bytes (a group's records
/// are encoded into one buffer).
pub const GROUP_BYTES_MAX: usize = 4 << 20;

/// What a sender is told once its batch is appended (or refused).
pub(crate) type Done = Box<dyn FnOnce(Result<(u32, Appended), SendError>) + Send>;

/// The queue of sends and the writer's token. The queue needs no limit of its own: every send
/// in it holds a place among its connection's requests in flight (`in_flight_max`), and the
/// connections are limited (`connections_max`).
pub(crate) struct Appender {
    engine: Arc<Engine>,
    metrics: Arc<crate::Metrics>,
    queue: Mutex<VecDeque<(PlainSend, Done)>>,
    /// Held by the sender that is appending for everyone.
    writer: Mutex<()>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Appender {
    pub(crate) fn new(engine: Arc<Engine>, metrics: Arc<crate::Metrics>) -> Self {
        Self { engine, metrics, queue: Mutex::new(VecDeque::new()), writer: Mutex::new(()) }
    }

    /// Queues sends, in order, and appends everything queued unless another sender is doing
    /// so already (it then takes these too). Each one's `done` is called with its result, on
    /// whichever task appended it.
    pub(crate) fn submit(&self, sends: Vec<(PlainSend, Done)>) {
        if sends.is_empty() {
            return;
        }
        lock(&self.queue).extend(sends);
        loop {
            // A writer at work takes what was queued before it looks at the queue again.
            let token = match self.writer.try_lock() {
                Ok(t) => t,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            let group = self.take_group();
            if !group.is_empty() {
                let (sends, dones): (Vec<PlainSend>, Vec<Done>) = group.into_iter().unzip();
                // What each send stores (its topic by index: a group's sends share few topics),
                // counted per topic once appended.
                let mut topics: Vec<(String, u64, u64)> = Vec::new();
                let sizes: Vec<(usize, u64, u64)> = sends
                    .iter()
                    .map(|s| {
                        let t = match topics.iter().position(|(t, _, _)| *t == s.topic) {
                            Some(t) => t,
                            None => {
                                topics.push((s.topic.clone(), 0, 0));
                                topics.len() - 1
                            }
                        };
                        (t, s.messages.len() as u64, s.messages.iter().map(|m| m.body.len() as u64).sum())
                    })
                    .collect();
                self.metrics.append_group_sends.observe(sends.len() as f64);
                let started = std::time::Instant::now();
                let results = self.engine.send_many(sends);
                self.metrics.append_seconds.observe(started.elapsed().as_secs_f64());
                for ((r, done), (t, n, bytes)) in results.into_iter().zip(dones).zip(sizes) {
                    if r.is_ok() {
                        topics[t].1 += n;
                        topics[t].2 += bytes;
                    }
                    done(r);
                }
                for (topic, n, bytes) in &topics {
                    self.metrics.stored(topic, *n, *bytes);
                }
            }
            drop(token);
            // A sender that queued while this one held the token left its sends to it: look
            // again after letting go, or they would wait for the next sender.
            if lock(&self.queue).is_empty() {
                return;
            }
        }
    }

    /// The next group: queued sends in order, up to the group's limits.
    fn take_group(&self) -> Vec<(PlainSend, Done)> {
        let mut queue = lock(&self.queue);
        let (mut n, mut bytes) = (0, 0);
        for (s, _) in queue.iter() {
            if n >= GROUP_SENDS_MAX || bytes >= GROUP_BYTES_MAX {
                break;
            }
            n += 1;
            bytes += s.messages.iter().map(|m| m.body.len()).sum::<usize>();
        }
        queue.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use wasmq_store::{NewMessage, Store, StoreConfig, SystemClock};

    /// Senders on many threads at once: every send is answered exactly once, each sender's
    /// sends keep their order in the queue, and the queue's offsets are dense.
    #[test]
    fn concurrent_senders_are_each_answered_once_in_their_order() {
        const SENDERS: usize = 8;
        const SENDS: usize = 400;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path().join("s"))).unwrap();
        let engine = Arc::new(Engine::open(Arc::new(store), dir.path().join("c"), "b", Arc::new(SystemClock)).unwrap());
        engine.create_topic("t", 1).unwrap();
        let appender = Arc::new(Appender::new(Arc::clone(&engine), Arc::default()));
        let (tx, rx) = mpsc::channel::<(usize, usize, u64)>();
        std::thread::scope(|scope| {
            for sender in 0..SENDERS {
                let (appender, tx) = (Arc::clone(&appender), tx.clone());
                scope.spawn(move || {
                    // A few sends at a time, as a connection queues what it read at once.
                    for chunk in (0..SENDS).collect::<Vec<_>>().chunks(1 + sender % 5) {
                        let sends = chunk
                            .iter()
                            .map(|&i| {
                                let body = format!("{sender}:{i}");
                                let m = NewMessage { body: body.into_bytes().into(), ..NewMessage::default() };
                                let tx = tx.clone();
                                let done: Done = Box::new(move |r| {
                                    let (_, a) = r.expect("appended");
                                    tx.send((sender, i, a.messages[0].queue_offset)).unwrap();
                                });
                                (PlainSend { topic: "t".into(), queue: Some(0), routed: false, messages: vec![m] }, done)
                            })
                            .collect();
                        appender.submit(sends);
                    }
                });
            }
        });
        drop(tx);
        let answers: Vec<(usize, usize, u64)> = rx.iter().collect();
        assert_eq!(answers.len(), SENDERS * SENDS, "every send answered once");
        let mut offsets: Vec<u64> = answers.iter().map(|a| a.2).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..(SENDERS * SENDS) as u64).collect::<Vec<_>>(), "dense, none twice");
        for sender in 0..SENDERS {
            let mut mine: Vec<(usize, u64)> = answers.iter().filter(|a| a.0 == sender).map(|a| (a.1, a.2)).collect();
            mine.sort_unstable();
            assert!(mine.windows(2).all(|w| w[0].1 < w[1].1), "sender {sender}'s sends in its order");
        }
        let read = engine.pull("t", 0, 0, SENDERS * SENDS, 64 << 20).unwrap();
        assert_eq!(read.messages.len(), SENDERS * SENDS);
    }
}
