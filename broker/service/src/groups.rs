//! Consumer groups, offsets, queue locks, retries and the end of transactions: the engine's
//! state machines, with the service's errors and, for writes, the durability wait.

use wasmq_engine::{Assignment, Decided, Decision, EndOutcome, GroupMode, SendBackOutcome};

use crate::{Service, ServiceError};

/// How an end-transaction request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// This request decided it (durable on the master, as sends are).
    Applied(Decided),
    /// An unknown answer: the broker asks again later.
    StillPending,
    /// It had already ended (a late or repeated end): nothing changed.
    AlreadyDecided(Decided),
}

impl Service {
    /// Commits a group's offset for a queue (a consumer that manages its own assignment).
    ///
    /// # Errors
    /// Invalid group, unknown topic or queue.
    pub fn commit_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Result<(), ServiceError> {
        Ok(self.engine.commit_offset(group, topic, queue_id, offset)?)
    }

    #[must_use]
    pub fn query_offset(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.engine.query_offset(group, topic, queue_id)
    }

    /// A client's liveness and the groups it is in.
    ///
    /// # Errors
    /// Invalid names.
    pub fn heartbeat(&self, client_id: &str, producer_groups: Vec<String>, consumer_groups: Vec<String>) -> Result<(), ServiceError> {
        Ok(self.engine.heartbeat(client_id, producer_groups, consumer_groups)?)
    }

    /// Records that a client of a protocol front end is alive, with what it says it is.
    ///
    /// # Errors
    /// Invalid names, too many clients.
    pub fn client_heartbeat(
        &self,
        client_id: &str,
        about: wasmq_engine::ClientAbout,
        producer_groups: Vec<String>,
        consumer_groups: Vec<String>,
    ) -> Result<(), ServiceError> {
        Ok(self.engine.client_heartbeat(client_id, about, producer_groups, consumer_groups)?)
    }

    /// Forgets a client that said goodbye.
    pub fn forget_client(&self, client_id: &str) {
        self.engine.forget_client(client_id);
    }

    /// A producer connection joined `group` (it can answer check-backs now).
    pub fn producer_joined(&self, group: &str) {
        self.engine.producer_joined(group);
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
    ) -> Result<Assignment, ServiceError> {
        Ok(self.engine.group_heartbeat(group, member, mode, subscriptions)?)
    }

    pub fn group_leave(&self, group: &str, member: &str) {
        self.engine.group_leave(group, member);
    }

    /// A member's offset commit, fenced by its generation.
    ///
    /// # Errors
    /// [`ServiceError::Fenced`] when the member no longer holds the queue.
    pub fn group_commit(
        &self,
        group: &str,
        member: &str,
        generation: u64,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<(), ServiceError> {
        Ok(self.engine.group_commit(group, member, generation, topic, queue_id, offset)?)
    }

    /// Sends a consumed message back for a later retry (or to the dead letters).
    ///
    /// # Errors
    /// No such message; the append failed.
    pub fn send_back(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        log_offset: u64,
        dead_letter: bool,
        max_reconsume_times: Option<u32>,
    ) -> Result<SendBackOutcome, ServiceError> {
        let outcome = self.engine.send_back(group, topic, queue_id, log_offset, dead_letter, max_reconsume_times)?;
        let labels = crate::metrics::GroupLabels { group: group.to_owned() };
        match outcome {
            SendBackOutcome::Retry { .. } => self.metrics.retries.get_or_create(&labels).inc(),
            SendBackOutcome::DeadLetter { .. } => self.metrics.dead_letters.get_or_create(&labels).inc(),
        };
        Ok(outcome)
    }

    /// Locks a queue for one member of an orderly group; (granted, expires in ms).
    ///
    /// # Errors
    /// Invalid names, unknown queue.
    pub fn lock_queue(&self, group: &str, member: &str, topic: &str, queue_id: u32) -> Result<(bool, u64), ServiceError> {
        Ok(self.engine.lock_queue(group, member, topic, queue_id)?)
    }

    pub fn unlock_queue(&self, group: &str, member: &str, topic: &str, queue_id: u32) {
        self.engine.unlock_queue(group, member, topic, queue_id);
    }

    /// Cancels a scheduled message of `topic` before it is due (`handle` as its send was
    /// answered), answered once the recall is durable, as a send; returns the message id.
    ///
    /// # Errors
    /// A malformed handle; [`ServiceError::NotFound`]: delivered or recalled already; the append.
    pub async fn recall(&self, topic: &str, handle: &str) -> Result<String, ServiceError> {
        let id = self.engine.recall_scheduled(topic, handle)?;
        self.durable(self.engine.store().end_offset(), || format!("the recall of {id}")).await?;
        Ok(id)
    }

    /// Ends the transaction whose half message is at `log_offset`; a decision that applies is
    /// answered once durable, as a send.
    ///
    /// # Errors
    /// No such half message; the append failed; a flush timeout.
    pub async fn end_transaction(&self, log_offset: u64, unique_id: &str, decision: Decision) -> Result<TxOutcome, ServiceError> {
        // As a send: a read and an append in memory, no waiting (durability is waited for below).
        match self.engine.end_transaction(log_offset, unique_id, decision)? {
            EndOutcome::Applied { decided, end_offset } => {
                // The decision is on the master (and fsynced under sync flush); a slave that
                // lags gets it with the rest of the log.
                let _ = self.durable(end_offset, || format!("transaction at log offset {log_offset} ended")).await?;
                Ok(TxOutcome::Applied(decided))
            }
            EndOutcome::StillPending => Ok(TxOutcome::StillPending),
            EndOutcome::AlreadyDecided(d) => Ok(TxOutcome::AlreadyDecided(d)),
        }
    }
}
