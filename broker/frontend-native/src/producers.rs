//! Producer connections by producer group, for transaction check-backs: the native front end's
//! [`ProducerLinks`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc;
use wasmq_protocol::{CheckTransactionRequest, Kind, Op, OutFrame, Request};
use wasmq_service::{Asked, CHECK_SEND_TIMEOUT, CheckBack, ProducerLinks};

/// A producer group's connection: its id and its outbound frames.
type Member = (u64, mpsc::Sender<OutFrame>);

/// Connections of producer groups, to send check-backs to: any live member may answer.
#[derive(Debug, Default)]
pub struct Producers {
    next_conn: AtomicU64,
    round_robin: AtomicUsize,
    groups: Mutex<HashMap<String, Vec<Member>>>,
}

impl Producers {
    /// A new connection id.
    pub fn connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Records that connection `conn` belongs to producer `group`; true if it is new there.
    pub fn register(&self, conn: u64, group: &str, tx: &mpsc::Sender<OutFrame>) -> bool {
        if group.is_empty() {
            return false;
        }
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let members = groups.entry(group.to_owned()).or_default();
        if members.iter().any(|(c, _)| *c == conn) {
            return false;
        }
        members.push((conn, tx.clone()));
        true
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, conn: u64) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for members in groups.values_mut() {
            members.retain(|(c, _)| *c != conn);
        }
        groups.retain(|_, m| !m.is_empty());
    }

    /// A live connection of `group` not in `skip`, taking turns.
    fn pick(&self, group: &str, skip: &[u64]) -> Option<Member> {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<&Member> = groups.get(group)?.iter().filter(|(c, tx)| !tx.is_closed() && !skip.contains(c)).collect();
        (!live.is_empty()).then(|| live[self.round_robin.fetch_add(1, Ordering::Relaxed) % live.len()].clone())
    }

    /// Connected producers per group (admin API).
    pub fn counts(&self) -> HashMap<String, usize> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(g, m)| (g.clone(), m.len())).collect()
    }
}

impl ProducerLinks for Producers {
    fn ask<'a>(&'a self, check: &'a CheckBack, skip: &'a [u64]) -> Pin<Box<dyn Future<Output = Asked> + Send + 'a>> {
        Box::pin(async move {
            let Some((conn, tx)) = self.pick(&check.producer_group, skip) else { return Asked::NoProducer };
            let m = check.message.clone();
            let req = Request::CheckTransaction(CheckTransactionRequest {
                producer_group: check.producer_group.clone(),
                log_offset: check.log_offset,
                checks: check.checks,
                topic: m.topic.clone(),
                queue_id: m.queue_id,
                message: crate::wire::from_store(m).message,
            });
            let frame = OutFrame { kind: Kind::Request, request_id: 0, code: Op::CheckTransaction as u16, parts: req.encode_parts() };
            // A producer that is not reading is skipped for the rest of the pass.
            match tokio::time::timeout(CHECK_SEND_TIMEOUT, tx.send(frame)).await {
                Ok(Ok(())) => Asked::Sent,
                _ => Asked::Stalled(conn),
            }
        })
    }

    fn counts(&self) -> HashMap<String, usize> {
        Producers::counts(self)
    }
}
