//! The timers of held messages: the check-back loop that asks a live producer of a group about
//! transactions left undecided, and the scheduler that releases scheduled messages when due.
//! The state and its persistence are the engine's (`wasmq_engine`'s `parked.rs`); this is the
//! timing. Producers are reached through [`ProducerLinks`], which front ends implement.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmq_engine::Engine;
use wasmq_store::StoredMessage;

/// The longest the scheduler sleeps without looking (a clock step or a missed notification
/// costs at most this).
const SCHEDULER_IDLE: Duration = Duration::from_secs(1);
/// How often scheduled messages are looked at for rewriting ahead of retention.
const REWRITE_INTERVAL: Duration = Duration::from_secs(60);
/// Longest a check-back waits for room in a producer connection's outbound queue.
pub const CHECK_SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// A transaction the broker asks its producer group about.
#[derive(Debug, Clone)]
pub struct CheckBack {
    pub producer_group: String,
    /// The half message's log offset (the transaction's id).
    pub log_offset: u64,
    /// Checks sent before this one.
    pub checks: u32,
    /// The half message, with its real topic and queue.
    pub message: StoredMessage,
}

/// What became of one check-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A live producer connection took it.
    Sent,
    /// Connection `id` did not take it within [`CHECK_SEND_TIMEOUT`] (it is not reading): skip
    /// it for the rest of the pass.
    Stalled(u64),
    /// No live producer connection of the group (outside `skip`).
    NoProducer,
}

/// The producers a front end holds connections of, to ask about undecided transactions. Each
/// front end whose producers can answer check-backs implements it; the server joins them.
pub trait ProducerLinks: Send + Sync + std::fmt::Debug {
    /// Hands `check` to a live connection of its group not in `skip`, taking turns, waiting at
    /// most [`CHECK_SEND_TIMEOUT`] for it to take it.
    fn ask<'a>(&'a self, check: &'a CheckBack, skip: &'a [u64]) -> Pin<Box<dyn Future<Output = Asked> + Send + 'a>>;
    /// Connected producers per group (admin API).
    fn counts(&self) -> HashMap<String, usize>;
}

/// Asks producers about transactions due for a check until `stop`.
pub async fn check_back(engine: Arc<Engine>, producers: Arc<dyn ProducerLinks>, tick: Duration, stop: CancellationToken) {
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
            let message = match engine.half_message(check.log_offset) {
                Ok(m) => m,
                // Decided meanwhile.
                Err(_) => continue,
            };
            let check = CheckBack { producer_group: check.producer_group, log_offset: check.log_offset, checks: check.checks, message };
            let sent = match producers.ask(&check, &stalled).await {
                Asked::Sent => true,
                Asked::Stalled(conn) => {
                    stalled.push(conn);
                    false
                }
                Asked::NoProducer => false,
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

/// The producer links of every front end, asked in turn (the server builds it from its table of
/// front ends; empty: no producer can be asked).
#[derive(Debug, Default)]
pub struct AllProducers(pub Vec<Arc<dyn ProducerLinks>>);

impl ProducerLinks for AllProducers {
    fn ask<'a>(&'a self, check: &'a CheckBack, skip: &'a [u64]) -> Pin<Box<dyn Future<Output = Asked> + Send + 'a>> {
        Box::pin(async move {
            for links in &self.0 {
                match links.ask(check, skip).await {
                    Asked::NoProducer => {}
                    asked => return asked,
                }
            }
            Asked::NoProducer
        })
    }

    fn counts(&self) -> HashMap<String, usize> {
        let mut all = HashMap::new();
        for links in &self.0 {
            for (g, n) in links.counts() {
                *all.entry(g).or_default() += n;
            }
        }
        all
    }
}
