//! The topic registry: topics and their queue counts (a snapshot swapped whole on change,
//! persisted to `topics.json`), topics' own retention, and the round robin over queues.

use super::*;

/// The registry's state.
pub(crate) struct Topics {
    pub(crate) path: PathBuf,
    /// Read-mostly snapshot, replaced whole on create and delete.
    pub(crate) map: RwLock<Arc<BTreeMap<String, TopicConfig>>>,
    /// Serializes changes.
    pub(crate) write: Mutex<()>,
    pub(crate) round_robin: AtomicU32,
}

impl Engine {
    pub(crate) fn snapshot(&self) -> Arc<BTreeMap<String, TopicConfig>> {
        Arc::clone(&self.topics.map.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.snapshot().get(name).copied()
    }

    pub fn topics(&self) -> Vec<(String, TopicConfig)> {
        self.snapshot().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Creates a topic with `queues` queues.
    ///
    /// # Errors
    /// [`TopicError`]: exists, bad name or queue count, too many topics, registry not saved.
    pub fn create_topic(&self, name: &str, queues: u32) -> Result<TopicConfig, TopicError> {
        self.create(name, queues, TopicOptions::default(), false)
    }

    /// Creates a topic with its own retention (messages stay readable for `retention_ms`; the
    /// log's retention still applies when it is shorter) or message type.
    ///
    /// # Errors
    /// As [`Engine::create_topic`]; a retention of 0.
    pub fn create_topic_with(&self, name: &str, queues: u32, options: TopicOptions) -> Result<TopicConfig, TopicError> {
        if options.retention_ms == Some(0) {
            return Err(TopicError::Invalid(
                "a retention of 0 ms would keep nothing: give a positive retention_ms, or none for the log's retention".into(),
            ));
        }
        self.create(name, queues, options, false)
    }

    /// Changes a topic's message type; sends already stored stay as they are.
    ///
    /// # Errors
    /// Unknown topic, one of the broker's own (`%…`), a slave, the registry not saved.
    pub fn set_topic_message_type(&self, name: &str, message_type: MessageType) -> Result<TopicConfig, TopicError> {
        if name.starts_with('%') {
            return Err(TopicError::Reserved);
        }
        if let Some(why) = self.read_only() {
            return Err(TopicError::ReadOnly(why));
        }
        let _w = lock(&self.topics.write);
        let mut table = (*self.snapshot()).clone();
        let config = table.get_mut(name).ok_or_else(|| TopicError::Unknown(name.to_owned()))?;
        config.message_type = message_type;
        let config = *config;
        topics::save_json(&self.topics.path, &table)?;
        *self.topics.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        tracing::info!(topic = name, %message_type, "topic message type changed");
        Ok(config)
    }

    /// Refuses a send of `sent` messages to a topic of another type.
    ///
    /// # Errors
    /// [`TopicError::WrongMessageType`]; an unknown topic is left to the send.
    pub fn check_message_type(&self, topic: &str, sent: MessageType) -> Result<(), TopicError> {
        match self.topic(topic) {
            Some(c) if !c.message_type.accepts(sent) => {
                Err(TopicError::WrongMessageType { topic: topic.to_owned(), accepts: c.message_type, sent })
            }
            _ => Ok(()),
        }
    }

    /// Applies each topic's own retention: per queue, entries stored more than its retention
    /// ago become unreadable. Returns how many entries were cut. Run at open and periodically.
    ///
    /// # Errors
    /// A record that could not be read, an index file that could not be deleted.
    pub fn enforce_topic_retention(&self) -> std::io::Result<u64> {
        let now = self.clock.now_ms();
        let mut cut = 0;
        for (topic, c) in self.snapshot().iter() {
            let Some(retention) = c.retention_ms else { continue };
            for q in 0..c.queues {
                let (min, _) = self.store.queue_bounds(topic, q);
                let keep_from =
                    self.offset_for_time(topic, q, now.saturating_sub(retention)).map_err(|e| std::io::Error::other(e.to_string()))?;
                if keep_from > min {
                    let new_min = self.store.trim_queue(topic, q, keep_from)?;
                    cut += new_min - min;
                }
            }
        }
        Ok(cut)
    }

    /// Creates one of the broker's own topics (`%RETRY%…`, `%DLQ%…`) if it is missing.
    ///
    /// # Errors
    /// As [`Engine::create_topic`], but an existing topic is fine.
    pub fn ensure_system_topic(&self, name: &str, queues: u32) -> Result<TopicConfig, TopicError> {
        if let Some(c) = self.topic(name) {
            return Ok(c);
        }
        match self.create(name, queues, TopicOptions::default(), true) {
            Err(TopicError::Exists(_)) => Ok(self.topic(name).expect("exists")),
            other => other,
        }
    }

    pub(crate) fn create(&self, name: &str, queues: u32, options: TopicOptions, system: bool) -> Result<TopicConfig, TopicError> {
        if let Some(why) = self.read_only() {
            return Err(TopicError::ReadOnly(why));
        }
        wasmq_store::validate_topic(name).map_err(|e| TopicError::Invalid(e.to_string()))?;
        if name.starts_with('%') && !system {
            return Err(TopicError::Reserved);
        }
        if queues == 0 || queues > QUEUES_PER_TOPIC_MAX {
            return Err(TopicError::BadQueueCount { queues });
        }
        let _w = lock(&self.topics.write);
        let mut table = (*self.snapshot()).clone();
        if table.contains_key(name) {
            return Err(TopicError::Exists(name.to_owned()));
        }
        if table.len() >= TOPICS_MAX {
            return Err(TopicError::TooMany);
        }
        let TopicOptions { retention_ms, message_type } = options;
        let config = TopicConfig { queues, created_ms: self.clock.now_ms(), retention_ms, message_type };
        table.insert(name.to_owned(), config);
        topics::save_json(&self.topics.path, &table)?;
        *self.topics.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        tracing::info!(topic = name, queues, retention_ms, %message_type, "topic created");
        Ok(config)
    }

    /// Deletes a topic: it stops taking sends and pulls at once; its consume queues go, and
    /// its messages stay in the log until retention.
    ///
    /// # Errors
    /// Unknown topic, or the registry could not be saved.
    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        if crate::parked::is_internal_topic(name) {
            return Err(TopicError::Reserved);
        }
        if let Some(why) = self.read_only() {
            return Err(TopicError::ReadOnly(why));
        }
        let _w = lock(&self.topics.write);
        let mut table = (*self.snapshot()).clone();
        if table.remove(name).is_none() {
            return Err(TopicError::Unknown(name.to_owned()));
        }
        topics::save_json(&self.topics.path, &table)?;
        *self.topics.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.store.remove_topic(name)?;
        lock(&self.consumers.offsets).remove_topic(name);
        self.consumers.offsets_dirty.store(true, Ordering::Release);
        // Pollers on the deleted topic learn it on their next pull.
        let woken: Vec<Box<dyn Wake>> = {
            let mut w = lock(&self.delivery.waiters);
            let keys: Vec<QueueKey> = w.keys().filter(|(t, _)| &**t == name).cloned().collect();
            keys.into_iter().flat_map(|k| w.remove(&k).unwrap_or_default()).collect()
        };
        woken.into_iter().for_each(|w| w.wake());
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// A topic with each queue's offsets.
    ///
    /// # Errors
    /// Unknown topic.
    pub fn describe(&self, name: &str) -> Result<TopicStatus, TopicError> {
        let config = self.topic(name).ok_or_else(|| TopicError::Unknown(name.to_owned()))?;
        let queues = (0..config.queues)
            .map(|q| {
                let (min_offset, max_offset) = self.store.queue_bounds(name, q);
                QueueStatus { queue_id: q, min_offset, max_offset }
            })
            .collect();
        Ok(TopicStatus { name: name.to_owned(), queues, created_ms: config.created_ms })
    }

    pub(crate) fn check_queue(&self, topic: &str, queue_id: u32) -> Result<u32, (bool, u32)> {
        match self.topic(topic) {
            None => Err((true, 0)),
            Some(c) if queue_id < c.queues => Ok(c.queues),
            Some(c) => Err((false, c.queues)),
        }
    }

    /// The next queue of the broker's round robin over `queues` queues.
    pub fn pick_queue(&self, queues: u32) -> u32 {
        self.topics.round_robin.fetch_add(1, Ordering::Relaxed) % queues.max(1)
    }
}
