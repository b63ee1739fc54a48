//! The timers of held messages: the check-back loop that asks a live producer of a group about
//! transactions left undecided, and the scheduler that releases scheduled messages when due.
//! The state and its persistence are the engine's (`wasmq_engine`'s `parked.rs`); this is the
//! I/O: connections of producer groups, frames, sleeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use wasmq_engine::Engine;
use wasmq_protocol::{CheckTransactionRequest, Kind, Op, OutFrame, Request};

/// The longest the scheduler sleeps without looking (a clock step or a missed notification
/// costs at most this).
const SCHEDULER_IDLE: Duration = Duration::from_secs(1);
/// How often scheduled messages are looked at for rewriting ahead of retention.
const REWRITE_INTERVAL: Duration = Duration::from_secs(60);
/// Longest a check-back waits for room in a producer connection's outbound queue.
const CHECK_SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// A producer group's connection: its id and its outbound frames.
type Member = (u64, mpsc::Sender<OutFrame>);

/// Connections of producer groups, to send check-backs to: any live member may answer.
#[derive(Debug, Default)]
pub struct Producers {
    next_conn: AtomicU64,
    round_robin: AtomicUsize,
    groups: Mutex<HashMap<String, Vec<Member>>>,
}

impl Producers {
    /// A new connection id.
    pub fn connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Records that connection `conn` belongs to producer `group`; true if it is new there.
    pub fn register(&self, conn: u64, group: &str, tx: &mpsc::Sender<OutFrame>) -> bool {
        if group.is_empty() {
            return false;
        }
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let members = groups.entry(group.to_owned()).or_default();
        if members.iter().any(|(c, _)| *c == conn) {
            return false;
        }
        members.push((conn, tx.clone()));
        true
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, conn: u64) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for members in groups.values_mut() {
            members.retain(|(c, _)| *c != conn);
        }
        groups.retain(|_, m| !m.is_empty());
    }

    /// A live connection of `group` not in `skip`, taking turns.
    fn pick(&self, group: &str, skip: &[u64]) -> Option<Member> {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<&Member> = groups.get(group)?.iter().filter(|(c, tx)| !tx.is_closed() && !skip.contains(c)).collect();
        (!live.is_empty()).then(|| live[self.round_robin.fetch_add(1, Ordering::Relaxed) % live.len()].clone())
    }

    /// Connected producers per group (admin API).
    pub fn counts(&self) -> HashMap<String, usize> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(g, m)| (g.clone(), m.len())).collect()
    }
}

/// Asks producers about transactions due for a check until `stop`.
pub async fn check_back(engine: Arc<Engine>, producers: Arc<Producers>, tick: Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let e = Arc::clone(&engine);
        let Ok(due) = tokio::task::spawn_blocking(move || e.transaction_checks_due()).await else { continue };
        // Connections that did not take a check within the timeout this pass (not reading).
        let mut stalled: Vec<u64> = Vec::new();
        for check in due {
            let sent = match producers.pick(&check.producer_group, &stalled) {
                None => false,
                Some((conn, tx)) => match engine.half_message(check.log_offset) {
                    // Decided meanwhile.
                    Err(_) => continue,
                    Ok(m) => {
                        let req = Request::CheckTransaction(CheckTransactionRequest {
                            producer_group: check.producer_group.clone(),
                            log_offset: check.log_offset,
                            checks: check.checks,
                            topic: m.topic.clone(),
                            queue_id: m.queue_id,
                            message: crate::wire::from_store(m).message,
                        });
                        let frame =
                            OutFrame { kind: Kind::Request, request_id: 0, code: Op::CheckTransaction as u16, parts: req.encode_parts() };
                        // A producer that is not reading is skipped for the rest of the pass.
                        let sent = matches!(tokio::time::timeout(CHECK_SEND_TIMEOUT, tx.send(frame)).await, Ok(Ok(())));
                        if !sent {
                            stalled.push(conn);
                        }
                        sent
                    }
                },
            };
            engine.transaction_checked(check.log_offset, sent);
        }
    }
}

/// Releases scheduled messages when due until `stop`; rewrites those stored longer ago than
/// half the retention, so retention by age never deletes one before it is due.
pub async fn scheduler(engine: Arc<Engine>, notify: Arc<Notify>, stop: CancellationToken) {
    let max_age_ms = u64::try_from(engine.store().config().retention.as_millis() / 2).unwrap_or(u64::MAX);
    let mut last_rewrite = tokio::time::Instant::now();
    loop {
        if last_rewrite.elapsed() >= REWRITE_INTERVAL {
            last_rewrite = tokio::time::Instant::now();
            let e = Arc::clone(&engine);
            if let Ok(Err(err)) = tokio::task::spawn_blocking(move || e.rewrite_aging(max_age_ms)).await {
                tracing::error!(error = %err, "rewriting aging scheduled messages");
            }
        }
        let e = Arc::clone(&engine);
        let next = tokio::task::spawn_blocking(move || e.release_due().1).await.ok().flatten();
        let wait = next.map_or(SCHEDULER_IDLE, |due| Duration::from_millis(due.saturating_sub(crate::now_ms()).max(1)).min(SCHEDULER_IDLE));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = notify.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}
