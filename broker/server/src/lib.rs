//! `wasmq-broker`: the I/O shell and composition root. Opens the store and the engine, serves
//! the binary protocol over TLS and the admin API over HTTPS, and shuts down cleanly.
//!
//! Knows sockets, TLS, HTTP and configuration; the domain lives in `wasmq-engine` and the bytes
//! in `wasmq-store`.

pub mod admin;
pub mod admin_data;
pub mod config;
pub mod conn;
pub mod console;
pub mod held;
pub mod namesrv;
mod openapi;
pub mod plugins;
pub mod replication;
pub mod stats;
pub mod tls;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmq_engine::Engine;
use wasmq_store::{Store, SystemClock};

pub use config::{Config, RawConfig};

/// How often consumer offsets are written to disk.
const OFFSETS_PERSIST_INTERVAL: Duration = Duration::from_secs(5);
/// How often silent group members are looked for.
const GROUP_EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// Longest the shutdown waits for connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an admin client has to send its request headers.
/// How often topics' own retention is applied.
const TOPIC_RETENTION_INTERVAL: Duration = Duration::from_secs(10);
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Wall-clock milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a broker reports of itself to name servers and in cluster views.
pub(crate) fn broker_live(engine: &wasmq_engine::Engine, started_ms: u64) -> wasmq_protocol::BrokerLive {
    let store = engine.store();
    let seg = store.segment_bytes();
    let (min, end) = (store.min_offset(), store.end_offset());
    let disk = wasmq_store::disk_space(&store.config().dir).ok();
    wasmq_protocol::BrokerLive {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_ms,
        log_end_offset: end,
        // Whole segment files, from the oldest kept to the active one.
        log_bytes: (end / seg - min / seg + 1) * seg,
        disk_total_bytes: disk.map_or(0, |d| d.total_bytes),
        disk_used_bytes: disk.map_or(0, |d| d.used_bytes),
    }
}

/// Where a started broker listens, and what clients need.
#[derive(Debug, Clone)]
pub struct Started {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The development CA (when no certificate was configured).
    pub ca_path: Option<std::path::PathBuf>,
    pub admin_token: String,
}

/// Runs a broker until `shutdown` is cancelled, then drains, flushes and checkpoints.
/// `started` is called once the listeners are bound.
///
/// # Errors
/// Start-up failures (store, certificates, binding); a clean shutdown returns `Ok`.
pub async fn run(config: Config, shutdown: CancellationToken, started: impl FnOnce(&Started)) -> Result<()> {
    let started_ms = now_ms();
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (cert, key, ca_path) = match &config.tls {
        Some((c, k)) => (c.clone(), k.clone(), None),
        None => {
            let (c, k) = tls::ensure_dev_certificates(&config.data_dir)?;
            (c, k, Some(tls::dev_ca_path(&config.data_dir)))
        }
    };
    let token = match &config.admin_token {
        Some(t) => t.clone(),
        None => {
            let path = config.data_dir.join("admin-token");
            match std::fs::read_to_string(&path) {
                Ok(t) if t.trim().len() >= 16 => t.trim().to_owned(),
                _ => {
                    let t = tls::random_token();
                    std::fs::write(&path, &t).with_context(|| format!("writing {}", path.display()))?;
                    t
                }
            }
        }
    };
    let store_config = config.store.clone();
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(store_config)).await?.context("opening the store")?;
    if report.crashed {
        tracing::warn!(?report, "recovered after an unclean shutdown");
    }
    let store = Arc::new(store);
    let engine = Arc::new(Engine::open(Arc::clone(&store), config.data_dir.join("config"), &config.broker_name, Arc::new(SystemClock))?);
    engine.set_session_timeout(u64::try_from(config.group_session_timeout.as_millis()).unwrap_or(u64::MAX));
    engine.set_retry_policy(config.retry_delays_ms.clone(), config.max_reconsume_times)?;
    engine.set_lock_ttl(u64::try_from(config.order_lock_ttl.as_millis()).unwrap_or(u64::MAX));
    engine.set_park_policy(config.park)?;
    let schedule_changed = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::clone(&schedule_changed);
    engine.on_schedule_change(move || notify.notify_one());
    let (plugin_engine, data_dir, limits) = (Arc::clone(&engine), config.data_dir.clone(), config.plugin_limits.clone());
    let plugins = Arc::new(
        tokio::task::spawn_blocking(move || plugins::Plugins::open(plugin_engine, &data_dir, limits))
            .await?
            .context("opening the plugin registry")?,
    );

    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen).await.with_context(|| format!("binding {}", config.admin_listen))?;
    let info = Started { listen: listener.local_addr()?, admin_listen: admin_listener.local_addr()?, ca_path, admin_token: token.clone() };
    let broker_tls = tokio_rustls::TlsAcceptor::from(tls::server_config(&cert, &key, &[b"wasmq/1"])?);
    let admin_tls = tokio_rustls::TlsAcceptor::from(tls::server_config(&cert, &key, &[b"http/1.1"])?);

    let role = match &config.master {
        None => replication::Role::Master,
        Some(master) => replication::Role::Slave {
            master: master.clone(),
            peer_ca: config.peer_ca.clone().unwrap_or_else(|| tls::dev_ca_path(&config.data_dir)),
        },
    };
    let replication = replication::Replication::new(
        &engine,
        &config.broker_name,
        config.broker_id,
        role,
        config.replication,
        config.slave_read_behind_bytes,
    );
    let tracker = TaskTracker::new();
    if !config.namesrv.is_empty() {
        let me = wasmq_protocol::RegisterBrokerRequest {
            cluster: config.cluster.clone(),
            broker_name: config.broker_name.clone(),
            broker_id: config.broker_id,
            addr: info.listen.to_string(),
            admin_addr: info.admin_listen.to_string(),
            topics: Vec::new(),
            live: wasmq_protocol::BrokerLive::default(),
        };
        let peer_ca = config.peer_ca.clone().unwrap_or_else(|| tls::dev_ca_path(&config.data_dir));
        tracker.spawn(namesrv::register_loop(
            Arc::clone(&engine),
            config.namesrv.clone(),
            peer_ca,
            me,
            started_ms,
            config.register_interval,
            shutdown.clone(),
        ));
    }
    let producers = Arc::new(held::Producers::default());
    if replication.is_slave() {
        // A slave appends nothing itself: held messages move on its master.
        tracker.spawn(Arc::clone(&replication).follow(Arc::clone(&engine), info.admin_listen.to_string(), shutdown.clone()));
    } else {
        // Check about four times per interval, so a check is at most a quarter interval late.
        let check_tick = Duration::from_millis((config.park.check_interval_ms / 4).clamp(10, 1_000));
        tracker.spawn(held::check_back(Arc::clone(&engine), Arc::clone(&producers), check_tick, shutdown.clone()));
        tracker.spawn(held::scheduler(Arc::clone(&engine), schedule_changed, shutdown.clone()));
    }
    let shared = Arc::new(conn::Shared {
        engine: Arc::clone(&engine),
        plugins: Arc::clone(&plugins),
        in_flight_max: config.in_flight_max.get(),
        frame_bytes_max: config.frame_bytes_max,
        flush: config.store.flush,
        shutdown: shutdown.clone(),
        producers: Arc::clone(&producers),
        replication: Arc::clone(&replication),
    });
    tracker.spawn(accept_clients(listener, broker_tls, shared, config.connections_max.get(), tracker.clone()));
    let stats = Arc::new(stats::Stats::default());
    tracker.spawn(stats::sampler(Arc::clone(&stats), Arc::clone(&engine), shutdown.clone()));
    let admin_state = admin::AdminState {
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
        names: (!config.namesrv.is_empty()).then(|| {
            wasmq_client::Cluster::new(config.namesrv.clone(), config.peer_ca.clone().unwrap_or_else(|| tls::dev_ca_path(&config.data_dir)))
        }),
    };
    tracker.spawn(accept_admin(admin_listener, admin_tls, admin::router(admin_state), shutdown.clone(), tracker.clone()));
    let persist_engine = Arc::clone(&engine);
    let persist_stop = shutdown.clone();
    tracker.spawn(async move {
        let mut persist = tokio::time::interval(OFFSETS_PERSIST_INTERVAL);
        let mut expire = tokio::time::interval(GROUP_EXPIRY_INTERVAL);
        let mut retention = tokio::time::interval(TOPIC_RETENTION_INTERVAL);
        loop {
            tokio::select! {
                _ = persist.tick() => if let Err(e) = persist_engine.persist_offsets() { tracing::error!(error = %e, "saving offsets"); },
                _ = retention.tick() => {
                    let engine = Arc::clone(&persist_engine);
                    match tokio::task::spawn_blocking(move || engine.enforce_topic_retention()).await {
                        Ok(Ok(n)) if n > 0 => tracing::info!(messages = n, "topic retention cut old messages"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "topic retention failed"),
                        _ => {}
                    }
                }
                _ = expire.tick() => {
                    let n = persist_engine.expire_members();
                    if n > 0 {
                        tracing::info!(members = n, "group members expired; their queues were reassigned");
                    }
                }
                () = persist_stop.cancelled() => return,
            }
        }
    });
    started(&info);

    shutdown.cancelled().await;
    tracing::info!("shutting down: no new connections; draining");
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
    engine.persist_offsets()?;
    drop(engine);
    tokio::task::spawn_blocking(move || store.shutdown()).await?.context("final flush")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn accept_clients(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<conn::Shared>,
    connections_max: u32,
    tracker: TaskTracker,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(connections_max as usize));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!(%peer, connections_max, "connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        let (acceptor, shared) = (acceptor.clone(), Arc::clone(&shared));
        tracker.spawn(async move {
            conn::serve(tcp, peer, acceptor, shared).await;
            drop(permit);
        });
    }
}

async fn accept_admin(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let Ok((tcp, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                _ => {
                    tracing::info!(%peer, "admin TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
