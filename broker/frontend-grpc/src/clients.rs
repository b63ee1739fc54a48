//! The RocketMQ 5 clients the broker knows, keyed by their `x-mq-client-id`: what each said in
//! its `Settings`, its Telemetry stream (the way back to it), and when it was last heard from.
//! Transaction check-backs go to a producer whose Settings publish the half message's topic
//! ([`ProducerLinks`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Status;
use wasmq_service::{Asked, CHECK_SEND_TIMEOUT, CheckBack, ProducerLinks};

use crate::pb;

/// The most clients the front end keeps (the engine's client registry has the same bound): a
/// new client id past it is refused until others say goodbye or fall silent.
pub const CLIENTS_MAX: usize = 100_000;
/// A client silent this long is forgotten when room is needed for a new one (clients send a
/// heartbeat every 10 to 30 s).
const CLIENT_SILENT: std::time::Duration = std::time::Duration::from_secs(120);

/// Telemetry stream ids start here, apart from the native front end's connection ids (both
/// go into one skip list of a check-back pass).
const STREAM_IDS_FROM: u64 = 1 << 48;

/// What the broker sends down a client's Telemetry stream.
pub(crate) type Outbound = mpsc::Sender<Result<pb::TelemetryCommand, Status>>;

/// One client.
#[derive(Debug)]
pub(crate) struct Client {
    pub language: String,
    pub version: String,
    pub settings: Option<pb::Settings>,
    /// Its open Telemetry stream: id and sender.
    pub telemetry: Option<(u64, Outbound)>,
    pub last_seen: Instant,
}

/// A client as the admin API shows it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    /// As the client says it (`x-mq-language`, `x-mq-client-version`).
    pub language: String,
    pub version: String,
    /// From its Settings (`PRODUCER`, `SIMPLE_CONSUMER`, …; empty before them).
    pub client_type: String,
    /// Whether its Telemetry stream is open.
    pub telemetry: bool,
    pub idle: std::time::Duration,
}

/// The clients of this front end.
#[derive(Debug)]
pub struct Clients {
    next_stream: AtomicU64,
    round_robin: AtomicUsize,
    by_id: Mutex<HashMap<String, Client>>,
}

impl Default for Clients {
    fn default() -> Self {
        Self { next_stream: AtomicU64::new(STREAM_IDS_FROM), round_robin: AtomicUsize::new(0), by_id: Mutex::new(HashMap::new()) }
    }
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `client_id` was heard from (creating it). Past [`CLIENTS_MAX`], silent clients
    /// are forgotten to make room; if none is, a new client is refused.
    ///
    /// # Errors
    /// Too many clients.
    pub(crate) fn seen(&self, client_id: &str, language: &str, version: &str) -> Result<(), String> {
        self.seen_within(client_id, language, version, CLIENTS_MAX)
    }

    fn seen_within(&self, client_id: &str, language: &str, version: &str, max: usize) -> Result<(), String> {
        let mut clients = self.lock();
        if let Some(c) = clients.get_mut(client_id) {
            c.last_seen = Instant::now();
            return Ok(());
        }
        if clients.len() >= max {
            clients.retain(|_, c| c.telemetry.as_ref().is_some_and(|(_, tx)| !tx.is_closed()) || c.last_seen.elapsed() < CLIENT_SILENT);
            if clients.len() >= max {
                return Err(format!("the broker already serves {max} RocketMQ clients; try again later"));
            }
        }
        clients.insert(
            client_id.to_owned(),
            Client {
                language: language.to_owned(),
                version: version.to_owned(),
                settings: None,
                telemetry: None,
                last_seen: Instant::now(),
            },
        );
        Ok(())
    }

    /// Records a client's Settings and the stream they came on; returns the stream's id.
    pub(crate) fn settings(&self, client_id: &str, settings: pb::Settings, stream: Option<(u64, Outbound)>) {
        let mut clients = self.lock();
        if let Some(c) = clients.get_mut(client_id) {
            c.settings = Some(settings);
            if stream.is_some() {
                c.telemetry = stream;
            }
            c.last_seen = Instant::now();
        }
    }

    /// A new Telemetry stream id.
    pub(crate) fn stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets a closed Telemetry stream (the client stays known until it says goodbye).
    pub(crate) fn stream_closed(&self, client_id: &str, stream: u64) {
        if let Some(c) = self.lock().get_mut(client_id)
            && c.telemetry.as_ref().is_some_and(|(id, _)| *id == stream)
        {
            c.telemetry = None;
        }
    }

    /// Forgets a client (NotifyClientTermination).
    pub(crate) fn remove(&self, client_id: &str) {
        self.lock().remove(client_id);
    }

    /// The settings a client sent, if any.
    pub(crate) fn settings_of(&self, client_id: &str) -> Option<pb::Settings> {
        self.lock().get(client_id).and_then(|c| c.settings.clone())
    }

    /// Every known client, by id.
    #[must_use]
    pub fn list(&self) -> Vec<ClientInfo> {
        let mut list: Vec<ClientInfo> = self
            .lock()
            .iter()
            .map(|(id, c)| ClientInfo {
                client_id: id.clone(),
                language: c.language.clone(),
                version: c.version.clone(),
                client_type: c
                    .settings
                    .as_ref()
                    .and_then(|s| s.client_type)
                    .and_then(|t| pb::ClientType::try_from(t).ok())
                    .map_or("", |t| t.as_str_name())
                    .to_owned(),
                telemetry: c.telemetry.is_some(),
                idle: c.last_seen.elapsed(),
            })
            .collect();
        list.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        list
    }

    /// A live Telemetry stream of a producer publishing `topic`, not in `skip`, taking turns.
    fn publisher(&self, topic: &str, skip: &[u64]) -> Option<(u64, Outbound)> {
        let clients = self.lock();
        let live: Vec<&(u64, Outbound)> = clients
            .values()
            .filter(|c| publishes(c.settings.as_ref(), topic))
            .filter_map(|c| c.telemetry.as_ref())
            .filter(|(id, tx)| !tx.is_closed() && !skip.contains(id))
            .collect();
        (!live.is_empty()).then(|| live[self.round_robin.fetch_add(1, Ordering::Relaxed) % live.len()].clone())
    }

    /// Producers with a live Telemetry stream, per topic they publish.
    #[must_use]
    pub fn publishers(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for c in self.lock().values().filter(|c| c.telemetry.is_some()) {
            if let Some(pb::settings::PubSub::Publishing(p)) = c.settings.as_ref().and_then(|s| s.pub_sub.as_ref()) {
                for t in &p.topics {
                    *counts.entry(t.name.clone()).or_default() += 1;
                }
            }
        }
        counts
    }
}

fn publishes(settings: Option<&pb::Settings>, topic: &str) -> bool {
    matches!(settings.and_then(|s| s.pub_sub.as_ref()), Some(pb::settings::PubSub::Publishing(p)) if p.topics.iter().any(|t| t.name == topic))
}

/// The producer group under which this front end holds its producers' half messages: RocketMQ 5
/// clients name no producer group, and any producer publishing the topic may answer a check.
#[must_use]
pub fn producer_group(topic: &str) -> String {
    format!("{PRODUCER_GROUP_PREFIX}{topic}")
}

/// See [`producer_group`].
pub const PRODUCER_GROUP_PREFIX: &str = "%RMQ5%";

impl ProducerLinks for Clients {
    fn ask<'a>(&'a self, check: &'a CheckBack, skip: &'a [u64]) -> Pin<Box<dyn Future<Output = Asked> + Send + 'a>> {
        Box::pin(async move {
            if !check.producer_group.starts_with(PRODUCER_GROUP_PREFIX) {
                return Asked::NoProducer;
            }
            let Some((id, tx)) = self.publisher(&check.message.topic, skip) else { return Asked::NoProducer };
            let transaction_id = crate::messaging::transaction_id(check.log_offset);
            let command = pb::TelemetryCommand {
                status: None,
                command: Some(pb::telemetry_command::Command::RecoverOrphanedTransactionCommand(pb::RecoverOrphanedTransactionCommand {
                    message: Some(crate::wire::outgoing(&check.message, "", None, None)),
                    transaction_id,
                })),
            };
            // A client that is not reading its stream is skipped for the rest of the pass.
            match tokio::time::timeout(CHECK_SEND_TIMEOUT, tx.send(Ok(command))).await {
                Ok(Ok(())) => Asked::Sent,
                _ => Asked::Stalled(id),
            }
        })
    }

    fn counts(&self) -> HashMap<String, usize> {
        self.publishers().into_iter().map(|(t, n)| (producer_group(&t), n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_past_the_limit_are_refused_unless_silent_ones_make_room() {
        let clients = Clients::default();
        clients.seen_within("a", "PYTHON", "5.1.2", 2).unwrap();
        clients.seen_within("b", "JAVA", "5.0.7", 2).unwrap();
        clients.seen_within("a", "PYTHON", "5.1.2", 2).unwrap();
        let refused = clients.seen_within("c", "GO", "5.1.0", 2).unwrap_err();
        assert!(refused.contains("already serves 2"), "{refused}");
        clients.remove("b");
        clients.seen_within("c", "GO", "5.1.0", 2).unwrap();
        assert_eq!(clients.list().iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }
}
