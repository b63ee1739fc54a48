//! Producer connections by producer group, for transaction check-backs: the native front end's
//! [`ProducerLinks`]. A check-back carries the half message, so it goes only to a connection
//! whose user may produce to the message's topic.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use wasmq_protocol::{CheckTransactionRequest, Kind, Op, OutFrame, Request};
use wasmq_service::{Asked, CHECK_SEND_TIMEOUT, CheckBack, Identity, ProducerLinks, Security};

/// A producer group's connection: its id, its outbound frames and who logged in on it.
type Member = (u64, mpsc::Sender<OutFrame>, Identity);

/// Connections of producer groups, to send check-backs to: any live member may answer.
#[derive(Debug)]
pub struct Producers {
    next_conn: AtomicU64,
    round_robin: AtomicUsize,
    groups: Mutex<HashMap<String, Vec<Member>>>,
    security: Arc<Security>,
}

impl Producers {
    /// Producer links whose check-backs go only to users `security` allows to produce to the
    /// half message's topic.
    #[must_use]
    pub fn new(security: Arc<Security>) -> Self {
        Self { next_conn: AtomicU64::new(0), round_robin: AtomicUsize::new(0), groups: Mutex::default(), security }
    }

    /// A new connection id.
    pub fn connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Records that connection `conn` (logged in as `who`) belongs to producer `group`; true if
    /// it is new there.
    pub fn register(&self, conn: u64, group: &str, tx: &mpsc::Sender<OutFrame>, who: &Identity) -> bool {
        if group.is_empty() {
            return false;
        }
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let members = groups.entry(group.to_owned()).or_default();
        if members.iter().any(|(c, _, _)| *c == conn) {
            return false;
        }
        members.push((conn, tx.clone(), who.clone()));
        true
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, conn: u64) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for members in groups.values_mut() {
            members.retain(|(c, _, _)| *c != conn);
        }
        groups.retain(|_, m| !m.is_empty());
    }

    /// A live connection of `group` not in `skip` whose user may produce to `topic`, taking
    /// turns.
    fn pick(&self, group: &str, topic: &str, skip: &[u64]) -> Option<Member> {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let resource = wasmq_service::topic_resource(topic);
        let live: Vec<&Member> = groups
            .get(group)?
            .iter()
            .filter(|(c, tx, who)| {
                !tx.is_closed() && !skip.contains(c) && self.security.authorize(who, wasmq_service::Action::Produce, &resource).is_ok()
            })
            .collect();
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
            let Some((conn, tx, _)) = self.pick(&check.producer_group, &check.message.topic, skip) else { return Asked::NoProducer };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A check-back carries the half message: a member of the producer group whose user may not
    /// produce to the message's topic is never picked, even as the only one.
    #[test]
    fn check_backs_go_only_to_users_allowed_the_topic() {
        let security = Arc::new(Security::in_memory());
        security.bootstrap(Some("admin-password-1")).unwrap();
        security.create_user("app", "app-password-12", &[]).unwrap();
        security.create_user("spy", "spy-password-12", &[]).unwrap();
        let allow = |user: &str, topic: &str| allow_produce(&security, user, topic);
        allow("app", "orders");
        allow("spy", "elsewhere");
        let producers = Producers::new(Arc::clone(&security));
        let (tx, _rx) = mpsc::channel(4);
        let (spy, app) = (producers.connection_id(), producers.connection_id());
        producers.register(spy, "pg", &tx, &Identity::User("spy".into()));
        assert!(producers.pick("pg", "orders", &[]).is_none(), "the spy alone is not asked");
        producers.register(app, "pg", &tx, &Identity::User("app".into()));
        for _ in 0..4 {
            assert_eq!(producers.pick("pg", "orders", &[]).map(|m| m.0), Some(app));
        }
        assert_eq!(producers.pick("pg", "elsewhere", &[]).map(|m| m.0), Some(spy));
    }

    fn allow_produce(security: &Security, user: &str, topic: &str) {
        let policy = wasmq_service::Policy {
            subject: wasmq_service::Subject::User(user.into()),
            resource: wasmq_service::Pattern::parse(&format!("topic:{topic}")).unwrap(),
            actions: vec![wasmq_service::Action::Produce],
            effect: wasmq_service::Effect::Allow,
        };
        security.add_policy(policy).unwrap();
    }
}
