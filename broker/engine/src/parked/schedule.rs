//! Scheduled messages: held in `%SCHEDULE%` (one queue per delay range) until due, released
//! as copies on their topic, rewritten ahead of retention when they wait long, or recalled.

use super::*;

impl Engine {
    /// Stores a batch of scheduled messages (queues chosen; each with its `delivery_ms`): each
    /// reaches `topic` when due, never before.
    ///
    /// # Errors
    /// Unknown topic or queue, a delay past the maximum, too many scheduled messages, the append.
    pub fn send_scheduled(&self, topic: &str, mut messages: Vec<NewMessage>) -> Result<wasmq_store::Appended, SendError> {
        self.writable()?;
        let queues = self.topic(topic).ok_or_else(|| SendError::UnknownTopic(topic.to_owned()))?.queues;
        if let Some(m) = messages.iter().find(|m| m.queue_id >= queues) {
            return Err(SendError::InvalidQueue { topic: topic.to_owned(), queue_id: m.queue_id, queues });
        }
        let now = self.clock.now_ms();
        let max = self.parked.policy().delay_max_ms;
        if let Some(d) = messages.iter().filter_map(|m| m.properties.delivery_ms).find(|d| d.saturating_sub(now) > max) {
            return Err(SendError::Invalid(format!(
                "delivery time {d} is {} ms ahead; the broker's maximum delay is {max} ms (delay_max_ms)",
                d - now
            )));
        }
        if lock(&self.parked.schedule).at.len() + messages.len() > SCHEDULED_MAX {
            return Err(SendError::Invalid(format!("more than {SCHEDULED_MAX} scheduled messages are waiting")));
        }
        for m in &mut messages {
            self.ensure_unique_id(m);
            let due = m.properties.delivery_ms.unwrap_or(now);
            m.properties.delivery_ms = Some(due);
            let user = &mut m.properties.user;
            user.retain(|(k, _)| !k.starts_with('%'));
            user.push((P_TOPIC.to_owned(), topic.to_owned()));
            user.push((P_QUEUE.to_owned(), m.queue_id.to_string()));
            SCHEDULE_TOPIC.clone_into(&mut m.topic);
            m.queue_id = schedule_queue(due.saturating_sub(now));
        }
        let mut s = lock(&self.parked.schedule);
        let appended = self.store.append(&messages)?;
        let earliest = s.heap.peek().map(|Reverse((d, _))| *d);
        let mut earlier = false;
        for (m, a) in messages.iter().zip(&appended.messages) {
            let due = m.properties.delivery_ms.unwrap_or(now);
            earlier |= earliest.is_none_or(|e| due < e);
            track(&mut s, a.log_offset, Slot { queue_id: m.queue_id, queue_offset: a.queue_offset, due_ms: due, stored_ms: now });
        }
        drop(s);
        if earlier && let Some(n) = self.parked.notify.get() {
            n();
        }
        Ok(appended)
    }

    /// Moves every scheduled message now due to its topic. Returns how many moved and when the
    /// next one is due.
    pub fn release_due(&self) -> (usize, Option<u64>) {
        let mut moved = 0;
        loop {
            let now = self.clock.now_ms();
            let mut s = lock(&self.parked.schedule);
            let mut due = Vec::new();
            while due.len() < RELEASE_BATCH_MAX
                && let Some(&Reverse((d, o))) = s.heap.peek()
                && d <= now
            {
                s.heap.pop();
                if s.at.contains_key(&o) {
                    due.push(o);
                }
            }
            if due.is_empty() {
                return (moved, s.heap.peek().map(|Reverse((d, _))| *d));
            }
            for (i, &o) in due.iter().enumerate() {
                match self.release(o) {
                    Ok(true) => s.released += 1,
                    Ok(false) => s.dropped += 1,
                    Err(e) => {
                        // The store refused (full disk, closed): this one and the rest of the
                        // pass are tried again in a second.
                        tracing::error!(log_offset = o, error = %e, "releasing a scheduled message");
                        for &rest in &due[i..] {
                            s.heap.push(Reverse((now + 1_000, rest)));
                        }
                        return (moved, Some(now + 1_000));
                    }
                }
                untrack(&mut s, o);
                moved += 1;
            }
        }
    }

    /// Appends the copy of the scheduled message at `log_offset`; false if its topic is gone.
    pub(crate) fn release(&self, log_offset: u64) -> Result<bool, EngineError> {
        let m = match self.store.read(log_offset) {
            Ok(m) => m,
            Err(ReadError::Trimmed { .. }) => {
                tracing::error!(log_offset, "a scheduled message was deleted by retention (disk use) before it was due; lost");
                return Ok(false);
            }
            Err(e) => return Err(invalid(e)),
        };
        let topic = internal(&m.properties.user, P_TOPIC).unwrap_or_default();
        let queue_id: u32 = internal(&m.properties.user, P_QUEUE).and_then(|q| q.parse().ok()).unwrap_or(0);
        if self.topic(&topic).is_none_or(|c| queue_id >= c.queues) {
            tracing::warn!(topic, queue_id, log_offset, "scheduled message due after its topic or queue was deleted; dropped");
            return Ok(false);
        }
        self.store.append(&[released_copy(&m, topic.clone(), queue_id)])?;
        self.wake(&topic, queue_id);
        Ok(true)
    }

    /// Rewrites scheduled messages stored more than `max_age_ms` ago to the end of the log, so
    /// retention by age never deletes one before it is due (a delay may be longer than the
    /// retention). Returns how many were rewritten; call it periodically.
    ///
    /// # Errors
    /// The append failed (tried again at the next call).
    pub fn rewrite_aging(&self, max_age_ms: u64) -> Result<usize, EngineError> {
        let now = self.clock.now_ms();
        let cutoff = now.saturating_sub(max_age_ms);
        let mut s = lock(&self.parked.schedule);
        let old: Vec<u64> = s.at.iter().take_while(|(_, slot)| slot.stored_ms < cutoff).take(RELEASE_BATCH_MAX).map(|(&o, _)| o).collect();
        if old.is_empty() {
            return Ok(0);
        }
        let mut batch = Vec::with_capacity(old.len());
        for &o in &old {
            let m = self.store.read(o).map_err(invalid)?;
            let due = m.properties.delivery_ms.unwrap_or(now);
            batch.push(NewMessage {
                topic: SCHEDULE_TOPIC.to_owned(),
                queue_id: schedule_queue(due.saturating_sub(now)),
                born_ms: m.born_ms,
                flags: m.flags,
                properties: m.properties,
                body: m.body,
            });
        }
        let appended = self.store.append(&batch)?;
        for ((o, m), a) in old.iter().zip(&batch).zip(&appended.messages) {
            let due = m.properties.delivery_ms.unwrap_or(now);
            untrack(&mut s, *o);
            track(&mut s, a.log_offset, Slot { queue_id: m.queue_id, queue_offset: a.queue_offset, due_ms: due, stored_ms: now });
        }
        tracing::info!(messages = old.len(), "scheduled messages rewritten ahead of retention");
        Ok(old.len())
    }

    /// Cancels a scheduled message of `topic` not yet due — the one with this unique id and
    /// delivery time (as its send answered: [`Engine::recall_handle`]) — so it is never
    /// delivered: a record in `%RECALLED%` keeps it cancelled across restarts. Returns the
    /// message id.
    ///
    /// # Errors
    /// A malformed handle; no such message waiting (delivered, recalled already, another
    /// topic's); the append.
    pub fn recall_scheduled(&self, topic: &str, handle: &str) -> Result<String, RecallError> {
        self.writable().map_err(|e| RecallError::Failed(e.to_string()))?;
        let bad = || RecallError::Malformed(format!("{handle:?} is not a recall handle of this broker"));
        let (due, uid) = handle.split_once(':').ok_or_else(bad)?;
        let due: u64 = due.parse().map_err(|_| bad())?;
        let mut s = lock(&self.parked.schedule);
        let waiting: Vec<u64> = self
            .store
            .find_by_id_in(uid, SCHEDULE_TOPIC, 16)
            .map_err(|e| RecallError::Failed(e.to_string()))?
            .into_iter()
            .filter(|m| {
                s.at.contains_key(&m.log_offset)
                    && m.properties.delivery_ms == Some(due)
                    && internal(&m.properties.user, P_TOPIC).as_deref() == Some(topic)
            })
            .map(|m| m.log_offset)
            .collect();
        if waiting.is_empty() {
            return Err(RecallError::NotWaiting(format!(
                "no scheduled message {uid} of topic {topic} is waiting for {due}: delivered already, recalled, or never sent"
            )));
        }
        let mut marker = NewMessage { topic: RECALLED_TOPIC.to_owned(), born_ms: self.clock.now_ms(), ..Default::default() };
        marker.properties.unique_id = Some(uid.to_owned());
        marker.properties.delivery_ms = Some(due);
        marker.properties.user.push((P_TOPIC.to_owned(), topic.to_owned()));
        self.store.append(&[marker]).map_err(|e| RecallError::Failed(e.to_string()))?;
        for o in waiting {
            untrack(&mut s, o);
        }
        s.recalled += 1;
        tracing::info!(topic, message_id = uid, due, "scheduled message recalled");
        Ok(uid.to_owned())
    }

    /// The handle that recalls a scheduled message ([`Engine::recall_scheduled`]).
    #[must_use]
    pub fn recall_handle(message: &NewMessage) -> Option<String> {
        Some(format!("{}:{}", message.properties.delivery_ms?, message.properties.unique_id.as_deref()?))
    }

    /// Scheduled messages not yet released.
    pub fn schedule_status(&self) -> ScheduleStatus {
        let now = self.clock.now_ms();
        let s = lock(&self.parked.schedule);
        let mut due_within: Vec<(u64, u64)> = SCHEDULE_RANGES_MS.iter().map(|&r| (r, 0)).collect();
        due_within.push((self.parked.policy().delay_max_ms, 0));
        let mut overdue = 0;
        for d in s.at.values().map(|slot| slot.due_ms) {
            if d <= now {
                overdue += 1;
            }
            for b in &mut due_within {
                if d.saturating_sub(now) < b.0 {
                    b.1 += 1;
                }
            }
        }
        ScheduleStatus {
            pending: s.at.len() as u64,
            due_within,
            overdue,
            next_due_ms: s.at.values().map(|slot| slot.due_ms).min(),
            released: s.released,
            dropped: s.dropped,
            recalled: s.recalled,
        }
    }
}
