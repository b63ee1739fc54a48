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
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WASMQ_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let raw = wasmq_server::RawConfig::load(args.config.as_deref(), std::env::vars())?;
    let config = wasmq_server::Config::try_from(raw)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            signal.cancel();
        });
        wasmq_server::run(config, shutdown, |s| {
            println!("wasmq-broker listening on {} (admin https://{})", s.listen, s.admin_listen);
            if let Some(ca) = &s.ca_path {
                println!("development CA: {} (clients: --ca {})", ca.display(), ca.display());
            }
            println!("admin token: {}", s.admin_token);
        })
        .await
    })
}
