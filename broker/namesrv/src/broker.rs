//! A broker's side of the name servers: it registers with each of them every interval (its
//! heartbeat, carrying its topics and liveness), and asks them for the cluster's brokers.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmq_net::{ClientError, Connection, ConnectionOptions};
use wasmq_protocol::{BrokerEntry, BrokerRoute, RegisterBrokerRequest, Request, Response, RouteRequest};

/// Longest a broker waits for a name server's answer.
const NAMESRV_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers with every name server every `interval` until `stop`; `registration` says what
/// (topics and liveness as of now).
pub async fn register_loop(
    namesrvs: Vec<String>,
    peer_ca: PathBuf,
    interval: Duration,
    stop: CancellationToken,
    registration: impl Fn() -> RegisterBrokerRequest + Send,
) {
    let mut conns: Vec<Option<Connection>> = vec![None; namesrvs.len()];
    let mut every = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let req = Request::RegisterBroker(registration());
        for (addr, conn) in namesrvs.iter().zip(conns.iter_mut()) {
            if conn.as_ref().is_some_and(|c| c.closed().is_some()) {
                *conn = None;
            }
            if conn.is_none() {
                match connect(addr, &peer_ca).await {
                    Ok(c) => *conn = Some(c),
                    Err(e) => {
                        tracing::debug!(namesrv = addr, error = %e, "name server unreachable");
                        continue;
                    }
                }
            }
            if let Some(c) = conn
                && let Err(e) = c.call(&req).await
            {
                tracing::debug!(namesrv = addr, error = %e, "registering failed");
                *conn = None;
            }
        }
    }
}

async fn connect(addr: &str, ca: &std::path::Path) -> Result<Connection, ClientError> {
    let mut options = ConnectionOptions::new(addr, ca);
    options.request_timeout = NAMESRV_TIMEOUT;
    Connection::connect(options).await
}

/// The name servers a broker asks about the cluster, with a kept connection to each.
#[derive(Debug)]
pub struct NameServers {
    addrs: Vec<String>,
    ca: PathBuf,
    conns: tokio::sync::Mutex<Vec<Option<Connection>>>,
}

impl NameServers {
    /// Name servers at `addrs` (protocol addresses), trusting `ca`.
    #[must_use]
    pub fn new(addrs: Vec<String>, ca: PathBuf) -> Self {
        let conns = tokio::sync::Mutex::new(vec![None; addrs.len()]);
        Self { addrs, ca, conns }
    }

    /// Every broker the first name server to answer knows.
    ///
    /// # Errors
    /// No name server answered; the last one's error.
    pub async fn brokers(&self) -> Result<Vec<BrokerEntry>, ClientError> {
        match self.ask(&Request::GetCluster).await? {
            Response::GetCluster(b) => Ok(b),
            _ => Err(ClientError::Malformed("GetCluster answered with another response".into())),
        }
    }

    /// The broker sets serving `topic`, as the first name server to answer knows them.
    ///
    /// # Errors
    /// No name server answered; or the one that did knows no live broker serving `topic`
    /// ([`ClientError::Broker`] with `UnknownTopic`).
    pub async fn route(&self, topic: &str) -> Result<Vec<BrokerRoute>, ClientError> {
        match self.ask(&Request::GetRoute(RouteRequest { topic: topic.to_owned() })).await? {
            Response::GetRoute(r) => Ok(r.brokers),
            _ => Err(ClientError::Malformed("GetRoute answered with another response".into())),
        }
    }

    /// `req`'s answer from the first name server that gives one (an error status is an answer).
    async fn ask(&self, req: &Request) -> Result<Response, ClientError> {
        let mut last = ClientError::Closed("no name server configured".into());
        for (i, addr) in self.addrs.iter().enumerate() {
            let kept = self.conns.lock().await[i].clone().filter(|c| c.closed().is_none());
            let conn = match kept {
                Some(c) => c,
                // Connect without holding the list: one unreachable name server must not stall
                // the others.
                None => match connect(addr, &self.ca).await {
                    Ok(c) => {
                        self.conns.lock().await[i] = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        last = e;
                        continue;
                    }
                },
            };
            match conn.call(req).await {
                Err(e @ ClientError::Broker { .. }) => return Err(e),
                Err(e) => last = e,
                answer => return answer,
            }
        }
        Err(last)
    }
}
