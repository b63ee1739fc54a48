//! What each native request needs: one (action, resource) list per op, from an exhaustive
//! match — a new op does not compile without its decision. A consumer needs `consume` on its
//! group and on the topic; a group's retry and dead-letter topics are the group's
//! ([`wasmq_service::topic_resource`]).

use wasmq_protocol::Request;
use wasmq_service::{Action, Resource, topic_resource};

/// What `req` needs. Empty for Hello (it authenticates), for EndTransaction (the service checks
/// the half message's topic: [`wasmq_service::Service::authorize_end_transaction`]) and for the
/// requests a broker refuses whoever asks (name-server, controller and broker-to-client ops).
#[must_use]
pub fn required(req: &Request) -> Vec<(Action, Resource)> {
    use Action::{Admin, Consume, Describe, Produce};
    let group = |g: &str| (Consume, Resource::Group(g.to_owned()));
    let topic = |a: Action, t: &str| (a, topic_resource(t));
    match req {
        Request::Hello(_)
        | Request::EndTransaction(_)
        | Request::CheckTransaction(_)
        | Request::RegisterBroker(_)
        | Request::GetRoute(_)
        | Request::GetCluster
        | Request::Controller(_) => Vec::new(),
        Request::Send(s) => vec![topic(Produce, &s.topic)],
        Request::Pull(p) => {
            let mut v = vec![topic(Consume, &p.topic)];
            v.extend(p.group.as_deref().map(group));
            v
        }
        Request::Route(r) => vec![topic(Describe, &r.topic)],
        Request::OffsetCommit(c) => vec![group(&c.group), topic(Consume, &c.topic)],
        Request::OffsetQuery(q) => vec![(Describe, Resource::Group(q.group.clone())), topic(Describe, &q.topic)],
        Request::Heartbeat(h) => h.consumer_groups.iter().map(|g| group(g)).collect(),
        Request::GroupHeartbeat(h) => {
            std::iter::once(group(&h.group)).chain(h.subscriptions.iter().map(|(t, _)| topic(Consume, t))).collect()
        }
        Request::GroupLeave(l) => vec![group(&l.group)],
        Request::GroupCommit(c) => vec![group(&c.group), topic(Consume, &c.topic)],
        Request::SendBack(b) => vec![group(&b.group), topic(Consume, &b.topic)],
        Request::LockQueue(l) => vec![group(&l.group), topic(Consume, &l.topic)],
        // A slave's replication links: the cluster's own.
        Request::ReplicaFetch(_) | Request::ReplicaMeta(_) => vec![(Admin, Resource::Cluster)],
    }
}
