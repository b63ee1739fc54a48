//! `wasmq-broker`: the composition root. Reads the configuration and the TLS material, opens
//! the store, the engine, the plugin registry and the service, binds the listeners of its
//! table of front ends ([`front_ends`]), runs the broker's timers, and shuts down cleanly.
//!
//! The use cases are `wasmq-service`'s, the protocols the front-end crates', the admin API
//! `wasmq-admin-api`'s; nothing here answers a request.

pub mod config;
pub mod failover;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmq_engine::Engine;
use wasmq_service::{AllProducers, ProducerLinks, Replication, Role, Service};
use wasmq_store::{Store, SystemClock};

pub use config::{Config, RawConfig};

/// How often consumer offsets are written to disk.
const OFFSETS_PERSIST_INTERVAL: Duration = Duration::from_secs(5);
/// How often silent group members are looked for.
const GROUP_EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// Longest the shutdown waits for connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often topics' own retention is applied.
const TOPIC_RETENTION_INTERVAL: Duration = Duration::from_secs(10);
/// Users, credentials and policies, in the data directory's `config/`.
const SECURITY_FILE: &str = "security.json";
/// The audit log's directory in the data directory.
const AUDIT_DIR: &str = "audit";

/// Wall-clock milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Where a started broker listens, and what clients need.
#[derive(Debug, Clone)]
pub struct Started {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The RocketMQ 5 gRPC address.
    pub grpc_listen: SocketAddr,
    /// The development CA (when no certificate was configured).
    pub ca_path: Option<std::path::PathBuf>,
    pub admin_token: String,
}

/// The native protocol front end's name in the table (and in logs).
const NATIVE: &str = "native";
/// The RocketMQ 5 gRPC front end's name (also its name among the endpoints a broker registers).
const GRPC: &str = wasmq_frontend_grpc::PROTOCOL;

/// Serves a bound listener's connections until shutdown (a front end's accept loop).
type Serve = Box<dyn FnOnce(TcpListener, tokio_rustls::TlsAcceptor, TaskTracker) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// One listener of the broker: a protocol front end or the admin API.
pub struct FrontEnd {
    pub name: &'static str,
    pub listen: SocketAddr,
    /// The ALPN protocol its TLS offers.
    pub alpn: &'static [u8],
    serve: Serve,
}

impl std::fmt::Debug for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEnd").field("name", &self.name).field("listen", &self.listen).finish_non_exhaustive()
    }
}

/// What the front ends are built from.
struct Parts {
    service: Arc<Service>,
    shutdown: CancellationToken,
    /// The cluster's name servers, if the broker registers with any.
    names: Option<Arc<wasmq_namesrv::NameServers>>,
}

/// The native protocol's listener and its producer links.
fn native(config: &Config, parts: &Parts) -> (FrontEnd, Arc<dyn ProducerLinks>) {
    let producers = Arc::new(wasmq_frontend_native::Producers::new(Arc::clone(parts.service.security())));
    let shared = Arc::new(wasmq_frontend_native::Shared {
        service: Arc::clone(&parts.service),
        in_flight_max: config.in_flight_max.get(),
        frame_bytes_max: config.frame_bytes_max,
        shutdown: parts.shutdown.clone(),
        producers: Arc::clone(&producers),
    });
    let (connections_max, shutdown) = (config.connections_max.get() as usize, parts.shutdown.clone());
    let serve: Serve = Box::new(move |listener, acceptor, tracker| {
        Box::pin(wasmq_net::serve_tls(NATIVE, listener, acceptor, connections_max, shutdown, tracker, move |tls, peer| {
            wasmq_frontend_native::serve(tls, peer, Arc::clone(&shared))
        }))
    });
    (FrontEnd { name: NATIVE, listen: config.listen, alpn: wasmq_frontend_native::ALPN, serve }, producers)
}

/// The RocketMQ 5 gRPC listener and its producer links (clients with a Telemetry stream).
fn grpc(config: &Config, parts: &Parts) -> (FrontEnd, Arc<dyn ProducerLinks>) {
    let clients = Arc::new(wasmq_frontend_grpc::Clients::default());
    let messaging = wasmq_frontend_grpc::Messaging(Arc::new(wasmq_frontend_grpc::Shared {
        service: Arc::clone(&parts.service),
        clients: Arc::clone(&clients),
        max_body_size: config.store.message_bytes_max,
        shutdown: parts.shutdown.clone(),
        names: parts.names.clone(),
    }));
    let (connections_max, shutdown) = (config.connections_max.get() as usize, parts.shutdown.clone());
    let serve: Serve = Box::new(move |listener, acceptor, tracker| {
        let stop = shutdown.clone();
        Box::pin(wasmq_net::serve_tls(GRPC, listener, acceptor, connections_max, shutdown, tracker, move |tls, peer| {
            wasmq_frontend_grpc::serve(tls, peer, messaging.clone(), stop.clone())
        }))
    });
    (FrontEnd { name: GRPC, listen: config.grpc_listen, alpn: wasmq_frontend_grpc::ALPN, serve }, clients)
}

/// The table of front ends: every protocol the broker speaks, one line each (the Kafka front
/// end goes here), and the producer links of those that can answer transaction check-backs.
fn front_ends(config: &Config, parts: &Parts) -> (Vec<FrontEnd>, Vec<Arc<dyn ProducerLinks>>) {
    let (native, native_producers) = native(config, parts);
    let (grpc, grpc_producers) = grpc(config, parts);
    (vec![native, grpc], vec![native_producers, grpc_producers])
}

/// Descriptors the broker needs besides its client connections: store files, admin and peer
/// connections, plugin caches.
const OPEN_FILES_RESERVED: u64 = 512;

/// Raises the soft limit on open files to the hard one (the usual soft default, 1024, is below
/// what the default `connections_max` needs), and warns when even that cannot hold the
/// connections allowed.
fn raise_open_files_limit(connections_max: u32) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
        lim.rlim_cur
    };
    // Two per connection: its socket, and the handle that can make its close a reset.
    let needed = 2 * u64::from(connections_max) + OPEN_FILES_RESERVED;
    if raised < needed {
        tracing::warn!(
            open_files = raised,
            connections_max,
            needed,
            "the open-file limit cannot hold connections_max connections; raise it (ulimit -n)"
        );
    }
}

/// How long a restart for a new role waits for the store's lock (tasks of the stopped services
/// letting go of it).
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// Runs a broker until `shutdown` is cancelled, then drains, flushes and checkpoints.
/// `started` is called once the listeners are bound. With a failover controller, a change of
/// role stops the broker's services and starts them again, on the same ports, as the new role
/// ([`failover`]).
///
/// # Errors
/// Start-up failures (store, certificates, binding); a clean shutdown returns `Ok`.
pub async fn run(config: Config, shutdown: CancellationToken, started: impl FnOnce(&Started)) -> Result<()> {
    let mut config = config;
    let mut announce = Some(started);
    let mut plan = failover::Plan::default();
    loop {
        let stop = shutdown.child_token();
        let restart = failover::Restart::new(stop.clone());
        let bound = run_once(&config, stop, &restart, plan, &mut announce).await?;
        let next = restart.take();
        let Some(next) = next.filter(|_| !shutdown.is_cancelled()) else { return Ok(()) };
        // The same ports again: clients and peers know them.
        (config.listen, config.admin_listen, config.grpc_listen) = (bound.listen, bound.admin_listen, bound.grpc_listen);
        config.store.cut_log_at = next.cut;
        plan = next;
    }
}

/// Opens the store, waiting while the services stopped for a restart still hold it.
async fn open_store(config: wasmq_store::StoreConfig) -> Result<(Store, wasmq_store::RecoveryReport)> {
    let waited = std::time::Instant::now();
    loop {
        let c = config.clone();
        match tokio::task::spawn_blocking(move || Store::open(c)).await? {
            Err(wasmq_store::OpenError::Locked { .. }) if waited.elapsed() < REOPEN_WAIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.context("opening the store"),
        }
    }
}

/// One run of the broker's services as `plan` says, until `shutdown` (the process stops, or
/// `restart` asked for another plan); returns where it listened.
async fn run_once(
    config: &Config,
    shutdown: CancellationToken,
    restart: &Arc<failover::Restart>,
    plan: failover::Plan,
    announce: &mut Option<impl FnOnce(&Started)>,
) -> Result<Started> {
    let started_ms = now_ms();
    raise_open_files_limit(config.connections_max.get());
    let (cert, key, ca_path) = certificate_or_dev(&config.data_dir, config.tls.as_ref())?;
    let peer_ca = config.peer_ca.clone().unwrap_or_else(|| tls::dev_ca_path(&config.data_dir));
    let token = admin_token(config)?;
    let (store, report) = open_store(config.store.clone()).await?;
    if report.crashed {
        tracing::warn!(?report, "recovered after an unclean shutdown");
    }
    if report.cut_at.is_some() {
        // What follows the cut takes queue offsets the saved recovery state may have passed.
        wasmq_engine::forget_recovery_state(&config.data_dir.join("config")).context("forgetting the recovery state after a cut")?;
    }
    let store = Arc::new(store);
    let controller =
        (!config.controller.is_empty()).then(|| Arc::new(wasmq_controller_api::Client::new(config.controller.clone(), &peer_ca)));
    let me = failover::Me {
        set: config.broker_name.clone(),
        id: config.broker_id,
        addr: config.published(config.listen),
        peer_ca: peer_ca.clone(),
    };
    // Under a controller, a master's acknowledgements wait for the in-sync set it holds.
    let (mut in_sync, mut first_lease) = (None, None);
    let role = match (&controller, plan.role) {
        (_, Some(role)) => role,
        (Some(client), None) => match failover::initial_role(client, &me, &store, &shutdown).await? {
            Some(assigned) => {
                if assigned.role == Role::Master {
                    (in_sync, first_lease) = (Some(assigned.set.in_sync), Some(assigned.lease));
                }
                assigned.role
            }
            None => {
                tokio::task::spawn_blocking(move || store.shutdown()).await?.context("final flush")?;
                return Ok(Started {
                    listen: config.listen,
                    admin_listen: config.admin_listen,
                    grpc_listen: config.grpc_listen,
                    ca_path,
                    admin_token: token,
                });
            }
        },
        (None, None) => match &config.master {
            None => Role::Master,
            Some(master) => Role::Slave { master: master.clone(), peer_ca: peer_ca.clone() },
        },
    };
    let engine = Arc::new(Engine::open(Arc::clone(&store), config.data_dir.join("config"), &config.broker_name, Arc::new(SystemClock))?);
    engine.set_session_timeout(u64::try_from(config.group_session_timeout.as_millis()).unwrap_or(u64::MAX));
    engine.set_retry_policy(config.retry_delays_ms.clone(), config.max_reconsume_times)?;
    engine.set_lock_ttl(u64::try_from(config.order_lock_ttl.as_millis()).unwrap_or(u64::MAX));
    engine.set_park_policy(config.park)?;
    let schedule_changed = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::clone(&schedule_changed);
    engine.on_schedule_change(move || notify.notify_one());
    let (data_dir, limits) = (config.data_dir.clone(), config.plugin_limits.clone());
    let plugins = Arc::new(
        tokio::task::spawn_blocking(move || wasmq_plugin_host::PluginRegistry::open(&data_dir, limits))
            .await?
            .context("opening the plugin registry")?,
    );
    let replication =
        Replication::new(&engine, &config.broker_name, config.broker_id, role, config.replication, config.slave_read_behind_bytes);
    if let Some(in_sync) = in_sync {
        replication.set_in_sync_committed(in_sync);
    }
    let security = Arc::new(
        wasmq_auth::Security::open(&config.data_dir.join("config").join(SECURITY_FILE)).context("opening the users and policies")?,
    );
    let audit = Arc::new(wasmq_auth::AuditLog::open(&config.data_dir.join(AUDIT_DIR)).context("opening the audit log")?);
    let service =
        Arc::new(Service::new(Arc::clone(&engine), plugins.clone(), Arc::clone(&replication)).with_security(security).with_audit(audit));
    service.metrics().recovery_seconds.set(report.elapsed.as_secs_f64());
    let names = (!config.namesrv.is_empty()).then(|| Arc::new(wasmq_namesrv::NameServers::new(config.namesrv.clone(), peer_ca.clone())));
    let parts = Parts { service: Arc::clone(&service), shutdown: shutdown.clone(), names: names.clone() };

    let (mut table, links) = front_ends(config, &parts);
    let producers: Arc<dyn ProducerLinks> = Arc::new(AllProducers(links));
    let stats = Arc::new(wasmq_admin_api::stats::Stats::default());
    let admin_listener = TcpListener::bind(config.admin_listen).await.with_context(|| format!("binding {}", config.admin_listen))?;
    let admin_listen = admin_listener.local_addr()?;
    let tracker = TaskTracker::new();
    let mut bound = Vec::new();
    for fe in &table {
        let listener = TcpListener::bind(fe.listen).await.with_context(|| format!("binding {} ({})", fe.listen, fe.name))?;
        bound.push(listener);
    }
    // The native protocol's address is the broker's address (name servers, the console).
    let native_at = table.iter().position(|fe| fe.name == NATIVE).context("the table of front ends has no native protocol")?;
    let listen = bound[native_at].local_addr()?;
    let grpc_at = table.iter().position(|fe| fe.name == GRPC).context("the table of front ends has no gRPC front end")?;
    let grpc_listen = bound[grpc_at].local_addr()?;
    let info = Started { listen, admin_listen, grpc_listen, ca_path, admin_token: token.clone() };
    for (fe, listener) in table.drain(..).zip(bound) {
        let acceptor = tokio_rustls::TlsAcceptor::from(wasmq_net::server_config(&cert, &key, &[fe.alpn])?);
        tracing::info!(front_end = fe.name, listen = %listener.local_addr()?, "listening");
        tracker.spawn((fe.serve)(listener, acceptor, tracker.clone()));
    }

    if !config.namesrv.is_empty() {
        let me = wasmq_protocol::RegisterBrokerRequest {
            cluster: config.cluster.clone(),
            broker_name: config.broker_name.clone(),
            broker_id: config.broker_id,
            addr: config.published(info.listen),
            admin_addr: config.published(info.admin_listen),
            topics: Vec::new(),
            live: wasmq_protocol::BrokerLive::default(),
            register_interval_ms: u32::try_from(config.register_interval.as_millis()).unwrap_or(u32::MAX),
            endpoints: vec![wasmq_protocol::Endpoint { protocol: GRPC.to_owned(), addr: config.published(info.grpc_listen) }],
            master: !replication.is_slave(),
            epoch: 0,
        };
        let service = Arc::clone(&service);
        let registration = move || {
            let mut req = me.clone();
            req.epoch = service.engine().store().epochs().latest();
            req.topics = service.engine().topics().into_iter().map(|(t, c)| (t, c.queues)).collect();
            let l = service.liveness(started_ms);
            req.live = wasmq_protocol::BrokerLive {
                version: l.version,
                started_ms: l.started_ms,
                log_end_offset: l.log_end_offset,
                log_bytes: l.log_bytes,
                disk_total_bytes: l.disk_total_bytes,
                disk_used_bytes: l.disk_used_bytes,
            };
            req
        };
        tracker.spawn(wasmq_namesrv::register_loop(
            config.namesrv.clone(),
            peer_ca.clone(),
            config.register_interval,
            shutdown.clone(),
            registration,
        ));
    }
    if let Some(client) = &controller {
        tracker.spawn(failover::heartbeats(
            Arc::clone(client),
            failover::Me { addr: config.published(info.listen), ..me },
            replication.role.clone(),
            first_lease,
            Arc::clone(&engine),
            Arc::clone(&replication),
            Arc::clone(restart),
            shutdown.clone(),
        ));
    }
    if replication.is_slave() {
        // A slave appends nothing itself: held messages move on its master.
        let following = wasmq_frontend_native::follow(
            Arc::clone(&replication),
            Arc::clone(&engine),
            Arc::clone(service.security()),
            config.replication_login.clone(),
            config.published(info.admin_listen),
            shutdown.clone(),
        );
        let (role, restart) = (replication.role.clone(), Arc::clone(restart));
        tracker.spawn(async move {
            if let Some(cut) = following.await {
                restart.request(failover::Plan { role: Some(role), cut: Some(cut) }, "the log parted from the master's");
            }
        });
    } else {
        // Check about four times per interval, so a check is at most a quarter interval late.
        let check_tick = Duration::from_millis((config.park.check_interval_ms / 4).clamp(10, 1_000));
        tracker.spawn(wasmq_service::check_back(Arc::clone(&engine), Arc::clone(&producers), check_tick, shutdown.clone()));
        tracker.spawn(wasmq_service::scheduler(Arc::clone(&engine), schedule_changed, shutdown.clone()));
        tracker.spawn(wasmq_service::reviver(Arc::clone(&engine), shutdown.clone()));
    }
    tracker.spawn(wasmq_admin_api::stats::sampler(Arc::clone(&stats), Arc::clone(&engine), shutdown.clone()));
    let admin_state = wasmq_admin_api::AdminState {
        service: Arc::clone(&service),
        engine: Arc::clone(&engine),
        plugins,
        producers,
        replication,
        stats,
        token: token.into(),
        read_token: config.admin_read_token.clone().map(Into::into),
        listen: info.listen.to_string(),
        admin_listen: info.admin_listen.to_string(),
        started_ms,
        cluster: config.cluster.clone(),
        namesrvs: config.namesrv.clone(),
        names,
        controller: controller.clone(),
    };
    let admin_tls = tokio_rustls::TlsAcceptor::from(wasmq_net::server_config(&cert, &key, &[wasmq_admin_api::ALPN])?);
    tracker.spawn(wasmq_admin_api::serve(
        admin_listener,
        admin_tls,
        wasmq_admin_api::router(admin_state),
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(housekeeping(Arc::clone(&engine), shutdown.clone()));
    if let Some(announce) = announce.take() {
        announce(&info);
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down: no new connections; draining");
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
    engine.persist_offsets()?;
    drop((engine, service, parts));
    tokio::task::spawn_blocking(move || store.shutdown()).await?.context("final flush")?;
    tracing::info!("stopped cleanly");
    Ok(info)
}

/// The configured admin token, else the one saved in the data directory, else a new one (saved).
fn admin_token(config: &Config) -> Result<String> {
    if let Some(t) = &config.admin_token {
        return Ok(t.clone());
    }
    let path = config.data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => Ok(t.trim().to_owned()),
        _ => {
            let t = tls::random_token();
            std::fs::write(&path, &t).with_context(|| format!("writing {}", path.display()))?;
            Ok(t)
        }
    }
}

/// The broker's periodic chores until `stop`: saving offsets, expiring silent group members,
/// applying topics' own retention.
async fn housekeeping(engine: Arc<Engine>, stop: CancellationToken) {
    let mut persist = tokio::time::interval(OFFSETS_PERSIST_INTERVAL);
    let mut expire = tokio::time::interval(GROUP_EXPIRY_INTERVAL);
    let mut retention = tokio::time::interval(TOPIC_RETENTION_INTERVAL);
    loop {
        tokio::select! {
            _ = persist.tick() => if let Err(e) = engine.persist_offsets() { tracing::error!(error = %e, "saving offsets"); },
            _ = retention.tick() => {
                let engine = Arc::clone(&engine);
                match tokio::task::spawn_blocking(move || engine.enforce_topic_retention()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(messages = n, "topic retention cut old messages"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "topic retention failed"),
                    _ => {}
                }
            }
            _ = expire.tick() => {
                let n = engine.expire_members();
                if n > 0 {
                    tracing::info!(members = n, "group members expired; their queues were reassigned");
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Name server settings.
#[derive(Debug, Clone)]
pub struct NamesrvConfig {
    pub listen: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub broker_expiry: Duration,
}

/// The certificate and key given, or a development CA and certificate in `data_dir` (made
/// then, with the CA's path).
fn certificate_or_dev(
    data_dir: &std::path::Path,
    tls: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<(std::path::PathBuf, std::path::PathBuf, Option<std::path::PathBuf>)> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    Ok(match tls {
        Some((c, k)) => (c.clone(), k.clone(), None),
        None => {
            let (c, k) = tls::ensure_dev_certificates(data_dir)?;
            (c, k, Some(tls::dev_ca_path(data_dir)))
        }
    })
}

/// How a controller node (`wasmq-broker controller`) runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub id: u64,
    /// Every controller node by id, this one included: its address.
    pub nodes: std::collections::BTreeMap<u64, String>,
    pub listen: SocketAddr,
    pub data_dir: std::path::PathBuf,
    /// Certificate and key; without them a development certificate in `data_dir` (then the
    /// nodes do not trust each other unless given one CA: use this for one node only).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The CA the other nodes' certificates are checked against (default: its own).
    pub peer_ca: Option<std::path::PathBuf>,
    pub master_timeout: Duration,
}

/// Runs a controller node until `shutdown`; `started` gets the bound address and the
/// development CA, if one was generated.
///
/// # Errors
/// Configuration, certificates, binding, the node's files.
pub async fn run_controller(
    config: ControllerConfig,
    shutdown: CancellationToken,
    started: impl FnOnce(SocketAddr, Option<&std::path::Path>),
) -> Result<()> {
    let (cert, key, ca) = certificate_or_dev(&config.data_dir, config.tls.as_ref())?;
    let Some(peer_ca) = config.peer_ca.clone().or_else(|| ca.clone()) else {
        anyhow::bail!("a controller node with its own certificate needs the CA of the other nodes (WASMQ_PEER_CA)");
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(wasmq_net::server_config(&cert, &key, &[wasmq_frontend_native::ALPN])?);
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let node = wasmq_controller::Node::start(wasmq_controller::NodeConfig {
        id: config.id,
        nodes: config.nodes.clone(),
        dir: config.data_dir.join("controller"),
        peer_ca,
        master_timeout: config.master_timeout,
    })
    .await
    .map_err(|e| anyhow::anyhow!("controller node {}: {e}", config.id))?;
    started(listener.local_addr()?, ca.as_deref());
    let watch = tokio::spawn(Arc::clone(&node).watch(shutdown.clone()));
    Arc::clone(&node).serve(listener, acceptor, shutdown).await;
    let _ = watch.await;
    node.shutdown().await;
    Ok(())
}

/// Runs a name server until `shutdown`; `started` gets the bound address and the development
/// CA, if one was generated.
///
/// # Errors
/// Certificates, binding.
pub async fn run_namesrv(
    config: NamesrvConfig,
    shutdown: CancellationToken,
    started: impl FnOnce(SocketAddr, Option<&std::path::Path>),
) -> Result<()> {
    let (cert, key, ca) = certificate_or_dev(&config.data_dir, config.tls.as_ref())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(wasmq_net::server_config(&cert, &key, &[wasmq_frontend_native::ALPN])?);
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    started(listener.local_addr()?, ca.as_deref());
    wasmq_namesrv::serve(listener, acceptor, config.broker_expiry, shutdown).await;
    Ok(())
}
