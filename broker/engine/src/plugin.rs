//! The plugin decisions the broker's domain asks for, as traits the plugin host implements:
//! a topic's [`Router`] and [`KeySelector`] choose queues on the send path, a group's
//! [`DeliveryFilter`] judges messages on the delivery path. The engine applies each
//! attachment's [`FailurePolicy`] to what the plugin could not decide; how a plugin runs
//! (sandbox, batches, deadlines) is the host's.

use std::sync::Arc;

use wasmq_store::{NewMessage, Properties, QueueRead, StoredMessage};

use crate::Engine;

/// What a failed plugin call means for its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Carry on as if no plugin were attached: default routing, the message's own key,
    /// deliver.
    #[default]
    Open,
    /// Refuse the send (routers, key selectors), or dead-letter the message (filters).
    Closed,
}

impl FailurePolicy {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "fail-open",
            Self::Closed => "fail-closed",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fail-open" | "open" => Some(Self::Open),
            "fail-closed" | "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// What a plugin sees of a message.
#[derive(Debug, Clone, Copy)]
pub struct PluginMessage<'a> {
    pub born_ms: u64,
    pub properties: &'a Properties,
    pub body: &'a [u8],
}

impl<'a> PluginMessage<'a> {
    #[must_use]
    pub fn of_new(m: &'a NewMessage) -> Self {
        Self { born_ms: m.born_ms, properties: &m.properties, body: &m.body }
    }

    #[must_use]
    pub fn of_stored(m: &'a StoredMessage) -> Self {
        Self { born_ms: m.born_ms, properties: &m.properties, body: &m.body }
    }

    /// The key a plugin sees: the ordering key, else the first key.
    #[must_use]
    pub fn key(&self) -> Option<&'a str> {
        self.properties.ordering_key.as_deref().or_else(|| self.properties.keys.first().map(String::as_str))
    }
}

/// What a plugin said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<D> {
    Decided(D),
    /// The call failed with this message alone in it (a trap, a timeout, a bad answer): the
    /// message itself makes the plugin fail. The text says how.
    Failed(String),
    /// No call judged this message on its own (the plugin is not running, its breaker is open,
    /// or its batch failed and it was not tried alone): nothing is known about it.
    Undecided(String),
}

/// A router's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Queue(u32),
    DefaultRouting,
    Reject(String),
}

/// An ordering-key selector's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderingKey {
    /// A hash: the queue is `hash % queues`.
    Hashed(u64),
    /// The message's own key (ordering key, else first key), hashed as the client does.
    MessageKey,
    /// No key: the default queue.
    None,
}

/// A filter's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Deliver,
    Skip,
    DeadLetter,
}

/// What every attachment tells the engine besides its decisions.
pub trait Attachment: Send + Sync + std::fmt::Debug {
    /// `name#version`, for messages to people.
    fn label(&self) -> String;
    fn policy(&self) -> FailurePolicy;
    /// Counts a message whose fate the failure policy decided.
    fn policy_applied(&self);
}

/// A topic's routing plugin.
pub trait Router: Attachment {
    /// One verdict per message, in order.
    fn route(&self, queues: u32, messages: &[PluginMessage<'_>]) -> Vec<Verdict<Route>>;
}

/// A topic's ordering-key plugin.
pub trait KeySelector: Attachment {
    /// One verdict per message, in order.
    fn ordering_key(&self, messages: &[PluginMessage<'_>]) -> Vec<Verdict<OrderingKey>>;
}

/// A group's filter on its subscription to a topic.
pub trait DeliveryFilter: Attachment {
    /// One verdict per message, in order.
    fn filter(&self, messages: &[PluginMessage<'_>]) -> Vec<Verdict<Delivery>>;
}

/// A topic's send-path plugins: its router and its key selector (either may be missing).
#[derive(Debug, Clone, Default)]
pub struct SendPath {
    pub router: Option<Arc<dyn Router>>,
    pub key: Option<Arc<dyn KeySelector>>,
}

/// The plugins attached now. Each send or pull takes its attachments once and uses them for
/// the whole batch, so a swap takes effect at the next batch.
pub trait Plugins: Send + Sync + std::fmt::Debug {
    /// The topic's router and key selector; `None` when neither is attached (the common case:
    /// it must be cheap).
    fn send_path(&self, topic: &str) -> Option<SendPath>;
    /// The group's filter on `topic`, if any.
    fn delivery_filter(&self, topic: &str, group: &str) -> Option<Arc<dyn DeliveryFilter>>;
}

/// No plugins at all (a broker built without the plugin host, and tests).
#[derive(Debug, Default)]
pub struct NoPlugins;

impl Plugins for NoPlugins {
    fn send_path(&self, _: &str) -> Option<SendPath> {
        None
    }

    fn delivery_filter(&self, _: &str, _: &str) -> Option<Arc<dyn DeliveryFilter>> {
        None
    }
}

/// Why the send path's plugins refused a batch (nothing of it is stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The router rejected a message.
    #[error("plugin {plugin} rejected message {index}: {reason}")]
    Rejected { plugin: String, index: usize, reason: String },
    /// A fail-closed plugin failed.
    #[error(
        "plugin {plugin} (fail-closed) failed on message {index}: {reason}; nothing was stored, try again later (`wasmq plugin stats` shows its failures)"
    )]
    Failed { plugin: String, index: usize, reason: String },
}

/// The broker's key hash (FNV-1a, 64 bit), the same as the client's and the SDK's: a key maps
/// to queue `key_hash(key) % queues`.
#[must_use]
pub fn key_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Under fail-closed, a failed decision fails the send; under fail-open it is counted and the
/// caller falls back.
fn fail_closed(a: &dyn Attachment, index: usize, reason: String) -> Result<(), PlacementError> {
    a.policy_applied();
    match a.policy() {
        FailurePolicy::Open => Ok(()),
        FailurePolicy::Closed => Err(PlacementError::Failed { plugin: a.label(), index, reason }),
    }
}

/// Sets each message's queue as the topic's `router` and `key` selector decide (the router
/// first; the key selector for what it left to default routing); the rest go to
/// `default_queue`.
///
/// # Errors
/// [`PlacementError`]: a rejection, or a fail-closed plugin that failed. Queues are then
/// unchanged where not yet decided; nothing may be stored.
pub fn place(
    router: Option<&dyn Router>,
    key: Option<&dyn KeySelector>,
    messages: &mut [NewMessage],
    queues: u32,
    default_queue: u32,
) -> Result<(), PlacementError> {
    let n = messages.len();
    let mut decided: Vec<Option<u32>> = vec![None; n];
    if let Some(r) = router {
        let views: Vec<PluginMessage<'_>> = messages.iter().map(PluginMessage::of_new).collect();
        for (index, v) in r.route(queues, &views).into_iter().enumerate().take(n) {
            match v {
                Verdict::Decided(Route::Queue(q)) => decided[index] = Some(q),
                Verdict::Decided(Route::DefaultRouting) => {}
                Verdict::Decided(Route::Reject(reason)) => return Err(PlacementError::Rejected { plugin: r.label(), index, reason }),
                Verdict::Failed(e) | Verdict::Undecided(e) => fail_closed(r, index, e)?,
            }
        }
    }
    if let Some(k) = key {
        let open: Vec<usize> = (0..n).filter(|&i| decided[i].is_none()).collect();
        if !open.is_empty() {
            let views: Vec<PluginMessage<'_>> = open.iter().map(|&i| PluginMessage::of_new(&messages[i])).collect();
            let verdicts = k.ordering_key(&views);
            for (pos, &i) in open.iter().enumerate() {
                let choice = match verdicts.get(pos).cloned().unwrap_or_else(|| Verdict::Undecided("no decision".into())) {
                    Verdict::Decided(c) => c,
                    Verdict::Failed(e) | Verdict::Undecided(e) => {
                        fail_closed(k, i, e)?;
                        OrderingKey::MessageKey
                    }
                };
                decided[i] = match choice {
                    OrderingKey::Hashed(h) => Some((h % u64::from(queues)) as u32),
                    OrderingKey::MessageKey => {
                        PluginMessage::of_new(&messages[i]).key().map(|k| (key_hash(k.as_bytes()) % u64::from(queues)) as u32)
                    }
                    OrderingKey::None => None,
                };
            }
        }
    }
    for (m, q) in messages.iter_mut().zip(decided) {
        m.queue_id = q.unwrap_or(default_queue);
    }
    Ok(())
}

impl Engine {
    /// Keeps the messages of a group's pull that `filter` delivers; skipped ones are dropped
    /// (the group's offset still moves past them), dead-lettered ones go to the group's
    /// dead-letter topic. When the filter cannot decide, fail-open delivers; fail-closed
    /// dead-letters a message that makes the plugin fail on its own, and holds back a message
    /// nothing is known about (the pull ends before it, so a later pull judges it again).
    #[must_use]
    pub fn filter_delivery(&self, group: &str, topic: &str, filter: &dyn DeliveryFilter, read: QueueRead) -> QueueRead {
        if read.messages.is_empty() {
            return read;
        }
        let verdicts = {
            let views: Vec<PluginMessage<'_>> = read.messages.iter().map(PluginMessage::of_stored).collect();
            filter.filter(&views)
        };
        let QueueRead { messages, mut next_offset, min_offset, max_offset } = read;
        let mut verdicts = verdicts.into_iter();
        let mut kept = Vec::with_capacity(messages.len());
        for m in messages {
            let v = verdicts.next().unwrap_or_else(|| Verdict::Undecided("no decision".into()));
            let d = match (v, filter.policy()) {
                (Verdict::Decided(d), _) => d,
                (Verdict::Failed(_) | Verdict::Undecided(_), FailurePolicy::Open) => {
                    filter.policy_applied();
                    Delivery::Deliver
                }
                (Verdict::Failed(_), FailurePolicy::Closed) => {
                    filter.policy_applied();
                    Delivery::DeadLetter
                }
                (Verdict::Undecided(_), FailurePolicy::Closed) => {
                    next_offset = m.queue_offset;
                    break;
                }
            };
            match d {
                Delivery::Deliver => kept.push(m),
                Delivery::Skip => {}
                Delivery::DeadLetter => {
                    if let Err(e) = self.send_back(group, topic, m.queue_id, m.log_offset, true, None) {
                        // Never a silent drop, nor an unfiltered delivery: hold it back.
                        tracing::error!(group, topic, log_offset = m.log_offset, "cannot dead-letter a filtered message ({e}); holding it");
                        next_offset = m.queue_offset;
                        break;
                    }
                }
            }
        }
        QueueRead { messages: kept, next_offset, min_offset, max_offset }
    }
}
