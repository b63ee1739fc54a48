//! A consumer-group member: joins the group, reads the queues the broker assigns it with long
//! polling, calls the handler for each message, and commits offsets fenced by the group's
//! generation. Delivery is at-least-once: a message handled but not yet committed when its queue
//! moves is handled again by the new owner; each message carries its unique id for deduplication.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmq_protocol::{
    ErrorCode, GroupCommitRequest, GroupHeartbeatRequest, GroupLeaveRequest, GroupMode, LockQueueRequest, OffsetQueryRequest,
    PulledMessage, Request, Response, SendBackRequest,
};

/// Tries to hand a failed message back before the reader stops and re-reads from its last
/// commit (so the message is not skipped).
const SEND_BACK_TRIES: u32 = 3;
/// The user property naming a retried message's first topic (set by the broker).
const ORIGIN_TOPIC_PROPERTY: &str = "ORIGIN_TOPIC";

use crate::{ClientError, Connection, PullConsumer};

/// Where a group starts reading a queue it has never committed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(u64),
}

/// Settings of a group member.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub group: String,
    pub mode: GroupMode,
    /// (topic, tag filter: `*` or `A || B`).
    pub subscriptions: Vec<(String, String)>,
    pub start_from: StartFrom,
    /// How often the member heartbeats; keep it well below the broker's session timeout.
    pub heartbeat_interval: Duration,
    /// Longest one pull waits for messages.
    pub pull_wait: Duration,
    /// Messages per pull.
    pub batch: u32,
    /// Orderly: each queue is consumed by one member at a time (a broker lock, renewed while
    /// held), strictly in offset order; a failing message is retried in place after
    /// `orderly_retry_delay`, never skipped, and goes to the dead-letter topic only after
    /// `max_reconsume_times` failures.
    pub orderly: bool,
    pub orderly_retry_delay: Duration,
    /// The group's maximum number of reconsumes before a message goes to the dead-letter topic
    /// (16, as RocketMQ; 0: the broker's `max_reconsume_times`).
    pub max_reconsume_times: u32,
    /// Most messages handled at once by this member, across its queues (not orderly). With 1
    /// (the default) each queue's messages are handled one after another, in offset order, and
    /// queues in parallel; above 1 a pulled batch runs on blocking threads this many at a time,
    /// and a queue's messages may finish out of order.
    pub handler_concurrency: usize,
}

impl GroupOptions {
    pub fn new(group: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            mode: GroupMode::Clustering,
            subscriptions: vec![(topic.into(), "*".into())],
            start_from: StartFrom::Earliest,
            heartbeat_interval: Duration::from_secs(3),
            pull_wait: Duration::from_secs(1),
            batch: 64,
            orderly: false,
            orderly_retry_delay: Duration::from_secs(1),
            max_reconsume_times: 16,
            handler_concurrency: 1,
        }
    }
}

/// What a handler made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    Success,
    /// Deliver it again later (through the group's retry topic, with a growing delay; after
    /// the broker's maximum it goes to the dead-letter topic).
    ReconsumeLater,
    /// Not handled, and not a failure: the member is stopping (it has taken all it wanted).
    /// Neither it nor anything after it in its queue is committed, so the group gets them
    /// again, from the queue itself rather than the retry topic.
    Release,
}

/// Called for every message with its topic (for a redelivered message, the topic it was first
/// sent to) and queue; `reconsume_times` on the message says how often it came back.
pub type Handler = Arc<dyn Fn(&str, u32, &PulledMessage) -> ConsumeResult + Send + Sync>;

/// A running group member. [`GroupConsumer::shutdown`] leaves the group cleanly; dropping it
/// stops it without leaving (the broker expires it after the session timeout, like a crash).
#[derive(Debug)]
pub struct GroupConsumer {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    member: Arc<Member>,
}

struct Member {
    conn: Connection,
    options: GroupOptions,
    handler: Handler,
    generation: AtomicU64,
    /// Bounds concurrently running handlers across all of this member's queues.
    handler_slots: Arc<tokio::sync::Semaphore>,
    /// Abort handles of the queue readers, so dropping the consumer stops them all.
    readers: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    /// Where a pull answer last suggested reading elsewhere (`ReadFrom` as u8), until taken.
    suggested: std::sync::atomic::AtomicU8,
}

impl GroupConsumer {
    /// Joins the group and starts consuming.
    ///
    /// # Errors
    /// The first heartbeat failed (unknown group mode conflict, bad filter, connection).
    pub async fn start(conn: Connection, options: GroupOptions, handler: Handler) -> Result<Self, ClientError> {
        let slots = Arc::new(tokio::sync::Semaphore::new(options.handler_concurrency.max(1)));
        let member = Arc::new(Member {
            conn,
            options,
            handler,
            generation: AtomicU64::new(0),
            handler_slots: slots,
            readers: std::sync::Mutex::new(Vec::new()),
            suggested: std::sync::atomic::AtomicU8::new(0),
        });
        let first = member.heartbeat().await?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(Arc::clone(&member), first, stop_rx));
        Ok(Self { stop, task: Some(task), member: Arc::clone(&member) })
    }

    /// Where a pull answer since the last call suggested this member read (a master far ahead
    /// of it suggests its slave; a slave it has caught up with suggests the master), or
    /// `Here`.
    pub fn take_suggestion(&self) -> wasmq_protocol::ReadFrom {
        match self.member.suggested.swap(0, Ordering::Relaxed) {
            1 => wasmq_protocol::ReadFrom::Slave,
            2 => wasmq_protocol::ReadFrom::Master,
            _ => wasmq_protocol::ReadFrom::Here,
        }
    }

    /// The connection to the broker is gone (the member no longer consumes).
    pub fn connection_lost(&self) -> bool {
        self.member.conn.closed().is_some()
    }

    /// Stops reading, waits for the queue readers, and leaves the group so its queues move at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            // The queue readers too: a dropped member must stop reading and committing, as a
            // crashed one does.
            for r in self.member.readers.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                r.abort();
            }
        }
    }
}

impl Member {
    fn note_suggestion(&self, s: wasmq_protocol::ReadFrom) {
        if s != wasmq_protocol::ReadFrom::Here {
            self.suggested.store(s as u8, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("group", &self.options.group)
            .field("client_id", &self.conn.options().client_id)
            .finish_non_exhaustive()
    }
}

impl Member {
    fn client_id(&self) -> String {
        self.conn.options().client_id.clone()
    }

    async fn heartbeat(&self) -> Result<(u64, Vec<(String, u32)>), ClientError> {
        let req = Request::GroupHeartbeat(GroupHeartbeatRequest {
            group: self.options.group.clone(),
            client_id: self.client_id(),
            mode: self.options.mode,
            subscriptions: self.options.subscriptions.clone(),
        });
        match self.conn.call(&req).await? {
            Response::GroupHeartbeat(a) => {
                self.generation.store(a.generation, Ordering::Release);
                Ok((a.generation, a.queues))
            }
            _ => Err(ClientError::Malformed("GroupHeartbeat answered with another response".into())),
        }
    }
}

async fn run(member: Arc<Member>, first: (u64, Vec<(String, u32)>), mut stop: watch::Receiver<bool>) {
    let mut readers: HashMap<(String, u32), (watch::Sender<bool>, JoinHandle<()>)> = HashMap::new();
    let mut assignment = first.1;
    loop {
        // Stop readers of queues no longer ours, start readers for new ones.
        readers.retain(|k, (s, _)| {
            let keep = assignment.contains(k);
            if !keep {
                let _ = s.send(true);
            }
            keep
        });
        for q in &assignment {
            if !readers.contains_key(q) {
                let (tx, rx) = watch::channel(false);
                let task = tokio::spawn(read_queue(Arc::clone(&member), q.0.clone(), q.1, rx));
                {
                    let mut handles = member.readers.lock().unwrap_or_else(|p| p.into_inner());
                    handles.retain(|h| !h.is_finished());
                    handles.push(task.abort_handle());
                }
                readers.insert(q.clone(), (tx, task));
            }
        }
        // Drop finished readers (fenced ones) so the next round restarts them if still ours.
        readers.retain(|_, (_, t)| !t.is_finished());
        tokio::select! {
            () = tokio::time::sleep(member.options.heartbeat_interval) => {}
            _ = stop.changed() => break,
        }
        match member.heartbeat().await {
            Ok((_, queues)) => assignment = queues,
            Err(e) => tracing::warn!(error = %e, "group heartbeat failed; retrying"),
        }
    }
    for (_, (s, t)) in readers.drain() {
        let _ = s.send(true);
        let _ = t.await;
    }
    let leave = Request::GroupLeave(GroupLeaveRequest { group: member.options.group.clone(), client_id: member.client_id() });
    let _ = member.conn.call(&leave).await;
}

/// Takes (or renews) the queue lock; `Some(valid for)` when granted.
async fn lock_queue(member: &Member, topic: &str, queue_id: u32, unlock: bool) -> Option<Duration> {
    let req = Request::LockQueue(LockQueueRequest {
        group: member.options.group.clone(),
        client_id: member.client_id(),
        topic: topic.to_owned(),
        queue_id,
        unlock,
    });
    match member.conn.call(&req).await {
        Ok(Response::LockQueue { granted: true, expires_in_ms }) => Some(Duration::from_millis(expires_in_ms)),
        _ => None,
    }
}

async fn read_queue(member: Arc<Member>, topic: String, queue_id: u32, stop: watch::Receiver<bool>) {
    if !member.options.orderly {
        return read_queue_concurrently(member, topic, queue_id, stop).await;
    }
    // Orderly: hold the queue's lock before reading it, renew it well before it expires, and
    // stop at once if it cannot be renewed (another member may own the queue now).
    let mut stop = stop;
    let valid = loop {
        if let Some(v) = lock_queue(&member, &topic, queue_id, false).await {
            break v;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    };
    let renew_every = valid / 3;
    let mut renew_at = tokio::time::Instant::now() + renew_every;
    let consumer = PullConsumer::for_group(member.conn.clone(), member.options.group.clone());
    let filter = subscription_filter(&member, &topic);
    let mut offset = match start_offset(&member, &consumer, &topic, queue_id).await {
        Some(o) => o,
        None => return,
    };
    'read: loop {
        if *stop.borrow() {
            break;
        }
        if tokio::time::Instant::now() >= renew_at {
            if lock_queue(&member, &topic, queue_id, false).await.is_none() {
                return;
            }
            renew_at = tokio::time::Instant::now() + renew_every;
        }
        let pulled = tokio::select! {
            p = consumer.pull_filtered(&topic, queue_id, offset, member.options.batch, member.options.pull_wait.min(renew_every), filter.as_deref()) => p,
            _ = stop.changed() => break,
        };
        let Ok(p) = pulled else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        member.note_suggestion(p.suggest);
        for m in &p.messages {
            let mut failures = 0;
            let mut result = (member.handler)(&topic, queue_id, m);
            if result == ConsumeResult::Release {
                break 'read;
            }
            while result == ConsumeResult::ReconsumeLater {
                failures += 1;
                if failures > member.options.max_reconsume_times {
                    let req = Request::SendBack(SendBackRequest {
                        group: member.options.group.clone(),
                        topic: topic.clone(),
                        queue_id,
                        log_offset: m.log_offset,
                        dead_letter: true,
                        max_reconsume_times: member.options.max_reconsume_times,
                    });
                    if member.conn.call(&req).await.is_err() {
                        break 'read;
                    }
                    break;
                }
                tokio::time::sleep(member.options.orderly_retry_delay).await;
                if lock_queue(&member, &topic, queue_id, false).await.is_none() {
                    return;
                }
                renew_at = tokio::time::Instant::now() + renew_every;
                result = (member.handler)(&topic, queue_id, m);
                if result == ConsumeResult::Release {
                    break 'read;
                }
            }
            offset = m.queue_offset + 1;
            if !commit(&member, &topic, queue_id, offset).await {
                return;
            }
        }
        // Messages the broker skipped after the last one delivered (a tag or plugin filter)
        // are passed too, and committed, so the group's lag reaches zero.
        if p.next_offset > offset {
            offset = p.next_offset;
            if !commit(&member, &topic, queue_id, offset).await {
                return;
            }
        }
    }
    let _ = lock_queue(&member, &topic, queue_id, true).await;
}

/// Where a reader starts: the group's committed offset, else the configured start.
async fn start_offset(member: &Member, consumer: &PullConsumer, topic: &str, queue_id: u32) -> Option<u64> {
    let query = Request::OffsetQuery(OffsetQueryRequest { group: member.options.group.clone(), topic: topic.to_owned(), queue_id });
    if !matches!(member.options.mode, GroupMode::Broadcasting)
        && let Ok(Response::OffsetQuery(q)) = member.conn.call(&query).await
        && q.offset.is_some()
    {
        return q.offset;
    }
    let bounds = consumer.pull(topic, queue_id, 0, 1, Duration::ZERO).await.ok()?;
    match member.options.start_from {
        StartFrom::Earliest => Some(bounds.min_offset),
        StartFrom::Latest => Some(bounds.max_offset),
        StartFrom::Timestamp(ts) => {
            // Store times never decrease along a queue: binary search with one-message pulls.
            let (mut lo, mut hi) = (bounds.min_offset, bounds.max_offset);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let p = consumer.pull(topic, queue_id, mid, 1, Duration::ZERO).await.ok()?;
                match p.messages.first() {
                    Some(m) if m.store_ms < ts => lo = m.queue_offset + 1,
                    Some(_) => hi = mid,
                    None => break,
                }
            }
            Some(lo)
        }
    }
}

/// The tag filter of the member's subscription to `topic` (`None` for all).
fn subscription_filter(member: &Member, topic: &str) -> Option<String> {
    member.options.subscriptions.iter().find(|(t, _)| t == topic).map(|(_, f)| f.clone()).filter(|f| f.trim() != "*")
}

async fn read_queue_concurrently(member: Arc<Member>, topic: String, queue_id: u32, mut stop: watch::Receiver<bool>) {
    let consumer = PullConsumer::for_group(member.conn.clone(), member.options.group.clone());
    let filter = subscription_filter(&member, &topic);
    // Broadcasting members keep their own place in memory (as RocketMQ keeps it on the client):
    // the group's broker-side offsets belong to clustering.
    let broadcasting = member.options.mode == GroupMode::Broadcasting;
    let Some(mut offset) = start_offset(&member, &consumer, &topic, queue_id).await else { return };
    loop {
        if *stop.borrow() {
            return;
        }
        let pulled = tokio::select! {
            p = consumer.pull_filtered(&topic, queue_id, offset, member.options.batch, member.options.pull_wait, filter.as_deref()) => p,
            _ = stop.changed() => return,
        };
        let p = match pulled {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(topic, queue_id, error = %e, "pull failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        member.note_suggestion(p.suggest);
        let mut next = p.next_offset;
        let results = handle_batch(&member, &topic, queue_id, &p.messages).await;
        for (m, result) in p.messages.iter().zip(results) {
            if result == ConsumeResult::Release {
                next = m.queue_offset;
                break;
            }
            if result == ConsumeResult::ReconsumeLater && !send_back(&member, &topic, queue_id, m).await {
                // Could not hand it back: do not commit past it; it will be read again.
                next = m.queue_offset;
                break;
            }
        }
        if next == offset {
            continue;
        }
        offset = next;
        if broadcasting {
            continue;
        }
        if !commit(&member, &topic, queue_id, offset).await {
            tracing::debug!(topic, queue_id, "queue no longer ours; releasing it");
            return;
        }
    }
}

/// Runs the handler over a batch, up to `handler_concurrency` messages at once (on blocking
/// threads: handlers may block). The batch is committed only after every message in it was
/// handled or sent back, so a commit never passes a message not yet handled.
async fn handle_batch(member: &Arc<Member>, topic: &str, queue_id: u32, messages: &[PulledMessage]) -> Vec<ConsumeResult> {
    let shown = |m: &PulledMessage| -> String {
        m.message.properties.iter().find(|(k, _)| k == ORIGIN_TOPIC_PROPERTY).map_or(topic.to_owned(), |(_, v)| v.clone())
    };
    if messages.len() <= 1 || member.options.handler_concurrency <= 1 {
        return messages.iter().map(|m| (member.handler)(&shown(m), queue_id, m)).collect();
    }
    let mut tasks = Vec::with_capacity(messages.len());
    for m in messages {
        let permit = Arc::clone(&member.handler_slots).acquire_owned().await.expect("never closed");
        let (member, m, t) = (Arc::clone(member), m.clone(), shown(m));
        tasks.push(tokio::task::spawn_blocking(move || {
            let r = (member.handler)(&t, queue_id, &m);
            drop(permit);
            r
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        // A handler that panicked is treated as a failure: the message comes back later.
        results.push(t.await.unwrap_or(ConsumeResult::ReconsumeLater));
    }
    results
}

async fn send_back(member: &Member, topic: &str, queue_id: u32, m: &PulledMessage) -> bool {
    let req = Request::SendBack(SendBackRequest {
        group: member.options.group.clone(),
        topic: topic.to_owned(),
        queue_id,
        log_offset: m.log_offset,
        dead_letter: false,
        max_reconsume_times: member.options.max_reconsume_times,
    });
    for _ in 0..SEND_BACK_TRIES {
        match member.conn.call(&req).await {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(topic, queue_id, error = %e, "send back failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    false
}

/// Commits; on `Fenced` (the group moved to a new generation) heartbeats once and, if the queue
/// is still this member's, commits again with the new generation. Returns whether the queue is
/// still ours.
async fn commit(member: &Member, topic: &str, queue_id: u32, offset: u64) -> bool {
    for _ in 0..2 {
        let req = Request::GroupCommit(GroupCommitRequest {
            group: member.options.group.clone(),
            client_id: member.client_id(),
            generation: member.generation.load(Ordering::Acquire),
            topic: topic.to_owned(),
            queue_id,
            offset,
        });
        match member.conn.call(&req).await {
            Ok(_) => return true,
            Err(e) if e.code() == Some(ErrorCode::Fenced) => match member.heartbeat().await {
                Ok((_, queues)) if queues.iter().any(|(t, q)| t == topic && *q == queue_id) => continue,
                _ => return false,
            },
            Err(e) => {
                tracing::warn!(topic, queue_id, error = %e, "commit failed");
                return true;
            }
        }
    }
    false
}
