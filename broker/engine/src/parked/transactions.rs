//! Transactions: half messages stored in `%HALF%` until their producer commits or rolls back
//! (the decision appended with the committed copy in one append), check-backs of undecided
//! ones to a live member of the producer group, discarding after the last check.

use super::*;

impl Engine {
    /// Stores a batch of half messages (their queues already chosen) invisibly: they reach
    /// `topic` only if the producer commits. `check_after_ms`: when to first ask the producer
    /// group if no decision came (the broker's check interval if `None`).
    ///
    /// # Errors
    /// Unknown topic or queue, a scheduled message, too many pending transactions, the append.
    pub fn send_half(
        &self,
        topic: &str,
        producer_group: &str,
        check_after_ms: Option<u64>,
        mut messages: Vec<NewMessage>,
    ) -> Result<wasmq_store::Appended, SendError> {
        self.writable()?;
        crate::topics::validate_group(producer_group).map_err(SendError::Invalid)?;
        let queues = self.topic(topic).ok_or_else(|| SendError::UnknownTopic(topic.to_owned()))?.queues;
        if let Some(m) = messages.iter().find(|m| m.queue_id >= queues) {
            return Err(SendError::InvalidQueue { topic: topic.to_owned(), queue_id: m.queue_id, queues });
        }
        if messages.iter().any(|m| m.properties.delivery_ms.is_some()) {
            return Err(SendError::Invalid("a transactional message cannot also be scheduled".into()));
        }
        if lock(&self.parked.tx).pending.len() + messages.len() > PENDING_HALVES_MAX {
            return Err(SendError::Invalid(format!("more than {PENDING_HALVES_MAX} undecided transactions; decide some first")));
        }
        let policy = self.parked.policy();
        for m in &mut messages {
            self.ensure_unique_id(m);
            m.properties.transaction = Some(TransactionState::Prepared);
            let user = &mut m.properties.user;
            user.retain(|(k, _)| !k.starts_with('%'));
            user.push((P_TOPIC.to_owned(), topic.to_owned()));
            user.push((P_QUEUE.to_owned(), m.queue_id.to_string()));
            user.push((P_GROUP.to_owned(), producer_group.to_owned()));
            if let Some(ms) = check_after_ms {
                user.push((P_CHECK_AFTER.to_owned(), ms.to_string()));
            }
            HALF_TOPIC.clone_into(&mut m.topic);
            m.queue_id = 0;
        }
        let mut tx = lock(&self.parked.tx);
        let appended = self.store.append(&messages)?;
        let now = self.clock.now_ms();
        for (m, a) in messages.iter().zip(&appended.messages) {
            let queue_id = internal(&m.properties.user, P_QUEUE).and_then(|q| q.parse().ok()).unwrap_or(0);
            tx.insert(
                a.log_offset,
                Half {
                    queue_offset: a.queue_offset,
                    topic: topic.to_owned(),
                    queue_id,
                    group: producer_group.to_owned(),
                    unique_id: m.properties.unique_id.clone().unwrap_or_default(),
                    stored_ms: now,
                    check_after_ms,
                    checks: 0,
                    next_check_ms: now + check_after_ms.unwrap_or(policy.check_interval_ms),
                    waiting_for_producer: false,
                },
            );
        }
        Ok(appended)
    }

    /// Ends the transaction of the half message at `log_offset` (whose unique id must be
    /// `unique_id`): a commit puts it on its topic, a rollback discards it, unknown leaves it
    /// to the next check. Idempotent: an end for a transaction already ended changes nothing.
    ///
    /// # Errors
    /// No half message there with that id; its topic was deleted (it is discarded); the append.
    /// The topic of the pending half message at `log_offset` with `unique_id`, if it is pending.
    #[must_use]
    pub fn pending_half_topic(&self, log_offset: u64, unique_id: &str) -> Option<String> {
        lock(&self.parked.tx).pending.get(&log_offset).filter(|h| h.unique_id == unique_id).map(|h| h.topic.clone())
    }

    pub fn end_transaction(&self, log_offset: u64, unique_id: &str, decision: Decision) -> Result<EndOutcome, EngineError> {
        if let Some(why) = self.read_only() {
            return Err(EngineError::ReadOnly(why));
        }
        let mut tx = lock(&self.parked.tx);
        let Some(half) = tx.pending.get(&log_offset).filter(|h| h.unique_id == unique_id).cloned() else {
            drop(tx);
            let decided = self.ended(log_offset, unique_id)?;
            lock(&self.parked.tx).counters.late_ends += 1;
            return Ok(EndOutcome::AlreadyDecided(decided));
        };
        let decided = match decision {
            Decision::Unknown => {
                tx.counters.unknown_answers += 1;
                return Ok(EndOutcome::StillPending);
            }
            Decision::Commit => Decided::Committed,
            Decision::Rollback => Decided::RolledBack,
        };
        // A commit whose topic (or queue) was deleted meanwhile has nowhere to go.
        let topic_gone = decided == Decided::Committed && self.topic(&half.topic).is_none_or(|c| half.queue_id >= c.queues);
        let decided = if topic_gone { Decided::Discarded } else { decided };
        let mut batch = Vec::with_capacity(2);
        if decided == Decided::Committed {
            let m = self.store.read(log_offset).map_err(invalid)?;
            let mut copy = released_copy(&m, half.topic.clone(), half.queue_id);
            copy.properties.transaction = Some(TransactionState::Commit);
            batch.push(copy);
        }
        batch.push(op_record(log_offset, decided));
        let appended = self.store.append(&batch)?;
        tx.remove(log_offset);
        match decided {
            Decided::Committed => tx.counters.committed += 1,
            Decided::RolledBack => tx.counters.rolled_back += 1,
            Decided::Discarded => tx.counters.discarded += 1,
        }
        drop(tx);
        if decided == Decided::Committed {
            self.wake(&half.topic, half.queue_id);
        }
        if topic_gone {
            tracing::warn!(topic = half.topic, log_offset, "transaction ended after its topic or queue was deleted; discarded");
            return Err(EngineError::Invalid(format!(
                "topic {} or its queue {} no longer exists: the transaction was discarded",
                half.topic, half.queue_id
            )));
        }
        Ok(EndOutcome::Applied { decided, end_offset: appended.end_offset })
    }

    /// How the transaction of a half message that is not pending ended, read from the log.
    pub(crate) fn ended(&self, log_offset: u64, unique_id: &str) -> Result<Decided, EngineError> {
        let not_half = || EngineError::Invalid(format!("no transaction with id {unique_id} at log offset {log_offset}"));
        let m = match self.store.read(log_offset) {
            Ok(m) => m,
            Err(ReadError::Trimmed { .. }) => return Err(EngineError::Invalid(format!("log offset {log_offset} expired (retention)"))),
            Err(_) => return Err(not_half()),
        };
        if m.topic != HALF_TOPIC || m.properties.unique_id.as_deref() != Some(unique_id) {
            return Err(not_half());
        }
        self.decision_in_log(&m)?.ok_or_else(|| EngineError::Invalid(format!("transaction at log offset {log_offset} is being decided")))
    }

    /// The decision recorded for a half message: its op record, or (a crash between the two
    /// records of one append) its committed copy.
    pub(crate) fn decision_in_log(&self, half: &StoredMessage) -> Result<Option<Decided>, EngineError> {
        if let Some(op) = self.store.find_by_key(TX_OP_TOPIC, &half.log_offset.to_string(), 1).map_err(invalid)?.first() {
            return Ok(Some(decided_of(op)));
        }
        let topic = internal(&half.properties.user, P_TOPIC).unwrap_or_default();
        let uid = half.properties.unique_id.as_deref().unwrap_or_default();
        let copies = self.store.find_by_id_in(uid, &topic, 16).map_err(invalid)?;
        Ok(copies.iter().any(|c| c.properties.transaction == Some(TransactionState::Commit)).then_some(Decided::Committed))
    }

    /// Half messages due for a check-back. Those past the maximum number of checks are
    /// discarded here (recorded in the log, and logged). Each returned check must be followed
    /// by [`Engine::transaction_checked`].
    pub fn transaction_checks_due(&self) -> Vec<CheckDue> {
        let now = self.clock.now_ms();
        let policy = self.parked.policy();
        let mut due = Vec::new();
        let mut expired = Vec::new();
        let log_min = self.store.min_offset();
        {
            let tx = lock(&self.parked.tx);
            // Retention deleted these half messages: nothing is left to commit.
            expired.extend(tx.pending.range(..log_min).map(|(&o, h)| (o, h.unique_id.clone())));
            for &(_, log_offset) in tx.due.range(..(now + 1, 0)) {
                let h = &tx.pending[&log_offset];
                if log_offset < log_min {
                    continue;
                }
                if h.checks >= policy.checks_max {
                    expired.push((log_offset, h.unique_id.clone()));
                } else if due.len() < CHECKS_PER_PASS_MAX {
                    due.push(CheckDue { log_offset, producer_group: h.group.clone(), checks: h.checks });
                }
            }
        }
        for (log_offset, uid) in expired {
            if let Err(e) = self.discard_half(log_offset, &uid) {
                tracing::error!(log_offset, error = %e, "discarding an undecided transaction");
            }
        }
        due
    }

    pub(crate) fn discard_half(&self, log_offset: u64, unique_id: &str) -> Result<(), EngineError> {
        let mut tx = lock(&self.parked.tx);
        let Some(h) = tx.pending.get(&log_offset).filter(|h| h.unique_id == unique_id).cloned() else { return Ok(()) };
        self.store.append(&[op_record(log_offset, Decided::Discarded)])?;
        tx.remove(log_offset);
        tx.counters.discarded += 1;
        let why = if log_offset < self.store.min_offset() {
            "transaction undecided until retention deleted its half message; discarded"
        } else {
            "transaction still unknown after the maximum number of checks; its message was discarded"
        };
        tracing::warn!(topic = h.topic, producer_group = h.group, unique_id, log_offset, checks = h.checks, "{why}");
        Ok(())
    }

    /// After a check: `sent` if a producer of the group was asked (it counts against the
    /// maximum), else there was none connected (asked again later, not counted).
    pub fn transaction_checked(&self, log_offset: u64, sent: bool) {
        let now = self.clock.now_ms();
        let interval = self.parked.policy().check_interval_ms;
        let mut tx = lock(&self.parked.tx);
        let Some(h) = tx.reschedule(log_offset, now + interval) else { return };
        h.waiting_for_producer = !sent;
        if sent {
            h.checks += 1;
            tx.counters.checks_sent += 1;
        }
    }

    /// A producer of `group` connected: transactions whose last check found none are due now.
    pub fn producer_joined(&self, group: &str) {
        let now = self.clock.now_ms();
        let mut tx = lock(&self.parked.tx);
        let waiting: Vec<u64> = tx.pending.iter().filter(|(_, h)| h.waiting_for_producer && h.group == group).map(|(&o, _)| o).collect();
        for o in waiting {
            if let Some(h) = tx.reschedule(o, now) {
                h.waiting_for_producer = false;
            }
        }
    }

    /// The half message at `log_offset` as its producer sent it (real topic and queue, without
    /// internal properties), for a check-back.
    ///
    /// # Errors
    /// Not a pending half message.
    pub fn half_message(&self, log_offset: u64) -> Result<StoredMessage, EngineError> {
        let (topic, queue_id) = {
            let tx = lock(&self.parked.tx);
            let h = tx.pending.get(&log_offset).ok_or_else(|| EngineError::Invalid(format!("no pending transaction at {log_offset}")))?;
            (h.topic.clone(), h.queue_id)
        };
        let mut m = self.store.read(log_offset).map_err(invalid)?;
        m.properties.user.retain(|(k, _)| !k.starts_with('%'));
        m.topic = topic;
        m.queue_id = queue_id;
        Ok(m)
    }

    /// Undecided transactions by (topic, producer group), and counters since start.
    pub fn transactions(&self) -> (Vec<PendingTransactions>, TxCounters) {
        let tx = lock(&self.parked.tx);
        let mut by: BTreeMap<(String, String), PendingTransactions> = BTreeMap::new();
        for h in tx.pending.values() {
            let e = by.entry((h.topic.clone(), h.group.clone())).or_insert_with(|| PendingTransactions {
                topic: h.topic.clone(),
                producer_group: h.group.clone(),
                pending: 0,
                oldest_stored_ms: h.stored_ms,
                checks: 0,
                most_checks: 0,
            });
            e.pending += 1;
            e.oldest_stored_ms = e.oldest_stored_ms.min(h.stored_ms);
            e.checks += u64::from(h.checks);
            e.most_checks = e.most_checks.max(h.checks);
        }
        (by.into_values().collect(), tx.counters)
    }
}
