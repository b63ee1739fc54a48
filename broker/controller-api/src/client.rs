//! A client of the controller: brokers (heartbeats) and the CLI (status, elections).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wasmq_net::{ClientError, Connection, ConnectionOptions};
use wasmq_protocol::{Request, Response};

use crate::rpc::{self, Answer, CALL_TIMEOUT, Call};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client of the controller (brokers, the CLI): calls go to the leader, found by asking any
/// node and following its `NotLeader` answer.
#[derive(Debug)]
pub struct Client {
    addrs: Vec<String>,
    ca: PathBuf,
    conns: tokio::sync::Mutex<HashMap<String, Connection>>,
    /// The node that last answered as leader.
    leader: Mutex<Option<String>>,
}

impl Client {
    /// A client of the controller nodes at `addrs`, trusting `ca`.
    #[must_use]
    pub fn new(addrs: Vec<String>, ca: &Path) -> Self {
        Self { addrs, ca: ca.to_owned(), conns: tokio::sync::Mutex::default(), leader: Mutex::default() }
    }

    /// The controller nodes' addresses.
    #[must_use]
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    async fn call_at(&self, addr: &str, call: &Call) -> Result<Answer, ClientError> {
        let kept = self.conns.lock().await.get(addr).cloned().filter(|c| c.closed().is_none());
        let conn = match kept {
            Some(c) => c,
            None => {
                let mut options = ConnectionOptions::new(addr, &self.ca);
                options.request_timeout = CALL_TIMEOUT;
                let c = Connection::connect(options).await?;
                self.conns.lock().await.insert(addr.to_owned(), c.clone());
                c
            }
        };
        match conn.call(&Request::Controller(rpc::encode(call))).await? {
            Response::Controller(body) => rpc::decode(&body).map_err(ClientError::Malformed),
            _ => Err(ClientError::Malformed("a controller answered another op".into())),
        }
    }

    /// `call` answered by the leader: the last known leader first, then each node in turn,
    /// following `NotLeader` answers.
    ///
    /// # Errors
    /// No node answered as leader (none reachable, or no leader elected yet): the last reason.
    pub async fn call(&self, call: &Call) -> Result<Answer, ClientError> {
        let mut order: Vec<String> = lock(&self.leader).iter().cloned().collect();
        order.extend(self.addrs.iter().cloned());
        let mut last = ClientError::Closed("no controller node configured".into());
        let mut hops = 0;
        let mut i = 0;
        while i < order.len() && hops <= 2 * self.addrs.len() {
            let addr = order[i].clone();
            i += 1;
            hops += 1;
            match self.call_at(&addr, call).await {
                Ok(Answer::NotLeader { leader }) => {
                    last = ClientError::Closed(format!("controller node {addr} is not the leader"));
                    if let Some(l) = leader
                        && l != addr
                    {
                        order.insert(i, l);
                    }
                }
                Ok(answer) => {
                    *lock(&self.leader) = Some(addr);
                    return Ok(answer);
                }
                Err(e) => {
                    self.conns.lock().await.remove(&addr);
                    last = e;
                }
            }
        }
        *lock(&self.leader) = None;
        Err(last)
    }
}
