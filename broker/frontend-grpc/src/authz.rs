//! What each RPC of `apache.rocketmq.v2.MessagingService` needs, with the identity `auth.rs`
//! put in the request's extensions. [`RPCS`] lists every RPC with its decision; a test checks
//! that it names exactly the RPCs of the vendored API, so a new RPC cannot be served without
//! one. A refusal is a RocketMQ `FORBIDDEN` status inside the answer, as other business
//! outcomes are.

use tonic::Request;
use wasmq_service::{Action, Asker, Identity, Resource, topic_resource};

use crate::pb;

/// Where a need's resource comes from in an RPC's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The topic it names (each message's, for a send).
    Topic,
    /// The consumer group it names.
    Group,
}

/// Every RPC and what it needs (consumers need `consume` on their group and on the topic).
/// Telemetry needs what the Settings it carries need ([`settings`]: a consumer's group and
/// topics, a producer's topics); Heartbeat needs its group only when it names one; the RPCs not
/// served, and NotifyClientTermination (which ends the client's own registration), need nothing.
pub const RPCS: &[(&str, &[(Action, On)])] = &[
    ("QueryRoute", &[(Action::Describe, On::Topic)]),
    ("Heartbeat", &[(Action::Consume, On::Group)]),
    ("SendMessage", &[(Action::Produce, On::Topic)]),
    ("QueryAssignment", &[(Action::Consume, On::Group), (Action::Consume, On::Topic)]),
    ("ReceiveMessage", &[(Action::Consume, On::Group), (Action::Consume, On::Topic)]),
    ("AckMessage", &[(Action::Consume, On::Group), (Action::Consume, On::Topic)]),
    ("ForwardMessageToDeadLetterQueue", &[(Action::Consume, On::Group), (Action::Consume, On::Topic)]),
    ("PullMessage", &[]),
    ("UpdateOffset", &[]),
    ("GetOffset", &[]),
    ("QueryOffset", &[]),
    ("EndTransaction", &[(Action::Produce, On::Topic)]),
    ("Telemetry", &[]),
    ("NotifyClientTermination", &[]),
    ("ChangeInvisibleDuration", &[(Action::Consume, On::Group), (Action::Consume, On::Topic)]),
    ("RecallMessage", &[(Action::Produce, On::Topic)]),
    ("SyncLiteSubscription", &[]),
];

/// Who sent the request, from where (anonymous when `auth.rs` put no one in it).
pub(crate) fn who<T>(req: &Request<T>) -> Asker {
    req.extensions().get::<Asker>().cloned().unwrap_or_else(|| Asker::new(Identity::Anonymous, None, crate::PROTOCOL))
}

fn name(r: Option<&pb::Resource>) -> &str {
    r.map_or("", |r| r.name.as_str())
}

pub(crate) fn group(g: Option<&pb::Resource>) -> (Action, Resource) {
    (Action::Consume, Resource::Group(name(g).to_owned()))
}

pub(crate) fn topic(action: Action, t: Option<&pb::Resource>) -> (Action, Resource) {
    (action, topic_resource(name(t)))
}

/// What a client's Settings (on its Telemetry stream) need.
pub(crate) fn settings(s: &pb::Settings) -> Vec<(Action, Resource)> {
    match &s.pub_sub {
        Some(pb::settings::PubSub::Subscription(sub)) => std::iter::once(group(sub.group.as_ref()))
            .chain(sub.subscriptions.iter().map(|e| topic(Action::Consume, e.topic.as_ref())))
            .collect(),
        Some(pb::settings::PubSub::Publishing(p)) => p.topics.iter().map(|t| topic(Action::Produce, Some(t))).collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    /// The RPCs of the vendored API, read from its `.proto`: the table must name each once.
    #[test]
    fn every_rpc_has_a_decision() {
        let proto = include_str!("../../../third_party/rocketmq-apis/apache/rocketmq/v2/service.proto");
        let mut defined: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split(|c: char| c == '(' || c.is_whitespace()).next().unwrap_or_default())
            .collect();
        defined.sort_unstable();
        let mut decided: Vec<&str> = super::RPCS.iter().map(|(rpc, _)| *rpc).collect();
        decided.sort_unstable();
        assert!(defined.len() >= 17, "{defined:?}");
        assert_eq!(decided, defined, "RPCS must list every RPC of MessagingService, once");
    }
}
