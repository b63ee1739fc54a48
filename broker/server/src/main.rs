//! `wasmq-broker`: start a broker. With no arguments: a development broker on 127.0.0.1 with
//! data in `./data`, a generated CA and admin token.

use anyhow::Result;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "wasmq-broker", version, about = "wasmq message broker")]
struct Args {
    /// TOML configuration file (keys as in docs/operations.md; WASMQ_<KEY> variables override).
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run a name server instead of a broker.
    Namesrv {
        #[arg(long, env = "WASMQ_LISTEN", default_value = "127.0.0.1:9876")]
        listen: std::net::SocketAddr,
        /// Where a development certificate is generated (without --tls-cert).
        #[arg(long, env = "WASMQ_DATA_DIR", default_value = "namesrv-data")]
        data_dir: std::path::PathBuf,
        #[arg(long, env = "WASMQ_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        #[arg(long, env = "WASMQ_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Drop a broker after this long without a registration.
        #[arg(long, env = "WASMQ_BROKER_EXPIRY_MS", default_value_t = 120_000)]
        broker_expiry_ms: u64,
    },
    /// Run a controller node (automatic failover: masters, epochs, in-sync sets) instead of a
    /// broker.
    Controller {
        /// This node's id, one of --nodes.
        #[arg(long, env = "WASMQ_CONTROLLER_ID", default_value_t = 1)]
        id: u64,
        /// Every controller node, this one included, as ID=HOST:PORT, comma-separated: 1 node,
        /// or 3 (or 5) to survive the loss of 1 (or 2).
        #[arg(long, env = "WASMQ_CONTROLLER_NODES", value_delimiter = ',', default_value = "1=127.0.0.1:9878")]
        nodes: Vec<String>,
        /// Where to listen (default: this node's address in --nodes).
        #[arg(long, env = "WASMQ_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Its Raft log, vote and snapshots (and a development certificate without --tls-cert).
        #[arg(long, env = "WASMQ_DATA_DIR", default_value = "controller-data")]
        data_dir: std::path::PathBuf,
        #[arg(long, env = "WASMQ_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        #[arg(long, env = "WASMQ_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// The CA that signed the other nodes' certificates.
        #[arg(long, env = "WASMQ_PEER_CA")]
        peer_ca: Option<std::path::PathBuf>,
        /// A broker set's master silent this long is replaced by an in-sync slave.
        #[arg(long, env = "WASMQ_MASTER_TIMEOUT_MS", default_value_t = wasmq_controller::MASTER_TIMEOUT_DEFAULT.as_millis() as u64)]
        master_timeout_ms: u64,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WASMQ_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log redirected to a file or a journal stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let shutdown = CancellationToken::new();
    if let Some(Command::Namesrv { listen, data_dir, tls_cert, tls_key, broker_expiry_ms }) = args.command {
        let config = wasmq_server::NamesrvConfig {
            listen,
            data_dir,
            tls: tls_cert.zip(tls_key),
            broker_expiry: std::time::Duration::from_millis(broker_expiry_ms),
        };
        return runtime.block_on(async {
            stop_on_signal(shutdown.clone());
            wasmq_server::run_namesrv(config, shutdown, |addr, ca| {
                println!("wasmq-namesrv listening on {addr}");
                if let Some(ca) = ca {
                    println!("development CA: {} (clients: --ca {})", ca.display(), ca.display());
                }
                println!("ready");
            })
            .await
        });
    }
    if let Some(Command::Controller { id, nodes, listen, data_dir, tls_cert, tls_key, peer_ca, master_timeout_ms }) = args.command {
        let nodes = controller_nodes(&nodes)?;
        let listen = match listen {
            Some(l) => l,
            None => {
                let Some(addr) = nodes.get(&id) else { anyhow::bail!("controller node {id} is not among --nodes {nodes:?}") };
                addr.parse().map_err(|e| anyhow::anyhow!("controller node {id} at {addr}: {e}; pass --listen"))?
            }
        };
        let config = wasmq_server::ControllerConfig {
            id,
            nodes,
            listen,
            data_dir,
            tls: tls_cert.zip(tls_key),
            peer_ca,
            master_timeout: std::time::Duration::from_millis(master_timeout_ms),
        };
        return runtime.block_on(async {
            stop_on_signal(shutdown.clone());
            let (id, nodes) = (config.id, config.nodes.clone());
            wasmq_server::run_controller(config, shutdown, |addr, ca| {
                println!("wasmq-controller node {id} listening on {addr} (nodes {nodes:?})");
                if let Some(ca) = ca {
                    println!("development CA: {} (clients: --ca {})", ca.display(), ca.display());
                }
                println!("ready");
            })
            .await
        });
    }
    let raw = wasmq_server::RawConfig::load(args.config.as_deref(), std::env::vars())?;
    let config = wasmq_server::Config::try_from(raw)?;
    runtime.block_on(async {
        stop_on_signal(shutdown.clone());
        wasmq_server::run(config, shutdown, |s| {
            println!("wasmq-broker listening on {} (admin https://{})", s.listen, s.admin_listen);
            println!("RocketMQ 5 gRPC on {} (TLS)", s.grpc_listen);
            if let Some(ca) = &s.ca_path {
                println!("development CA: {} (clients: --ca {})", ca.display(), ca.display());
            }
            println!("admin token: {}", s.admin_token);
        })
        .await
    })
}

/// `ID=HOST:PORT` items by id, checked: ids unique, this node among them is checked later.
fn controller_nodes(items: &[String]) -> Result<std::collections::BTreeMap<u64, String>> {
    let mut nodes = std::collections::BTreeMap::new();
    for item in items {
        let Some((id, addr)) = item.split_once('=') else {
            anyhow::bail!("controller node {item:?}: write ID=HOST:PORT, e.g. 1=10.0.0.1:9878");
        };
        let id: u64 = id.trim().parse().map_err(|e| anyhow::anyhow!("controller node {item:?}: id {id:?}: {e}"))?;
        if nodes.insert(id, addr.trim().to_owned()).is_some() {
            anyhow::bail!("controller node id {id} given twice");
        }
    }
    Ok(nodes)
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
fn stop_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        shutdown.cancel();
    });
}
