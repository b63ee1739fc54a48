//! The per-message receive state made durable, as RocketMQ keeps its pop checkpoints and acks in
//! the log: every change to what a group holds in flight — a message received or its invisible
//! time changed (`set`), a message acknowledged, dead-lettered or revived through the retry
//! topic (`done`) — is appended to the internal topic `%RECEIPTS%` after it is made in memory,
//! and the whole state is written to `receipts.json` with the offsets, with the receipts
//! topic's end at that moment. Opening replays the records from there onto the saved state, so
//! after a restart or a SIGKILL the same messages are in flight with the same handles and
//! invisible times: an acknowledged message is not delivered again (its record is flushed before
//! the ack is answered, under sync flush), an unacknowledged one is never lost.
//!
//! Why replaying from the saved end is exact: a record below it was appended, and so applied in
//! memory, before the state was copied; a record at or above it is applied again, in log order,
//! and applying a record is idempotent (`set` writes a whole entry, `done` removes one). A
//! message's `done` always follows its `set` in the log: the `set` is appended before the
//! receive is answered, and only an answered receive can be acknowledged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::receipts::{InFlight, QueueState};
use super::*;

/// The internal topic of receive-state records (one queue).
pub const RECEIPTS_TOPIC: &str = "%RECEIPTS%";

/// One change to a group's in-flight messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Record {
    /// In flight with this state (received, redelivered, or its invisible time changed).
    Set { g: String, t: String, q: u32, o: u64, s: InFlight },
    /// No longer in flight (acknowledged, dead-lettered, or revived through the retry topic).
    Done { g: String, t: String, q: u32, o: u64 },
}

impl Record {
    pub(crate) fn set(group: &str, topic: &str, queue_id: u32, offset: u64, f: &InFlight) -> Self {
        Self::Set { g: group.to_owned(), t: topic.to_owned(), q: queue_id, o: offset, s: f.clone() }
    }

    pub(crate) fn done(group: &str, topic: &str, queue_id: u32, offset: u64) -> Self {
        Self::Done { g: group.to_owned(), t: topic.to_owned(), q: queue_id, o: offset }
    }

    /// Applies the record to the state; returns the queue it changed.
    fn apply(self, queues: &mut HashMap<(String, String, u32), QueueState>) -> (String, String, u32) {
        match self {
            Self::Set { g, t, q, o, s: f } => {
                let key = (g, t, q);
                let s = queues.entry(key.clone()).or_insert_with(|| QueueState { next: o, in_flight: BTreeMap::new() });
                s.next = s.next.max(o + 1);
                s.in_flight.insert(o, f);
                key
            }
            Self::Done { g, t, q, o } => {
                let key = (g, t, q);
                if let Some(s) = queues.get_mut(&key) {
                    s.in_flight.remove(&o);
                }
                key
            }
        }
    }
}

/// `receipts.json`: the state, and the receipts topic's end when it was copied.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    replay_from: u64,
    queues: Vec<SavedQueue>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedQueue {
    group: String,
    topic: String,
    queue_id: u32,
    next: u64,
    in_flight: Vec<(u64, InFlight)>,
}

impl Engine {
    /// Appends records of in-flight changes made in memory. A failed append (a full disk) is
    /// logged and not an error: the change holds in memory, and a crash before the next saved
    /// state would only deliver the messages again (at least once).
    pub(crate) fn log_receipts(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        self.consumers.receipts.dirty.store(true, Ordering::Release);
        let body = match serde_json::to_vec(&records) {
            Ok(b) => b,
            Err(e) => return tracing::error!(error = %e, "encoding receive-state records"),
        };
        let m = NewMessage { topic: RECEIPTS_TOPIC.to_owned(), born_ms: self.clock.now_ms(), body: body.into(), ..Default::default() };
        if let Err(e) = self.store.append(&[m]) {
            tracing::warn!(error = %e, "recording a receive-state change failed; a restart may deliver its messages again");
        }
    }

    /// Writes the in-flight state to `receipts.json` (with the offsets, when it changed).
    pub(crate) fn save_receipts(&self) -> std::io::Result<()> {
        if !self.consumers.receipts.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // The end first: every record below it is in the state copied next.
        let replay_from = self.store.queue_bounds(RECEIPTS_TOPIC, 0).1;
        let queues = lock(&self.consumers.receipts.queues)
            .iter()
            .map(|((group, topic, queue_id), q)| SavedQueue {
                group: group.clone(),
                topic: topic.clone(),
                queue_id: *queue_id,
                next: q.next,
                in_flight: q.in_flight.iter().map(|(o, f)| (*o, f.clone())).collect(),
            })
            .collect();
        topics::save_json(&self.consumers.receipts.path, &Saved { replay_from, queues }).inspect_err(|_| {
            self.consumers.receipts.dirty.store(true, Ordering::Release);
        })
    }

    /// At open: the saved state, then the records appended since. Each queue's committed offset
    /// is set to its lowest unacknowledged message again.
    pub(crate) fn recover_receipts(&self) -> Result<(), EngineError> {
        let path = self.consumers.receipts.path.clone();
        let saved: Saved = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| EngineError::Load { path: path.clone(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(source) => return Err(EngineError::Load { path, source }),
        };
        let mut queues = HashMap::new();
        for q in saved.queues {
            queues.insert((q.group, q.topic, q.queue_id), QueueState { next: q.next, in_flight: q.in_flight.into_iter().collect() });
        }
        let (min, max) = self.store.queue_bounds(RECEIPTS_TOPIC, 0);
        let mut at = saved.replay_from.max(min);
        let mut replayed = 0usize;
        while at < max {
            let read = self.store.read_queue(RECEIPTS_TOPIC, 0, at, 1024, 8 << 20).map_err(|e| EngineError::Load {
                path: self.consumers.receipts.path.clone(),
                source: std::io::Error::other(format!("reading {RECEIPTS_TOPIC}: {e}")),
            })?;
            if read.messages.is_empty() {
                break;
            }
            at = read.next_offset;
            for m in read.messages {
                match serde_json::from_slice::<Vec<Record>>(&m.body) {
                    Ok(records) => {
                        replayed += records.len();
                        records.into_iter().for_each(|r| {
                            r.apply(&mut queues);
                        });
                    }
                    Err(e) => tracing::warn!(queue_offset = m.queue_offset, error = %e, "skipping an unreadable receive-state record"),
                }
            }
        }
        // Queues of topics deleted meanwhile are forgotten.
        queues.retain(|(_, topic, _), _| self.topic(topic).is_some());
        let in_flight: usize = queues.values().map(|q| q.in_flight.len()).sum();
        let commits: Vec<_> = queues.iter().map(|((g, t, q), s)| (g.clone(), t.clone(), *q, s.committed())).collect();
        *lock(&self.consumers.receipts.queues) = queues;
        for (group, topic, queue_id, offset) in commits {
            self.commit_received(&group, &topic, queue_id, offset);
        }
        if replayed + in_flight > 0 {
            tracing::info!(replayed, in_flight, "per-message receive state recovered");
        }
        // Saved again at once: records appended from now on may land below the old end (after
        // a crash the log can end before it), and the next replay must start at the new end.
        self.consumers.receipts.dirty.store(true, Ordering::Release);
        self.save_receipts().map_err(|source| EngineError::Save { path: self.consumers.receipts.path.clone(), source })
    }
}
