//! Per-message consumption ("pop", as RocketMQ 5's SimpleConsumer and PushConsumer use it): a
//! receive hands a group messages with a receipt handle and hides them for an invisible time; an
//! ack removes them for the group; a message whose invisible time ends unacknowledged is visible
//! again with one more delivery attempt — through the group's retry topic, by the same rules
//! (reconsume count, `%DLQ%<group>` past the maximum) as a native consumer's send-back — or, for
//! a FIFO group, again in place, holding back the rest of its queue until it is acknowledged.
//!
//! The group's committed offset of a queue (the offsets every consumer of the group shares) is
//! the lowest offset not yet acknowledged, so nothing unacknowledged is ever skipped. The
//! in-flight state lives in memory and survives restarts through `receipt_log.rs`.

use std::collections::BTreeMap;

use wasmq_store::StoredMessage;

use super::receipt_log::Record;
use super::*;

/// The most messages of one queue a group may hold received and unacknowledged.
pub const RECEIVED_PER_QUEUE_MAX: usize = 65_536;

/// Auto-renew (RocketMQ 5 PushConsumers): a message received with `renew_for` is hidden again
/// for `RENEW_SLICE_MS` whenever its invisible time has at most `RENEW_AHEAD_MS` left, while its
/// client is alive (heard from within `RENEW_CLIENT_SILENT_MS`) and for at most `RENEW_MAX_MS`
/// after it was received — the reference proxy's defaults. Its handle stays the same.
pub const RENEW_SLICE_MS: u64 = 60_000;
pub const RENEW_AHEAD_MS: u64 = 10_000;
pub const RENEW_MAX_MS: u64 = 3 * 3_600_000;
pub const RENEW_CLIENT_SILENT_MS: u64 = 30_000;

/// A receipt handle's text: `<queue>.<queue offset>.<nonce, hex>.<topic>` (the topic last: it may
/// hold dots). The nonce changes with every delivery and every change of invisible time, so an
/// older handle is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    nonce: u64,
}

impl Receipt {
    /// The handle clients hold.
    #[must_use]
    pub fn handle(&self) -> String {
        format!("{}.{}.{:x}.{}", self.queue_id, self.queue_offset, self.nonce, self.topic)
    }

    /// Reads a handle.
    ///
    /// # Errors
    /// Not a handle this broker gives out.
    pub fn parse(handle: &str) -> Result<Self, ReceiptError> {
        let bad = || ReceiptError::Malformed(format!("{handle:?} is not a receipt handle of this broker"));
        let mut parts = handle.splitn(4, '.');
        let (Some(q), Some(o), Some(n), Some(topic)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        Ok(Self {
            queue_id: q.parse().map_err(|_| bad())?,
            queue_offset: o.parse().map_err(|_| bad())?,
            nonce: u64::from_str_radix(n, 16).map_err(|_| bad())?,
            topic: topic.to_owned(),
        })
    }
}

/// Why a receipt handle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("{0}")]
    Malformed(String),
    /// Acknowledged already, visible again (its invisible time ended), or given to another group.
    #[error("{0}")]
    Stale(String),
}

/// A message handed out by [`Engine::receive`].
#[derive(Debug, Clone)]
pub struct Received {
    pub message: StoredMessage,
    pub receipt: Receipt,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub invisible_until_ms: u64,
}

/// What [`Engine::receive`] reads from one queue.
#[derive(Debug, Clone)]
pub struct Receive<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub queue_id: u32,
    pub max_messages: usize,
    pub max_bytes: usize,
    pub invisible_ms: u64,
    /// A tag expression (`A || B`, `*`); messages it leaves out are passed over for the group.
    pub tag_filter: Option<&'a str>,
    /// One message group at a time: nothing more from the queue while any is in flight, and a
    /// message whose invisible time ends is delivered again before anything after it.
    pub fifo: bool,
    /// Renew the invisible time for this client until it acknowledges (see [`RENEW_SLICE_MS`]).
    pub renew_for: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct InFlight {
    pub(crate) nonce: u64,
    pub(crate) invisible_until_ms: u64,
    pub(crate) attempt: u32,
    pub(crate) log_offset: u64,
    pub(crate) fifo: bool,
    /// The client the invisible time is renewed for, and since when (this delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) renew_for: Option<String>,
    #[serde(default)]
    pub(crate) received_ms: u64,
}

/// One queue as one group receives it.
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    /// The next offset to hand out.
    pub(crate) next: u64,
    pub(crate) in_flight: BTreeMap<u64, InFlight>,
}

impl QueueState {
    /// The lowest offset not yet acknowledged.
    pub(crate) fn committed(&self) -> u64 {
        self.in_flight.keys().next().copied().map_or(self.next, |o| o.min(self.next))
    }
}

type QueueKey = (String, String, u32);

/// Messages in flight, by (group, topic, queue).
#[derive(Debug)]
pub(crate) struct Receipts {
    pub(crate) queues: Mutex<HashMap<QueueKey, QueueState>>,
    nonce: AtomicU64,
    /// `receipts.json`, and whether the state changed since it was written.
    pub(crate) path: PathBuf,
    pub(crate) dirty: AtomicBool,
}

impl Receipts {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { queues: Mutex::default(), nonce: AtomicU64::new(0), path, dirty: AtomicBool::new(false) }
    }
}

/// An in-flight message whose invisible time ended (non-FIFO): for [`Engine::revive_expired`].
struct Expired {
    group: String,
    topic: String,
    queue_id: u32,
    queue_offset: u64,
    log_offset: u64,
}

impl Engine {
    fn next_nonce(&self) -> u64 {
        // Unique per broker run; a restart forgets every handle, and the clock keeps nonces of
        // different runs apart.
        (self.clock.now_ms() << 20) ^ self.consumers.receipts.nonce.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands `r.group` up to `r.max_messages` messages of one queue, each hidden from the group
    /// for `r.invisible_ms` unless acknowledged first. A group new to the queue starts at its
    /// earliest retained message.
    ///
    /// # Errors
    /// Unknown topic or queue, a bad filter, a failed read.
    pub fn receive(&self, r: &Receive<'_>) -> Result<Vec<Received>, PullError> {
        topics::validate_group(r.group).map_err(PullError::Filter)?;
        let now = self.clock.now_ms();
        let key = (r.group.to_owned(), r.topic.to_owned(), r.queue_id);
        let committed = self.query_offset(r.group, r.topic, r.queue_id);
        let mut queues = lock(&self.consumers.receipts.queues);
        let q = queues.entry(key).or_insert_with(|| QueueState {
            next: committed.unwrap_or_else(|| self.store.queue_bounds(r.topic, r.queue_id).0),
            in_flight: BTreeMap::new(),
        });
        let mut out = Vec::new();
        let mut records = Vec::new();
        if r.fifo && !q.in_flight.is_empty() {
            // In order: the first unacknowledged message again once its time is up, then those
            // after it that are due as well; nothing new while any is hidden.
            let due: Vec<u64> =
                q.in_flight.iter().take_while(|(_, f)| f.invisible_until_ms <= now).map(|(o, _)| *o).take(r.max_messages).collect();
            for offset in due {
                let nonce = self.next_nonce();
                let f = q.in_flight.get_mut(&offset).expect("listed above");
                let message = self.store.read(f.log_offset).map_err(PullError::Read)?;
                f.nonce = nonce;
                f.attempt += 1;
                f.invisible_until_ms = now + r.invisible_ms;
                f.renew_for = r.renew_for.map(str::to_owned);
                f.received_ms = now;
                records.push(Record::set(r.group, r.topic, r.queue_id, offset, f));
                let receipt = Receipt { topic: r.topic.to_owned(), queue_id: r.queue_id, queue_offset: offset, nonce };
                out.push(Received { message, receipt, attempt: f.attempt, invisible_until_ms: f.invisible_until_ms });
            }
            drop(queues);
            self.log_receipts(records);
            return Ok(out);
        }
        // A group that keeps receiving without acknowledging gets nothing more from the queue
        // once this many are in flight (each costs memory until acked or visible again).
        let room = RECEIVED_PER_QUEUE_MAX.saturating_sub(q.in_flight.len()).min(r.max_messages);
        if room == 0 {
            return Ok(out);
        }
        let read = |from: u64| match r.tag_filter {
            Some(f) => self.pull_filtered(r.topic, r.queue_id, from, room, r.max_bytes, f),
            None => self.pull(r.topic, r.queue_id, from, room, r.max_bytes),
        };
        let read = match read(q.next) {
            // Retention cut below where the group was: it goes on from the queue's start.
            Err(PullError::Read(ReadError::Trimmed { .. })) => {
                q.next = self.store.queue_bounds(r.topic, r.queue_id).0;
                read(q.next)?
            }
            other => other?,
        };
        q.next = q.next.max(read.next_offset);
        for message in read.messages {
            let nonce = self.next_nonce();
            let attempt = message.properties.reconsume_times + 1;
            let f = InFlight {
                nonce,
                invisible_until_ms: now + r.invisible_ms,
                attempt,
                log_offset: message.log_offset,
                fifo: r.fifo,
                renew_for: r.renew_for.map(str::to_owned),
                received_ms: now,
            };
            let receipt = Receipt { topic: r.topic.to_owned(), queue_id: r.queue_id, queue_offset: message.queue_offset, nonce };
            records.push(Record::set(r.group, r.topic, r.queue_id, message.queue_offset, &f));
            q.in_flight.insert(message.queue_offset, f);
            out.push(Received { message, receipt, attempt, invisible_until_ms: now + r.invisible_ms });
        }
        let committed_now = q.committed();
        drop(queues);
        self.log_receipts(records);
        if committed != Some(committed_now) {
            self.commit_received(r.group, r.topic, r.queue_id, committed_now);
        }
        Ok(out)
    }

    pub(crate) fn commit_received(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        if let Err(e) = self.commit_offset(group, topic, queue_id, offset) {
            tracing::warn!(group, topic, queue_id, error = %e, "committing a received queue's offset failed");
        }
    }

    /// Finds the in-flight message a handle names for `group`, applies `f` to it under the lock,
    /// and commits the queue's new offset.
    fn with_receipt<T>(&self, group: &str, handle: &str, f: impl FnOnce(&mut QueueState, u64) -> T) -> Result<(Receipt, T), ReceiptError> {
        let receipt = Receipt::parse(handle)?;
        let key = (group.to_owned(), receipt.topic.clone(), receipt.queue_id);
        let mut queues = lock(&self.consumers.receipts.queues);
        let q = queues.get_mut(&key).filter(|q| q.in_flight.get(&receipt.queue_offset).is_some_and(|f| f.nonce == receipt.nonce));
        let Some(q) = q else {
            return Err(ReceiptError::Stale(format!(
                "receipt handle {handle} of group {group} is not in flight: acknowledged already, visible again after its invisible time, or from another group"
            )));
        };
        let before = q.committed();
        let out = f(q, receipt.queue_offset);
        let after = q.committed();
        drop(queues);
        if after != before {
            self.commit_received(group, &receipt.topic, receipt.queue_id, after);
        }
        Ok((receipt, out))
    }

    /// Acknowledges a received message: it is done for the group.
    ///
    /// # Errors
    /// A malformed or stale handle.
    pub fn ack(&self, group: &str, handle: &str) -> Result<Receipt, ReceiptError> {
        self.ack_many(group, &[handle]).remove(0)
    }

    /// Acknowledges several received messages (one record in the log for all): one result per
    /// handle, as [`Engine::ack`].
    pub fn ack_many(&self, group: &str, handles: &[&str]) -> Vec<Result<Receipt, ReceiptError>> {
        let results: Vec<Result<Receipt, ReceiptError>> = handles
            .iter()
            .map(|h| {
                self.with_receipt(group, h, |q, offset| {
                    q.in_flight.remove(&offset);
                })
                .map(|(r, ())| r)
            })
            .collect();
        let records = results.iter().flatten().map(|r| Record::done(group, &r.topic, r.queue_id, r.queue_offset)).collect();
        self.log_receipts(records);
        results
    }

    /// Hides a received message for `invisible_ms` from now instead (0: visible again at once, a
    /// negative acknowledgement), ending any auto-renew; returns its new handle (the old one is
    /// refused from now on).
    ///
    /// # Errors
    /// A malformed or stale handle.
    pub fn change_invisible(&self, group: &str, handle: &str, invisible_ms: u64) -> Result<Received, ReceiptError> {
        let now = self.clock.now_ms();
        let nonce = self.next_nonce();
        let (receipt, (attempt, log_offset, record)) = self.with_receipt(group, handle, |q, offset| {
            let f = q.in_flight.get_mut(&offset).expect("checked by with_receipt");
            f.nonce = nonce;
            f.invisible_until_ms = now + invisible_ms;
            // The client chose the time: no more auto-renew (as the reference proxy drops the
            // handle from its renewals).
            f.renew_for = None;
            (f.attempt, f.log_offset, f.clone())
        })?;
        self.log_receipts(vec![Record::set(group, &receipt.topic, receipt.queue_id, receipt.queue_offset, &record)]);
        let message = self.store.read(log_offset).map_err(|e| ReceiptError::Stale(e.to_string()))?;
        Ok(Received { message, receipt: Receipt { nonce, ..receipt }, attempt, invisible_until_ms: now + invisible_ms })
    }

    /// Moves a received message to the group's dead-letter topic (a client that gave up on it)
    /// and acknowledges it.
    ///
    /// # Errors
    /// A malformed or stale handle, or the append failed (then it stays in flight).
    pub fn forward_to_dead_letter(&self, group: &str, handle: &str) -> Result<(), EngineError> {
        let receipt = Receipt::parse(handle).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let key = (group.to_owned(), receipt.topic.clone(), receipt.queue_id);
        let log_offset = lock(&self.consumers.receipts.queues)
            .get(&key)
            .and_then(|q| q.in_flight.get(&receipt.queue_offset))
            .filter(|f| f.nonce == receipt.nonce)
            .map(|f| f.log_offset)
            .ok_or_else(|| EngineError::Invalid(format!("receipt handle {handle} of group {group} is not in flight")))?;
        self.send_back(group, &receipt.topic, receipt.queue_id, log_offset, true, None)?;
        self.ack(group, handle).map_err(|e| EngineError::Invalid(e.to_string()))?;
        Ok(())
    }

    /// Makes messages whose invisible time ended visible again: non-FIFO ones as a copy in the
    /// group's retry topic, due at once, with one more reconsume (past the maximum, in the
    /// dead-letter topic), and done in their queue; FIFO ones stay where they are for
    /// [`Engine::receive`] to deliver again — past the group's maximum attempts they go to the
    /// dead-letter topic instead. Returns how many moved. Called every so often by the service.
    pub fn revive_expired(&self) -> usize {
        let now = self.clock.now_ms();
        let max_attempts = self.retry_policy().1.saturating_add(1);
        let alive: std::collections::HashSet<String> = lock(&self.consumers.clients)
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_seen_ms) <= RENEW_CLIENT_SILENT_MS)
            .map(|(id, _)| id.clone())
            .collect();
        let mut expired = Vec::new();
        let mut renewed = Vec::new();
        {
            let mut queues = lock(&self.consumers.receipts.queues);
            for ((group, topic, queue_id), q) in queues.iter_mut() {
                for (offset, f) in &mut q.in_flight {
                    let renew = f.renew_for.as_ref().is_some_and(|c| alive.contains(c))
                        && f.invisible_until_ms.saturating_sub(now) <= RENEW_AHEAD_MS
                        && now.saturating_sub(f.received_ms) < RENEW_MAX_MS;
                    if renew {
                        f.invisible_until_ms = now + RENEW_SLICE_MS;
                        renewed.push(Record::set(group, topic, *queue_id, *offset, f));
                        continue;
                    }
                    // A FIFO message is revived only when it has used up its attempts.
                    if f.invisible_until_ms <= now && (!f.fifo || f.attempt >= max_attempts) {
                        expired.push(Expired {
                            group: group.clone(),
                            topic: topic.clone(),
                            queue_id: *queue_id,
                            queue_offset: *offset,
                            log_offset: f.log_offset,
                        });
                    }
                }
            }
            // Recorded before the lock goes: the client may ack a renewed message at any moment,
            // and its `done` must follow the renewal's `set` in the log. (A client's own changes
            // are recorded after the lock: it acts on a message only after the answer, which
            // follows the record.)
            self.log_receipts(renewed);
        }
        let mut moved = 0;
        for e in expired {
            let fifo_exhausted = {
                let queues = lock(&self.consumers.receipts.queues);
                queues.get(&(e.group.clone(), e.topic.clone(), e.queue_id)).and_then(|q| q.in_flight.get(&e.queue_offset)).map(|f| f.fifo)
            };
            let Some(fifo) = fifo_exhausted else { continue };
            match self.send_back_due(&e.group, &e.topic, e.queue_id, e.log_offset, fifo, None, Some(now)) {
                Ok(_) => {
                    let mut queues = lock(&self.consumers.receipts.queues);
                    let key = (e.group.clone(), e.topic.clone(), e.queue_id);
                    if let Some(q) = queues.get_mut(&key) {
                        let before = q.committed();
                        q.in_flight.remove(&e.queue_offset);
                        let after = q.committed();
                        drop(queues);
                        self.log_receipts(vec![Record::done(&e.group, &e.topic, e.queue_id, e.queue_offset)]);
                        if after != before {
                            self.commit_received(&e.group, &e.topic, e.queue_id, after);
                        }
                    }
                    moved += 1;
                }
                Err(err) => {
                    tracing::warn!(group = e.group, topic = e.topic, queue_id = e.queue_id, error = %err, "could not make an unacknowledged message visible again; trying later");
                }
            }
        }
        moved
    }

    /// Messages in flight (received, not yet acknowledged) per group.
    #[must_use]
    pub fn in_flight(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for ((group, _, _), q) in lock(&self.consumers.receipts.queues).iter() {
            *counts.entry(group.clone()).or_default() += q.in_flight.len();
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmq_store::{ManualClock, Properties, StoreConfig};

    fn engine(dir: &std::path::Path) -> (Engine, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.join("store"))).unwrap();
        let e = Engine::open(Arc::new(store), dir.join("config"), "broker-a", clock.clone()).unwrap();
        e.set_retry_policy(vec![100, 300], 2).unwrap();
        e.create_topic("t", 1).unwrap();
        (e, clock)
    }

    fn send(e: &Engine, bodies: &[&str]) {
        let msgs = bodies
            .iter()
            .map(|b| NewMessage {
                topic: "t".into(),
                queue_id: 0,
                born_ms: 1,
                flags: 0,
                properties: Properties::default(),
                body: bytes::Bytes::copy_from_slice(b.as_bytes()),
            })
            .collect();
        e.send("t", Some(0), msgs).unwrap();
    }

    fn receive<'a>(group: &'a str, topic: &'a str, fifo: bool) -> Receive<'a> {
        Receive {
            group,
            topic,
            queue_id: 0,
            max_messages: 10,
            max_bytes: 1 << 20,
            invisible_ms: 1_000,
            tag_filter: None,
            fifo,
            renew_for: None,
        }
    }

    fn bodies(r: &[Received]) -> Vec<String> {
        r.iter().map(|m| String::from_utf8_lossy(&m.message.body).into_owned()).collect()
    }

    /// The engine over the same directory again, as after a restart (no topic created).
    fn reopen(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
        reopen_cut(dir, clock, None)
    }

    /// [`reopen`] with the log cut at `cut_log_at` first.
    fn reopen_cut(dir: &std::path::Path, clock: &Arc<ManualClock>, cut_log_at: Option<u64>) -> Engine {
        let (store, _) = Store::open(StoreConfig { cut_log_at, ..StoreConfig::small_for_tests(dir.join("store")) }).unwrap();
        let e = Engine::open(Arc::new(store), dir.join("config"), "broker-a", clock.clone()).unwrap();
        e.set_retry_policy(vec![100, 300], 2).unwrap();
        e
    }

    #[test]
    fn after_a_cut_the_receive_state_is_replayed_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (e, clock) = engine(dir.path());
        send(&e, &["a", "b"]);
        let got = e.receive(&receive("g", "t", false)).unwrap();
        let ack_at = e.store.queue_bounds(receipt_log::RECEIPTS_TOPIC, 0).1;
        e.ack("g", &got[0].receipt.handle()).unwrap();
        // Saved with the ack applied; then the ack's record is cut (its master never had it).
        e.persist_offsets().unwrap();
        let cut = e.store.read_queue(receipt_log::RECEIPTS_TOPIC, 0, ack_at, 1, 1 << 20).unwrap().messages[0].log_offset;
        drop(e);
        crate::forget_recovery_state(&dir.path().join("config")).unwrap();
        let e = reopen_cut(dir.path(), &clock, Some(cut));
        assert_eq!(e.in_flight().get("g"), Some(&2), "a's ack was cut: a is in flight again, with b");
        e.ack("g", &got[0].receipt.handle()).expect("a's handle is valid again");
    }

    #[test]
    fn a_slave_elected_master_has_the_receive_state_it_replicated() {
        let (m, s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (master, clock) = engine(m.path());
        // The slave opens (and saves its receive state) before the master's records arrive.
        let (slave, _) = engine(s.path());
        slave.set_follower();
        slave.set_read_only("a slave of broker-a");
        send(&master, &["a", "b", "c"]);
        let got = master.receive(&receive("g", "t", false)).unwrap();
        master.ack("g", &got[0].receipt.handle()).unwrap();
        let renewed = master.change_invisible("g", &got[1].receipt.handle(), 5_000).unwrap();
        let raw = master.store.read_raw(0, 1 << 20).unwrap();
        slave.store.append_raw(raw.start_offset, &raw.bytes).unwrap();
        slave.persist_offsets().unwrap();
        drop(slave);
        // Elected: opened again as master.
        let e = reopen(s.path(), &clock);
        assert_eq!(e.in_flight().get("g"), Some(&2), "b and c are in flight, a acknowledged");
        assert!(e.receive(&receive("g", "t", false)).unwrap().is_empty(), "nothing acknowledged or hidden comes again");
        assert!(matches!(e.ack("g", &got[0].receipt.handle()), Err(ReceiptError::Stale(_))), "acknowledged on the old master");
        e.ack("g", &renewed.receipt.handle()).expect("the renewed handle is valid on the new master");
        // c's invisible time (1 s) ends as on the old master: it comes back.
        clock.advance_ms(1_000);
        assert_eq!(e.revive_expired(), 1);
    }

    #[test]
    fn in_flight_messages_and_their_handles_survive_a_crash_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (e, clock) = engine(dir.path());
        send(&e, &["a", "b", "c", "d"]);
        let got = e.receive(&Receive { max_messages: 2, ..receive("g", "t", false) }).unwrap();
        // Saved with the offsets here; what follows is only in the receipts topic.
        e.persist_offsets().unwrap();
        let more = e.receive(&receive("g", "t", false)).unwrap();
        assert_eq!((bodies(&got), bodies(&more)), (vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned(), "d".to_owned()]));
        // Two acks in one record; a bad handle among them fails alone.
        let acked = e.ack_many("g", &[&got[0].receipt.handle(), "garbage", &more[0].receipt.handle()]);
        assert!(acked[0].is_ok() && acked[2].is_ok(), "{acked:?}");
        assert!(matches!(acked[1], Err(ReceiptError::Malformed(_))));
        let renewed = e.change_invisible("g", &got[1].receipt.handle(), 5_000).unwrap();
        // A crash: nothing saved since (dropping the engine saves nothing either).
        drop(e);
        let e = reopen(dir.path(), &clock);
        assert_eq!(e.in_flight().get("g"), Some(&2), "b and d are still in flight");
        assert_eq!(e.query_offset("g", "t", 0), Some(1), "b is the lowest unacknowledged");
        assert!(e.receive(&receive("g", "t", false)).unwrap().is_empty(), "nothing acked or hidden comes again");
        assert!(matches!(e.ack("g", &got[0].receipt.handle()), Err(ReceiptError::Stale(_))), "acked before the crash");
        assert!(matches!(e.ack("g", &got[1].receipt.handle()), Err(ReceiptError::Stale(_))), "replaced by the renewal");
        // d's invisible time (1 s) ends as before: it comes back through the retry topic.
        clock.advance_ms(1_000);
        assert_eq!(e.revive_expired(), 1);
        // b keeps its renewed handle and time.
        e.ack("g", &renewed.receipt.handle()).unwrap();
        assert_eq!(e.query_offset("g", "t", 0), Some(4));
        drop(e);
        let e = reopen(dir.path(), &clock);
        assert_eq!(e.in_flight().get("g").copied().unwrap_or(0), 0, "the ack and the revival were recorded too");
        assert_eq!(e.query_offset("g", "t", 0), Some(4));
    }

    #[test]
    fn an_auto_renewed_message_stays_hidden_with_its_handle_while_its_client_lives() {
        let dir = tempfile::tempdir().unwrap();
        let (e, clock) = engine(dir.path());
        send(&e, &["a", "b"]);
        let alive = || e.client_heartbeat("c1", ClientAbout::default(), vec![], vec!["g".into()]).unwrap();
        alive();
        let got = e.receive(&Receive { renew_for: Some("c1"), ..receive("g", "t", false) }).unwrap();
        assert_eq!(bodies(&got), ["a", "b"]);
        // Asked for 1 s; kept hidden past it, in slices, while the client is heard from.
        for _ in 0..3 {
            clock.advance_ms(RENEW_SLICE_MS - RENEW_AHEAD_MS);
            alive();
            assert_eq!(e.revive_expired(), 0, "renewed, not made visible");
            assert!(e.receive(&receive("g", "t", false)).unwrap().is_empty(), "still hidden");
        }
        e.ack("g", &got[0].receipt.handle()).unwrap();
        // A negative acknowledgement ends the renewal: visible again when the client says.
        let nacked = e.change_invisible("g", &got[1].receipt.handle(), 2_000).unwrap();
        clock.advance_ms(2_000);
        alive();
        assert_eq!(e.revive_expired(), 1, "b comes back after the 2 s its client asked for");
        assert!(matches!(e.ack("g", &nacked.receipt.handle()), Err(ReceiptError::Stale(_))));
        send(&e, &["b2"]);
        let got = e.receive(&Receive { renew_for: Some("c1"), ..receive("g", "t", false) }).unwrap();
        assert_eq!(bodies(&got), ["b2"]);
        // The client goes silent: its messages are renewed no more and come back.
        clock.advance_ms(RENEW_SLICE_MS);
        assert_eq!(e.revive_expired(), 1, "b2 comes back");
        assert!(matches!(e.ack("g", &got[0].receipt.handle()), Err(ReceiptError::Stale(_))));
        // Renewal ends after RENEW_MAX_MS even for a live client.
        send(&e, &["c"]);
        alive();
        let c = e.receive(&Receive { renew_for: Some("c1"), ..receive("g", "t", false) }).unwrap();
        assert_eq!(bodies(&c), ["c"]);
        let mut revived = 0;
        for _ in 0..=(RENEW_MAX_MS / (RENEW_SLICE_MS - RENEW_AHEAD_MS) + 2) {
            clock.advance_ms(RENEW_SLICE_MS - RENEW_AHEAD_MS);
            alive();
            revived += e.revive_expired();
        }
        assert_eq!(revived, 1, "given up after {RENEW_MAX_MS} ms");
    }

    #[test]
    fn a_receipt_handle_reads_back_and_refuses_garbage() {
        let r = Receipt { topic: "a.b".into(), queue_id: 3, queue_offset: 42, nonce: 0xabc };
        assert_eq!(Receipt::parse(&r.handle()), Ok(r));
        assert!(matches!(Receipt::parse("nonsense"), Err(ReceiptError::Malformed(_))));
        assert!(matches!(Receipt::parse("1.x.2.t"), Err(ReceiptError::Malformed(_))));
    }

    #[test]
    fn received_messages_are_hidden_until_acked_and_the_offset_is_the_lowest_unacked() {
        let dir = tempfile::tempdir().unwrap();
        let (e, _clock) = engine(dir.path());
        send(&e, &["a", "b", "c"]);
        let got = e.receive(&receive("g", "t", false)).unwrap();
        assert_eq!(bodies(&got), ["a", "b", "c"]);
        assert!(e.receive(&receive("g", "t", false)).unwrap().is_empty(), "hidden while in flight");
        // Another group has its own view.
        assert_eq!(bodies(&e.receive(&receive("h", "t", false)).unwrap()), ["a", "b", "c"]);
        e.ack("g", &got[1].receipt.handle()).unwrap();
        assert_eq!(e.query_offset("g", "t", 0), Some(0), "a is not acknowledged yet");
        e.ack("g", &got[0].receipt.handle()).unwrap();
        assert_eq!(e.query_offset("g", "t", 0), Some(2));
        assert!(matches!(e.ack("g", &got[0].receipt.handle()), Err(ReceiptError::Stale(_))), "acked twice");
        assert!(matches!(e.ack("h", &got[2].receipt.handle()), Err(ReceiptError::Stale(_))), "another group's handle");
        e.ack("g", &got[2].receipt.handle()).unwrap();
        assert_eq!(e.query_offset("g", "t", 0), Some(3));
    }

    #[test]
    fn an_expired_message_comes_back_through_the_retry_topic_then_the_dead_letter_topic() {
        let dir = tempfile::tempdir().unwrap();
        let (e, clock) = engine(dir.path());
        send(&e, &["a"]);
        let first = e.receive(&receive("g", "t", false)).unwrap();
        assert_eq!(first[0].attempt, 1);
        clock.advance_ms(999);
        assert_eq!(e.revive_expired(), 0, "still invisible");
        clock.advance_ms(1);
        assert_eq!(e.revive_expired(), 1);
        assert_eq!(e.query_offset("g", "t", 0), Some(1), "done in its own queue");
        assert!(matches!(e.ack("g", &first[0].receipt.handle()), Err(ReceiptError::Stale(_))), "too late");
        let retry = retry_topic("g");
        let queues = e.topic(&retry).unwrap().queues;
        let mut attempts = Vec::new();
        // Attempts 2 and 3 from the retry topic (at once: the invisible time was the delay),
        // then the maximum (2 reconsumes) is passed: the dead-letter topic.
        for _ in 0..2 {
            let got: Vec<Received> =
                (0..queues).flat_map(|q| e.receive(&Receive { queue_id: q, ..receive("g", &retry, false) }).unwrap()).collect();
            assert_eq!(bodies(&got), ["a"]);
            attempts.push(got[0].attempt);
            clock.advance_ms(1_000);
            assert_eq!(e.revive_expired(), 1);
        }
        assert_eq!(attempts, [2, 3]);
        let dlq = e.pull(&dlq_topic("g"), 0, 0, 10, 1 << 20).unwrap();
        assert_eq!(dlq.messages.len(), 1);
        assert_eq!(dlq.messages[0].properties.reconsume_times, 3);
    }

    #[test]
    fn a_group_holding_the_most_unacked_messages_gets_no_more_until_it_acks() {
        let dir = tempfile::tempdir().unwrap();
        let (e, _clock) = engine(dir.path());
        let bodies_in: Vec<String> = (0..RECEIVED_PER_QUEUE_MAX + 1).map(|i| i.to_string()).collect();
        for chunk in bodies_in.chunks(1024) {
            send(&e, &chunk.iter().map(String::as_str).collect::<Vec<_>>());
        }
        let mut r = receive("g", "t", false);
        r.max_messages = 1024;
        let mut held = Vec::new();
        loop {
            let got = e.receive(&r).unwrap();
            if got.is_empty() {
                break;
            }
            held.extend(got);
        }
        assert_eq!(held.len(), RECEIVED_PER_QUEUE_MAX, "stops at the limit with one message left");
        e.ack("g", &held[0].receipt.handle()).unwrap();
        assert_eq!(bodies(&e.receive(&r).unwrap()), [RECEIVED_PER_QUEUE_MAX.to_string()], "one acked, one more");
    }

    #[test]
    fn a_nack_makes_a_message_visible_again_and_refuses_the_old_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (e, clock) = engine(dir.path());
        send(&e, &["a"]);
        let got = e.receive(&receive("g", "t", false)).unwrap();
        let renewed = e.change_invisible("g", &got[0].receipt.handle(), 5_000).unwrap();
        assert!(matches!(e.ack("g", &got[0].receipt.handle()), Err(ReceiptError::Stale(_))));
        clock.advance_ms(1_000);
        assert_eq!(e.revive_expired(), 0, "renewed for 5 s");
        e.change_invisible("g", &renewed.receipt.handle(), 0).unwrap();
        assert_eq!(e.revive_expired(), 1);
    }

    #[test]
    fn a_fifo_queue_redelivers_in_place_and_holds_the_rest_back() {
        let dir = tempfile::tempdir().unwrap();
        let (e, clock) = engine(dir.path());
        send(&e, &["a", "b"]);
        let mut r = receive("g", "t", true);
        r.max_messages = 1;
        let first = e.receive(&r).unwrap();
        assert_eq!(bodies(&first), ["a"]);
        assert!(e.receive(&r).unwrap().is_empty(), "b waits for a");
        clock.advance_ms(1_000);
        assert_eq!(e.revive_expired(), 0, "FIFO: not through the retry topic");
        let again = e.receive(&r).unwrap();
        assert_eq!((bodies(&again), again[0].attempt), (vec!["a".to_owned()], 2));
        e.ack("g", &again[0].receipt.handle()).unwrap();
        assert_eq!(bodies(&e.receive(&r).unwrap()), ["b"]);
        // Past the maximum attempts (3), b goes to the dead-letter topic and the queue moves on.
        for _ in 0..2 {
            clock.advance_ms(1_000);
            assert_eq!(e.revive_expired(), 0);
            assert_eq!(bodies(&e.receive(&r).unwrap()), ["b"]);
        }
        clock.advance_ms(1_000);
        assert_eq!(e.revive_expired(), 1);
        assert_eq!(e.query_offset("g", "t", 0), Some(2));
        assert_eq!(e.pull(&dlq_topic("g"), 0, 0, 10, 1 << 20).unwrap().messages.len(), 1);
    }
}
