//! Delivery: sends (queue checks, round robin, the group append) that wake the queues' long
//! polls, and pulls (tag filters, retry queues held until due) with their waiters.

use super::*;

/// Long polls parked per queue.
#[derive(Default)]
pub(crate) struct Delivery {
    pub(crate) waiters: Mutex<HashMap<QueueKey, Vec<Box<dyn Wake>>>>,
}

impl Engine {
    /// Appends a batch to one queue of a topic (`None`: round robin) and wakes the queue's
    /// long polls. The messages' topic and queue fields are set here. Durability (sync flush)
    /// is the caller's to wait for, with [`Store::on_durable`] on the returned end offset.
    ///
    /// # Errors
    /// [`SendError`].
    pub fn send(&self, topic: &str, queue_id: Option<u32>, mut messages: Vec<NewMessage>) -> Result<(u32, Appended), SendError> {
        let config = self.topic(topic).ok_or_else(|| SendError::UnknownTopic(topic.to_owned()))?;
        let queue_id = queue_id.unwrap_or_else(|| self.pick_queue(config.queues));
        for m in &mut messages {
            m.queue_id = queue_id;
        }
        Ok((queue_id, self.append_and_wake(topic, config.queues, messages)?))
    }

    /// Appends several plain sends together (a group append: one writer-lock section, one
    /// `pwrite` of the log and one per consume queue for all of them) and wakes each queue's
    /// long polls once. Each send has its own result, as [`Engine::send`] (or, when `routed`,
    /// [`Engine::send_routed`]) would give it; order is kept.
    pub fn send_many(&self, sends: Vec<PlainSend>) -> Vec<Result<(u32, Appended), SendError>> {
        let mut results: Vec<Result<(u32, Appended), SendError>> = Vec::with_capacity(sends.len());
        let writable = self.writable();
        let mut ready: Vec<(usize, u32, Vec<NewMessage>)> = Vec::with_capacity(sends.len());
        for PlainSend { topic, queue, routed, mut messages } in sends {
            let at = results.len();
            results.push(Err(SendError::Invalid(String::new())));
            if let Err(e) = &writable {
                results[at] = Err(match e {
                    SendError::ReadOnly(why) => SendError::ReadOnly(why.clone()),
                    other => SendError::Invalid(other.to_string()),
                });
                continue;
            }
            let Some(config) = self.topic(&topic) else {
                results[at] = Err(SendError::UnknownTopic(topic));
                continue;
            };
            let queue_id = if routed {
                messages.first().map_or(0, |m| m.queue_id)
            } else {
                let q = queue.unwrap_or_else(|| self.pick_queue(config.queues));
                messages.iter_mut().for_each(|m| m.queue_id = q);
                q
            };
            if let Some(m) = messages.iter().find(|m| m.queue_id >= config.queues) {
                results[at] = Err(SendError::InvalidQueue { topic, queue_id: m.queue_id, queues: config.queues });
                continue;
            }
            for m in &mut messages {
                topic.clone_into(&mut m.topic);
            }
            ready.push((at, queue_id, messages));
        }
        let batches: Vec<&[NewMessage]> = ready.iter().map(|(_, _, m)| m.as_slice()).collect();
        let appended = self.store.append_many(&batches);
        let mut woken: Vec<(&str, u32)> = Vec::new();
        for ((at, queue_id, messages), r) in ready.iter().zip(appended) {
            if r.is_ok() {
                for m in messages {
                    if !woken.contains(&(m.topic.as_str(), m.queue_id)) {
                        woken.push((m.topic.as_str(), m.queue_id));
                    }
                }
            }
            results[*at] = r.map(|a| (*queue_id, a)).map_err(SendError::Append);
        }
        for (topic, queue_id) in woken {
            self.wake(topic, queue_id);
        }
        results
    }

    /// Refuses writes on a slave.
    pub(crate) fn writable(&self) -> Result<(), SendError> {
        match self.read_only() {
            Some(why) => Err(SendError::ReadOnly(why)),
            None => Ok(()),
        }
    }

    /// Appends a batch whose messages each name their queue (as routing plugins decide) as one
    /// contiguous append, and wakes each queue's long polls. The topic field is set here.
    ///
    /// # Errors
    /// [`SendError`]; nothing is stored if any queue is out of range.
    pub fn send_routed(&self, topic: &str, messages: Vec<NewMessage>) -> Result<Appended, SendError> {
        let config = self.topic(topic).ok_or_else(|| SendError::UnknownTopic(topic.to_owned()))?;
        self.append_and_wake(topic, config.queues, messages)
    }

    /// The append shared by both sends: checks every queue, appends, wakes each queue once.
    pub(crate) fn append_and_wake(&self, topic: &str, queues: u32, mut messages: Vec<NewMessage>) -> Result<Appended, SendError> {
        self.writable()?;
        if let Some(m) = messages.iter().find(|m| m.queue_id >= queues) {
            return Err(SendError::InvalidQueue { topic: topic.to_owned(), queue_id: m.queue_id, queues });
        }
        for m in &mut messages {
            topic.clone_into(&mut m.topic);
        }
        let appended = self.store.append(&messages)?;
        // Most batches go to one queue: that case allocates nothing.
        let first = messages.first().map(|m| m.queue_id);
        if let Some(q) = first {
            self.wake(topic, q);
        }
        let mut others: Vec<u32> = Vec::new();
        for m in &messages {
            if Some(m.queue_id) != first && !others.contains(&m.queue_id) {
                others.push(m.queue_id);
                self.wake(topic, m.queue_id);
            }
        }
        Ok(appended)
    }

    pub(crate) fn wake(&self, topic: &str, queue_id: u32) {
        let woken = {
            let mut w = lock(&self.delivery.waiters);
            if w.is_empty() {
                return;
            }
            w.remove(&(Arc::from(topic), queue_id))
        };
        for w in woken.into_iter().flatten() {
            w.wake();
        }
    }

    /// Reads a queue.
    ///
    /// # Errors
    /// [`PullError`].
    pub fn pull(&self, topic: &str, queue_id: u32, offset: u64, max_messages: usize, max_bytes: usize) -> Result<QueueRead, PullError> {
        match self.check_queue(topic, queue_id) {
            Ok(_) => {}
            Err((true, _)) => return Err(PullError::UnknownTopic(topic.to_owned())),
            Err((false, queues)) => return Err(PullError::InvalidQueue { topic: topic.to_owned(), queue_id, queues }),
        }
        let read = self.store.read_queue(topic, queue_id, offset, max_messages, max_bytes)?;
        Ok(self.hold_until_due(topic, read))
    }

    /// Parks `waker` until the queue has a message at `offset` or later. Returns it back if
    /// there is one already (pull again now), or if the queue has too many waiters.
    pub fn wait_for(&self, topic: &str, queue_id: u32, offset: u64, waker: Box<dyn Wake>) -> Option<Box<dyn Wake>> {
        let mut w = lock(&self.delivery.waiters);
        if self.store.is_readable(topic, queue_id, offset) || self.topic(topic).is_none() {
            return Some(waker);
        }
        let list = w.entry((Arc::from(topic), queue_id)).or_default();
        list.retain(|x| !x.is_cancelled());
        if list.len() >= WAITERS_PER_QUEUE_MAX {
            return Some(waker);
        }
        list.push(waker);
        None
    }

    /// Retry topics deliver a message only once due: a pull stops at the first message whose
    /// delivery time is still ahead (each retry queue holds one delay, so it is in due order).
    /// When the message at `offset` of a retry queue becomes due, if it is held now: a long
    /// poll that found nothing due sleeps until then instead of looking again and again.
    #[must_use]
    pub fn held_until(&self, topic: &str, queue_id: u32, offset: u64) -> Option<u64> {
        if !topic.starts_with("%RETRY%") {
            return None;
        }
        let read = self.store.read_queue(topic, queue_id, offset, 1, usize::MAX).ok()?;
        let due = read.messages.first()?.properties.delivery_ms?;
        (due > self.clock.now_ms()).then_some(due)
    }

    pub(crate) fn hold_until_due(&self, topic: &str, mut read: QueueRead) -> QueueRead {
        if !topic.starts_with("%RETRY%") {
            return read;
        }
        let now = self.clock.now_ms();
        if let Some(i) = read.messages.iter().position(|m| m.properties.delivery_ms.is_some_and(|d| d > now)) {
            read.next_offset = read.messages[i].queue_offset;
            read.messages.truncate(i);
        }
        read
    }

    /// The first queue offset whose message was stored at or after `ts_ms` (the queue's end if
    /// none): a binary search over store times, which never decrease along a queue.
    ///
    /// # Errors
    /// A record that cannot be read.
    pub fn offset_for_time(&self, topic: &str, queue_id: u32, ts_ms: u64) -> Result<u64, PullError> {
        let (min, max) = self.store.queue_bounds(topic, queue_id);
        let (mut lo, mut hi) = (min, max);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.store.queue_entries(topic, queue_id, mid, 1)?;
            let Some(e) = e.first() else { break };
            if self.store.read(e.log_offset)?.store_ms < ts_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Reads a queue, keeping only messages whose tag passes `filter` (decided on the consume
    /// queue's tag hashes; the log is read only for messages that pass). `next_offset` moves
    /// past skipped messages too, so a group's offset advances through filtered-out ones.
    ///
    /// # Errors
    /// [`PullError`]; a bad filter is [`PullError::Filter`].
    pub fn pull_filtered(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        filter: &str,
    ) -> Result<QueueRead, PullError> {
        let filter = TagFilter::parse(filter).map_err(PullError::Filter)?;
        if filter == TagFilter::All {
            return self.pull(topic, queue_id, offset, max_messages, max_bytes);
        }
        match self.check_queue(topic, queue_id) {
            Ok(_) => {}
            Err((true, _)) => return Err(PullError::UnknownTopic(topic.to_owned())),
            Err((false, queues)) => return Err(PullError::InvalidQueue { topic: topic.to_owned(), queue_id, queues }),
        }
        let (min_offset, max_offset) = self.store.queue_bounds(topic, queue_id);
        let entries = self.store.queue_entries(topic, queue_id, offset, FILTER_SCAN_MAX)?;
        let mut messages = Vec::new();
        let mut next = offset.max(min_offset);
        let mut n_bytes = 0usize;
        for e in entries {
            if messages.len() >= max_messages || (!messages.is_empty() && n_bytes + e.size as usize > max_bytes) {
                break;
            }
            if filter.matches(e.tag_hash) {
                messages.push(self.store.read(e.log_offset)?);
                n_bytes += e.size as usize;
            }
            next += 1;
        }
        Ok(self.hold_until_due(topic, QueueRead { messages, next_offset: next, min_offset, max_offset }))
    }
}
