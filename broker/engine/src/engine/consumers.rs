//! Consumers: group membership and assignment, offsets (committed, fenced, persisted),
//! client heartbeats, orderly queue locks, and retries with their dead letters.

use super::*;
use serde::{Deserialize, Serialize};

/// What the broker knows of its consumers.
pub(crate) struct Consumers {
    pub(crate) offsets_path: PathBuf,
    pub(crate) offsets: Mutex<OffsetTable>,
    pub(crate) offsets_dirty: AtomicBool,
    /// On a slave: offsets committed here, to hand to the master.
    pub(crate) local_commits: Mutex<OffsetTable>,
    pub(crate) clients: Mutex<HashMap<String, ClientInfo>>,
    pub(crate) coordinator: Mutex<Coordinator>,
    pub(crate) retry: RwLock<(Vec<u64>, u32)>,
    /// Orderly consumption: (group, topic, queue) → (member, expiry ms).
    pub(crate) locks: Mutex<HashMap<LockKey, (String, u64)>>,
    pub(crate) lock_ttl_ms: AtomicU64,
    /// Messages received one by one and not yet acknowledged (`receipts.rs`).
    pub(crate) receipts: super::receipts::Receipts,
    /// Groups' own settings (`groups.json`); a group without an entry has the defaults.
    pub(crate) settings_path: PathBuf,
    pub(crate) settings: Mutex<BTreeMap<String, GroupSettings>>,
}

/// A consumer group's own settings, as RocketMQ's subscription group config holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettings {
    /// FIFO consumption for consumers that receive message by message (RocketMQ 5 clients):
    /// one batch of a queue in flight at a time for the group — so one message group at a time,
    /// in order — the next only after the ack; a message whose invisible time ends comes again
    /// before anything after it, and goes to the dead-letter topic after the maximum attempts.
    #[serde(default)]
    pub fifo: bool,
}

impl Engine {
    /// Sets how long a silent group member keeps its queues.
    pub fn set_session_timeout(&self, timeout_ms: u64) {
        *lock(&self.consumers.coordinator) = Coordinator::new(timeout_ms);
    }

    pub(crate) fn queues_of(&self) -> impl Fn(&str) -> Option<u32> + '_ {
        let snapshot = self.snapshot();
        move |t: &str| snapshot.get(t).map(|c| c.queues)
    }

    /// Sets the redelivery delays (one per reconsume count; the last repeats) and the maximum
    /// number of reconsumes before the dead-letter topic.
    ///
    /// # Errors
    /// No delays, or more than 64.
    pub fn set_retry_policy(&self, delays_ms: Vec<u64>, max_reconsume_times: u32) -> Result<(), EngineError> {
        if delays_ms.is_empty() || delays_ms.len() > 64 {
            return Err(EngineError::Invalid("retry delays: 1 to 64 values".into()));
        }
        *self.consumers.retry.write().unwrap_or_else(|e| e.into_inner()) = (delays_ms, max_reconsume_times);
        Ok(())
    }

    /// The redelivery delays and the maximum number of reconsumes (see
    /// [`Engine::set_retry_policy`]).
    #[must_use]
    pub fn retry_policy(&self) -> (Vec<u64>, u32) {
        self.consumers.retry.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets how long an orderly queue lock lasts unless renewed.
    pub fn set_lock_ttl(&self, ttl_ms: u64) {
        self.consumers.lock_ttl_ms.store(ttl_ms, Ordering::Release);
    }

    /// Orderly consumption: takes or renews a group's lock on a queue for `member`. Granted when
    /// the queue is unlocked, its lock expired, or `member` holds it. Returns the grant and how
    /// long it lasts. While one member holds it, no other member of the group may consume the
    /// queue, so a queue is processed by one member at a time, in offset order.
    ///
    /// # Errors
    /// Invalid group, too many locks.
    pub fn lock_queue(&self, group: &str, member: &str, topic: &str, queue_id: u32) -> Result<(bool, u64), EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        let now = self.clock.now_ms();
        let ttl = self.consumers.lock_ttl_ms.load(Ordering::Acquire);
        let mut locks = lock(&self.consumers.locks);
        let key = (group.to_owned(), topic.to_owned(), queue_id);
        match locks.get(&key) {
            Some((holder, expires)) if holder != member && *expires > now => Ok((false, 0)),
            _ => {
                if locks.len() >= ORDER_LOCKS_MAX && !locks.contains_key(&key) {
                    locks.retain(|_, (_, e)| *e > now);
                    if locks.len() >= ORDER_LOCKS_MAX {
                        return Err(EngineError::Invalid(format!("more than {ORDER_LOCKS_MAX} queue locks")));
                    }
                }
                locks.insert(key, (member.to_owned(), now + ttl));
                Ok((true, ttl))
            }
        }
    }

    /// Releases `member`'s lock on a queue (a lock held by another member is left alone).
    pub fn unlock_queue(&self, group: &str, member: &str, topic: &str, queue_id: u32) {
        let mut locks = lock(&self.consumers.locks);
        let key = (group.to_owned(), topic.to_owned(), queue_id);
        if locks.get(&key).is_some_and(|(holder, _)| holder == member) {
            locks.remove(&key);
        }
    }

    /// A consumer failed a message: schedule it again through the group's retry topic (at the
    /// delay of its new reconsume count), or move it to the dead-letter topic past the maximum.
    /// The message keeps its body, unique id, keys and tags, and records its origin topic.
    ///
    /// `max_reconsume_times`: the group's own maximum, or `None` for the broker's.
    ///
    /// # Errors
    /// Unknown message (not at `log_offset` of that topic and queue), or the append failed.
    pub fn send_back(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        log_offset: u64,
        dead_letter: bool,
        max_reconsume_times: Option<u32>,
    ) -> Result<SendBackOutcome, EngineError> {
        self.send_back_due(group, topic, queue_id, log_offset, dead_letter, max_reconsume_times, None)
    }

    /// [`Engine::send_back`], the retry due at `due_ms` when given (a received message whose
    /// invisible time was its delay) instead of after its level's delay.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_back_due(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        log_offset: u64,
        dead_letter: bool,
        max_reconsume_times: Option<u32>,
        due_ms: Option<u64>,
    ) -> Result<SendBackOutcome, EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        let m = self.store.read(log_offset).map_err(|e| EngineError::Invalid(e.to_string()))?;
        if m.topic != topic || m.queue_id != queue_id {
            return Err(EngineError::Invalid(format!("no message of {topic}/{queue_id} at log offset {log_offset}")));
        }
        let (delays, default_max) = self.consumers.retry.read().unwrap_or_else(|e| e.into_inner()).clone();
        let max = max_reconsume_times.unwrap_or(default_max);
        let reconsume_times = m.properties.reconsume_times + 1;
        let mut properties = m.properties;
        properties.reconsume_times = reconsume_times;
        if !properties.user.iter().any(|(k, _)| k == ORIGIN_TOPIC_PROPERTY) {
            properties.user.push((ORIGIN_TOPIC_PROPERTY.to_owned(), m.topic.clone()));
        }
        let save = |e: SendError| match e {
            SendError::ReadOnly(why) => EngineError::ReadOnly(why),
            e => EngineError::Invalid(e.to_string()),
        };
        if reconsume_times > max || dead_letter {
            let dlq = dlq_topic(group);
            self.ensure_system_topic(&dlq, 1).map_err(|e| EngineError::Invalid(e.to_string()))?;
            properties.delivery_ms = None;
            let msg = NewMessage { topic: dlq.clone(), queue_id: 0, born_ms: m.born_ms, flags: m.flags, properties, body: m.body };
            self.send(&dlq, Some(0), vec![msg]).map_err(save)?;
            tracing::info!(group, topic, reconsume_times, "message moved to the dead-letter topic");
            return Ok(SendBackOutcome::DeadLetter { reconsume_times });
        }
        let retry = retry_topic(group);
        self.ensure_system_topic(&retry, delays.len() as u32).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let level = (reconsume_times as usize).min(delays.len());
        let due_ms = due_ms.unwrap_or_else(|| self.clock.now_ms() + delays[level - 1]);
        properties.delivery_ms = Some(due_ms);
        let msg = NewMessage { topic: retry.clone(), queue_id: 0, born_ms: m.born_ms, flags: m.flags, properties, body: m.body };
        self.send(&retry, Some(level as u32 - 1), vec![msg]).map_err(save)?;
        Ok(SendBackOutcome::Retry { reconsume_times, due_ms })
    }

    /// Sends a dead-lettered message (at `queue_offset` of the group's DLQ) back to the topic it
    /// first came from, as a new message with its reconsume count reset; returns its new queue
    /// and queue offset. The DLQ copy stays (a DLQ is an audit trail).
    ///
    /// # Errors
    /// No such dead letter, its origin topic is gone, or the append failed.
    pub fn resend_dead_letter(&self, group: &str, queue_offset: u64) -> Result<(String, u32, u64), EngineError> {
        let dlq = dlq_topic(group);
        let read = self.pull(&dlq, 0, queue_offset, 1, usize::MAX).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let m = read
            .messages
            .into_iter()
            .next()
            .filter(|m| m.queue_offset == queue_offset)
            .ok_or_else(|| EngineError::Invalid(format!("no dead letter at offset {queue_offset} of {dlq}")))?;
        let mut properties = m.properties;
        let origin = properties.user.iter().find(|(k, _)| k == ORIGIN_TOPIC_PROPERTY).map(|(_, v)| v.clone()).unwrap_or_default();
        properties.user.retain(|(k, _)| k != ORIGIN_TOPIC_PROPERTY);
        properties.reconsume_times = 0;
        properties.delivery_ms = None;
        let msg = NewMessage { topic: origin.clone(), queue_id: 0, born_ms: m.born_ms, flags: m.flags, properties, body: m.body };
        let (queue_id, appended) = self.send(&origin, None, vec![msg]).map_err(|e| EngineError::Invalid(e.to_string()))?;
        tracing::info!(group, origin, queue_offset, "dead letter resent");
        Ok((origin, queue_id, appended.messages[0].queue_offset))
    }

    /// A group member joins or heartbeats; returns its assignment.
    ///
    /// # Errors
    /// Invalid names or filters, mode conflicts, limits.
    pub fn group_heartbeat(
        &self,
        group: &str,
        member: &str,
        mode: GroupMode,
        subscriptions: Vec<(String, String)>,
    ) -> Result<Assignment, EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        if member.is_empty() || member.len() > 255 {
            return Err(EngineError::Invalid("client id must be 1..=255 bytes".into()));
        }
        let mut subs: std::collections::BTreeMap<String, String> = subscriptions.into_iter().collect();
        if mode == GroupMode::Clustering {
            // Clustering members also read the group's retry topic, shared out like the rest.
            let queues = self.consumers.retry.read().unwrap_or_else(|e| e.into_inner()).0.len() as u32;
            let retry = retry_topic(group);
            match self.ensure_system_topic(&retry, queues) {
                Ok(_) => {
                    subs.entry(retry).or_insert_with(|| "*".to_owned());
                }
                // A slave reads the retry topic once its master has created it.
                Err(TopicError::ReadOnly(_)) => {}
                Err(e) => return Err(EngineError::Invalid(e.to_string())),
            }
        }
        let now = self.clock.now_ms();
        lock(&self.consumers.coordinator).heartbeat(group, member, mode, subs, now, self.queues_of()).map_err(EngineError::Invalid)
    }

    pub fn group_leave(&self, group: &str, member: &str) {
        lock(&self.consumers.coordinator).leave(group, member, self.queues_of());
    }

    /// Drops group members that stopped heartbeating; returns how many.
    pub fn expire_members(&self) -> usize {
        let now = self.clock.now_ms();
        lock(&self.consumers.coordinator).expire(now, &self.queues_of())
    }

    /// Commits an offset for a member that must still own the queue at this generation.
    ///
    /// # Errors
    /// [`FenceError`] (as `Fenced`), or an invalid queue.
    pub fn group_commit(
        &self,
        group: &str,
        member: &str,
        generation: u64,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<(), GroupCommitError> {
        lock(&self.consumers.coordinator).check_commit(group, member, generation, topic, queue_id).map_err(GroupCommitError::Fenced)?;
        self.commit_offset(group, topic, queue_id, offset).map_err(GroupCommitError::Engine)
    }

    pub fn describe_group(&self, group: &str) -> Option<GroupView> {
        lock(&self.consumers.coordinator).describe(group, self.queues_of())
    }

    /// A group's settings (the defaults for a group that has none).
    pub fn group_settings(&self, group: &str) -> GroupSettings {
        lock(&self.consumers.settings).get(group).copied().unwrap_or_default()
    }

    /// Sets a group's settings (the group need not exist yet: it is created by them).
    ///
    /// # Errors
    /// A bad group name, a slave, `groups.json` not saved.
    pub fn set_group_settings(&self, group: &str, settings: GroupSettings) -> Result<(), EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        if let Some(why) = self.read_only() {
            return Err(EngineError::ReadOnly(why));
        }
        let mut all = lock(&self.consumers.settings);
        let before = all.insert(group.to_owned(), settings);
        if let Err(source) = topics::save_json(&self.consumers.settings_path, &*all) {
            match before {
                Some(b) => all.insert(group.to_owned(), b),
                None => all.remove(group),
            };
            return Err(EngineError::Save { path: self.consumers.settings_path.clone(), source });
        }
        tracing::info!(group, fifo = settings.fifo, "group settings changed");
        Ok(())
    }

    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = lock(&self.consumers.coordinator).groups();
        g.extend(lock(&self.consumers.offsets).groups.keys().cloned());
        g.extend(lock(&self.consumers.settings).keys().cloned());
        g.sort();
        g.dedup();
        g
    }

    /// Sets a group's offsets for every queue of `topic`.
    ///
    /// # Errors
    /// Unknown topic, a bad target, or live members in clustering (they would commit over it).
    pub fn reset_offsets(&self, group: &str, topic: &str, to: &str) -> Result<Vec<(u32, u64)>, EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        let config = self.topic(topic).ok_or_else(|| EngineError::Invalid(format!("topic {topic} does not exist")))?;
        let mut set = Vec::new();
        for q in 0..config.queues {
            let (min, max) = self.store.queue_bounds(topic, q);
            let offset = match to {
                "earliest" => min,
                "latest" => max,
                ts => {
                    let ts: u64 = ts.parse().map_err(|_| EngineError::Invalid(format!("{ts:?}: earliest, latest or a timestamp in ms")))?;
                    self.offset_for_time(topic, q, ts).map_err(|e| EngineError::Invalid(e.to_string()))?
                }
            };
            set.push((q, offset));
        }
        let mut offsets = lock(&self.consumers.offsets);
        for &(q, o) in &set {
            offsets.set(group, topic, q, o);
        }
        drop(offsets);
        self.consumers.offsets_dirty.store(true, Ordering::Release);
        tracing::info!(group, topic, to, "group offsets reset");
        Ok(set)
    }

    /// Deletes a group's offsets.
    ///
    /// # Errors
    /// The group has live members, or does not exist.
    pub fn delete_group(&self, group: &str) -> Result<(), EngineError> {
        if self.describe_group(group).is_some_and(|g| !g.members.is_empty()) {
            return Err(EngineError::Invalid(format!("group {group} has live members; stop them first")));
        }
        let had_offsets = lock(&self.consumers.offsets).groups.remove(group).is_some();
        let had_settings = {
            let mut all = lock(&self.consumers.settings);
            let had = all.remove(group).is_some();
            if had {
                topics::save_json(&self.consumers.settings_path, &*all)
                    .map_err(|source| EngineError::Save { path: self.consumers.settings_path.clone(), source })?;
            }
            had
        };
        if !had_offsets && !had_settings {
            return Err(EngineError::Invalid(format!("group {group} does not exist")));
        }
        self.consumers.offsets_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Commits a group's offset for a queue.
    ///
    /// # Errors
    /// Invalid group, unknown topic or queue.
    pub fn commit_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Result<(), EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        self.check_queue(topic, queue_id).map_err(|_| EngineError::Invalid(format!("no queue {queue_id} in topic {topic}")))?;
        lock(&self.consumers.offsets).set(group, topic, queue_id, offset);
        self.consumers.offsets_dirty.store(true, Ordering::Release);
        if lock(&self.read_only).is_some() {
            lock(&self.consumers.local_commits).set(group, topic, queue_id, offset);
        }
        Ok(())
    }

    pub fn query_offset(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        lock(&self.consumers.offsets).get(group, topic, queue_id)
    }

    pub fn offsets(&self) -> OffsetTable {
        lock(&self.consumers.offsets).clone()
    }

    /// Writes the offsets to disk if they changed.
    ///
    /// # Errors
    /// The file could not be written.
    pub fn persist_offsets(&self) -> Result<(), EngineError> {
        if !self.follows.load(Ordering::Acquire) {
            self.save_watermarks(&self.parked_path).map_err(|source| EngineError::Save { path: self.parked_path.clone(), source })?;
        }
        self.save_receipts().map_err(|source| EngineError::Save { path: self.consumers.receipts.path.clone(), source })?;
        if !self.consumers.offsets_dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let table = lock(&self.consumers.offsets).clone();
        topics::save_json(&self.consumers.offsets_path, &table).map_err(|source| {
            self.consumers.offsets_dirty.store(true, Ordering::Release);
            EngineError::Save { path: self.consumers.offsets_path.clone(), source }
        })
    }

    /// Records that a client is alive.
    ///
    /// # Errors
    /// Invalid group names, or too many clients.
    pub fn heartbeat(&self, client_id: &str, producer_groups: Vec<String>, consumer_groups: Vec<String>) -> Result<(), EngineError> {
        let about = ClientAbout { protocol: "native".into(), ..ClientAbout::default() };
        self.client_heartbeat(client_id, about, producer_groups, consumer_groups)
    }

    /// Records that a client is alive, with what it says it is.
    ///
    /// # Errors
    /// Invalid group names, or too many clients.
    pub fn client_heartbeat(
        &self,
        client_id: &str,
        about: ClientAbout,
        producer_groups: Vec<String>,
        consumer_groups: Vec<String>,
    ) -> Result<(), EngineError> {
        for g in producer_groups.iter().chain(&consumer_groups) {
            topics::validate_group(g).map_err(EngineError::Invalid)?;
        }
        let mut clients = lock(&self.consumers.clients);
        if clients.len() >= CLIENTS_MAX && !clients.contains_key(client_id) {
            return Err(EngineError::Invalid(format!("more than {CLIENTS_MAX} clients")));
        }
        clients.insert(client_id.to_owned(), ClientInfo { last_seen_ms: self.clock.now_ms(), producer_groups, consumer_groups, about });
        Ok(())
    }

    /// Forgets a client that said goodbye.
    pub fn forget_client(&self, client_id: &str) {
        lock(&self.consumers.clients).remove(client_id);
    }

    pub fn clients(&self) -> HashMap<String, ClientInfo> {
        lock(&self.consumers.clients).clone()
    }
}
