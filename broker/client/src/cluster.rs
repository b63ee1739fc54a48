//! Clients of a cluster: routes from name servers, a producer that spreads over every broker
//! set serving a topic and fails over between them, and a consumer-group member per broker set
//! that reads from the master, or from a slave while the master is unreachable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmq_protocol::{BrokerEntry, BrokerRoute, ReadFrom, Request, Response, RouteRequest};

use crate::{ClientError, Connection, ConnectionOptions, GroupConsumer, GroupOptions, Handler, OutgoingMessage, Producer, SendReceipt};

/// How long a route is used before it is asked again (RocketMQ: 30 s).
pub const ROUTE_REFRESH: Duration = Duration::from_secs(30);
/// How long a broker set that failed a send is avoided.
pub const AVOID_FAILED_BROKER: Duration = Duration::from_secs(30);
/// Sends tried after the first, on other broker sets (RocketMQ's default 2).
const SEND_RETRIES: u32 = 2;
/// How often a cluster consumer checks its members' connections.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(500);

/// A topic's broker sets and when the name servers said so.
type CachedRoute = (Arc<Vec<BrokerRoute>>, Instant);

/// Name servers, the routes they give, and connections to brokers. Share it in an `Arc`.
#[derive(Debug)]
pub struct Cluster {
    namesrvs: Vec<String>,
    ca: PathBuf,
    request_timeout: Duration,
    routes: Mutex<HashMap<String, CachedRoute>>,
    conns: tokio::sync::Mutex<HashMap<String, Connection>>,
    avoid: Mutex<HashMap<String, Instant>>,
    route_refresh: Duration,
}

impl Cluster {
    /// A cluster reached through `namesrvs` (protocol addresses), trusting `ca`.
    pub fn new(namesrvs: Vec<String>, ca: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            namesrvs,
            ca: ca.into(),
            request_timeout: Duration::from_secs(5),
            routes: Mutex::new(HashMap::new()),
            conns: tokio::sync::Mutex::new(HashMap::new()),
            avoid: Mutex::new(HashMap::new()),
            route_refresh: ROUTE_REFRESH,
        })
    }

    /// As [`Cluster::new`], refreshing routes every `every` instead of 30 s.
    pub fn with_route_refresh(namesrvs: Vec<String>, ca: impl Into<PathBuf>, every: Duration) -> Arc<Self> {
        let mut c = Arc::try_unwrap(Self::new(namesrvs, ca)).expect("new");
        c.route_refresh = every;
        Arc::new(c)
    }

    /// A connection to `addr`, reused while it is open.
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn connection(&self, addr: &str) -> Result<Connection, ClientError> {
        if let Some(c) = self.conns.lock().await.get(addr)
            && c.closed().is_none()
        {
            return Ok(c.clone());
        }
        // Connect without holding the map: an unreachable broker must not stall the others.
        let c = self.connect_new(addr).await?;
        let mut conns = self.conns.lock().await;
        match conns.get(addr) {
            // Another task connected meanwhile: use one connection per broker.
            Some(existing) if existing.closed().is_none() => Ok(existing.clone()),
            _ => {
                conns.insert(addr.to_owned(), c.clone());
                Ok(c)
            }
        }
    }

    /// A new connection of its own to `addr` (a group member's: its client id is the member's).
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn connect_new(&self, addr: &str) -> Result<Connection, ClientError> {
        let mut options = ConnectionOptions::new(addr, &self.ca);
        options.request_timeout = self.request_timeout;
        Connection::connect(options).await
    }

    /// Asks the name servers in turn; the first answer wins.
    async fn ask(&self, req: &Request) -> Result<Response, ClientError> {
        let mut last = ClientError::Closed("no name server configured".into());
        for ns in &self.namesrvs {
            match self.connection(ns).await {
                Ok(c) => match c.call(req).await {
                    Ok(r) => return Ok(r),
                    Err(e @ ClientError::Broker { .. }) => return Err(e),
                    Err(e) => last = e,
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The broker sets serving `topic`. A route is asked again after the refresh interval; if
    /// no name server answers, the last known route is used (running clients keep working with
    /// every name server down).
    ///
    /// # Errors
    /// No name server knows the topic, and none was known before.
    pub async fn route(&self, topic: &str) -> Result<Arc<Vec<BrokerRoute>>, ClientError> {
        let cached = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get(topic).cloned();
        if let Some((r, at)) = &cached
            && at.elapsed() < self.route_refresh
        {
            return Ok(Arc::clone(r));
        }
        match self.ask(&Request::GetRoute(RouteRequest { topic: topic.to_owned() })).await {
            Ok(Response::GetRoute(r)) => {
                let r = Arc::new(r.brokers);
                self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(topic.to_owned(), (Arc::clone(&r), Instant::now()));
                Ok(r)
            }
            Ok(_) => Err(ClientError::Malformed("GetRoute answered with another response".into())),
            Err(e) => match cached {
                Some((r, _)) => {
                    tracing::debug!(topic, error = %e, "no name server answered; using the last route");
                    Ok(r)
                }
                None => Err(e),
            },
        }
    }

    /// Forgets `topic`'s route so the next use asks again.
    pub fn forget_route(&self, topic: &str) {
        if let Some((_, at)) = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get_mut(topic) {
            *at = Instant::now().checked_sub(self.route_refresh).unwrap_or(*at);
        }
    }

    /// Every broker the name servers know.
    ///
    /// # Errors
    /// No name server answered.
    pub async fn brokers(&self) -> Result<Vec<BrokerEntry>, ClientError> {
        match self.ask(&Request::GetCluster).await? {
            Response::GetCluster(b) => Ok(b),
            _ => Err(ClientError::Malformed("GetCluster answered with another response".into())),
        }
    }

    fn avoid(&self, broker: &str) {
        self.avoid.lock().unwrap_or_else(|p| p.into_inner()).insert(broker.to_owned(), Instant::now() + AVOID_FAILED_BROKER);
    }

    fn avoided(&self, broker: &str) -> bool {
        self.avoid.lock().unwrap_or_else(|p| p.into_inner()).get(broker).is_some_and(|until| *until > Instant::now())
    }
}

/// A sent message and the broker set that stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterReceipt {
    pub broker_name: String,
    pub receipt: SendReceipt,
}

/// Sends to every broker set serving a topic: queues taken in turn across all of them (a
/// message with an ordering key always to the same one); a send that fails is tried again on
/// another broker set, and the failed one is avoided for a while.
#[derive(Debug, Clone)]
pub struct ClusterProducer {
    cluster: Arc<Cluster>,
    group: String,
    round_robin: Arc<AtomicU32>,
    /// One producer per broker address (message ids stay unique per producer).
    producers: Arc<Mutex<HashMap<String, Producer>>>,
}

impl ClusterProducer {
    pub fn new(cluster: Arc<Cluster>, group: impl Into<String>) -> Self {
        Self {
            cluster,
            group: group.into(),
            round_robin: Arc::new(AtomicU32::new(rand::random::<u32>() % 1024)),
            producers: Arc::default(),
        }
    }

    /// The producer for the broker at `addr`, on a live connection.
    async fn producer(&self, addr: &str) -> Result<Producer, ClientError> {
        if let Some(p) = self.producers.lock().unwrap_or_else(|p| p.into_inner()).get(addr)
            && p.connection().closed().is_none()
        {
            return Ok(p.clone());
        }
        let p = Producer::new(self.cluster.connection(addr).await?, self.group.clone());
        self.producers.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_owned(), p.clone());
        Ok(p)
    }

    /// Sends one message.
    ///
    /// # Errors
    /// After the retries, the last error.
    pub async fn send(&self, topic: &str, message: OutgoingMessage) -> Result<ClusterReceipt, ClientError> {
        let mut r = self.send_batch(topic, vec![message]).await?;
        Ok(r.remove(0))
    }

    /// Sends a batch to one queue of one broker set (chosen by the first message's ordering key,
    /// else in turn).
    ///
    /// # Errors
    /// No route; after the retries, the last error.
    pub async fn send_batch(&self, topic: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<ClusterReceipt>, ClientError> {
        let key = messages.first().and_then(|m| m.ordering_key.clone());
        let mut last = None;
        let mut tried: Vec<String> = Vec::new();
        for _ in 0..=SEND_RETRIES {
            let route = self.cluster.route(topic).await?;
            // Every (broker set, queue) with a live master.
            let queues: Vec<(&BrokerRoute, u32)> =
                route.iter().filter(|b| b.master.is_some()).flat_map(|b| (0..b.queues).map(move |q| (b, q))).collect();
            if queues.is_empty() {
                // Asked again next time: a new master (failover) registers within moments.
                self.cluster.forget_route(topic);
                return Err(last.unwrap_or_else(|| ClientError::Closed(format!("no broker set with a live master serves {topic}"))));
            }
            let pick = match &key {
                Some(k) => queues[crate::queue_for_key(k, queues.len() as u32) as usize],
                None => {
                    let fresh: Vec<_> =
                        queues.iter().filter(|(b, _)| !self.cluster.avoided(&b.broker_name) && !tried.contains(&b.broker_name)).collect();
                    let from = if fresh.is_empty() { queues.iter().collect() } else { fresh };
                    *from[self.round_robin.fetch_add(1, Ordering::Relaxed) as usize % from.len()]
                }
            };
            let (broker, queue) = pick;
            let addr = broker.master.clone().unwrap_or_default();
            let attempt = async { self.producer(&addr).await?.send_batch_to(topic, queue, messages.clone()).await };
            match attempt.await {
                Ok(receipts) => {
                    return Ok(receipts
                        .into_iter()
                        .map(|receipt| ClusterReceipt { broker_name: broker.broker_name.clone(), receipt })
                        .collect());
                }
                Err(e)
                    if e.is_retryable()
                        || matches!(
                            e.code(),
                            Some(
                                wasmq_protocol::ErrorCode::NotMaster
                                    | wasmq_protocol::ErrorCode::UnknownTopic
                                    | wasmq_protocol::ErrorCode::InvalidQueue
                            )
                        ) =>
                {
                    tracing::debug!(broker = broker.broker_name, error = %e, "send failed; trying another broker set");
                    self.cluster.avoid(&broker.broker_name);
                    self.cluster.forget_route(topic);
                    tried.push(broker.broker_name.clone());
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Closed("no attempt made".into())))
    }
}

/// A consumer-group member across broker sets: one [`GroupConsumer`] per broker set serving the
/// topic, on its master — or on a slave while the master is unreachable, moving back when it
/// returns. Each broker set shares its own queues among the members that reach it.
#[derive(Debug)]
pub struct ClusterConsumer {
    task: tokio::task::JoinHandle<()>,
    placements: Arc<Mutex<Vec<(String, &'static str)>>>,
}

impl Drop for ClusterConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a broker set's member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Master,
    Slave,
}

impl ClusterConsumer {
    /// Where this member has run, in order: (broker set, `master` or `slave`).
    pub fn placements(&self) -> Vec<(String, &'static str)> {
        self.placements.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Joins the group on every broker set serving the first subscribed topic.
    ///
    /// # Errors
    /// No route for the topic.
    pub async fn start(cluster: Arc<Cluster>, options: GroupOptions, handler: Handler) -> Result<Self, ClientError> {
        let topic = options.subscriptions.first().map(|(t, _)| t.clone()).ok_or_else(|| ClientError::Invalid("no subscription".into()))?;
        cluster.route(&topic).await?;
        let placements: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
        let placed = Arc::clone(&placements);
        let task = tokio::spawn(async move {
            let mut members: HashMap<String, (On, GroupConsumer)> = HashMap::new();
            loop {
                if let Ok(route) = cluster.route(&topic).await {
                    for b in route.iter() {
                        let current = members.get(&b.broker_name).map(|(on, m)| (*on, m.connection_lost(), m.take_suggestion()));
                        let restart = match current {
                            None | Some((_, true, _)) => true,
                            // Back to the master when the slave says so and the master answers.
                            Some((On::Slave, false, s)) => {
                                s == ReadFrom::Master && cluster.connection(b.master.as_deref().unwrap_or_default()).await.is_ok()
                            }
                            // To a slave when the master says this member reads old data.
                            Some((On::Master, false, s)) => s == ReadFrom::Slave && !b.slaves.is_empty(),
                        };
                        let prefer_slave = matches!(current, Some((On::Master, false, ReadFrom::Slave)));
                        if !restart {
                            continue;
                        }
                        if let Some((_, old)) = members.remove(&b.broker_name) {
                            old.shutdown().await;
                        }
                        let masters = b.master.iter().map(|a| (On::Master, a));
                        let slaves = b.slaves.iter().map(|a| (On::Slave, a));
                        let candidates: Vec<(On, &String)> =
                            if prefer_slave { slaves.chain(masters).collect() } else { masters.chain(slaves).collect() };
                        for (on, addr) in candidates {
                            let Ok(conn) = cluster.connect_new(addr).await else { continue };
                            match GroupConsumer::start(conn, options.clone(), Arc::clone(&handler)).await {
                                Ok(m) => {
                                    tracing::info!(broker = b.broker_name, addr, ?on, "group member running");
                                    let where_ = if on == On::Master { "master" } else { "slave" };
                                    placed.lock().unwrap_or_else(|p| p.into_inner()).push((b.broker_name.clone(), where_));
                                    members.insert(b.broker_name.clone(), (on, m));
                                    break;
                                }
                                Err(e) => tracing::debug!(broker = b.broker_name, addr, error = %e, "joining failed"),
                            }
                        }
                    }
                }
                tokio::time::sleep(SUPERVISE_INTERVAL).await;
            }
        });
        Ok(Self { task, placements })
    }
}
