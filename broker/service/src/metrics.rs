//! The broker's Prometheus metrics that count events as they happen: messages and bytes in and
//! out, requests and their latency per protocol and operation, connections, long polls, the
//! group append, log fsyncs, retries and dead letters, replication waits, recovery. Named by Prometheus's
//! conventions (`_total`, `_seconds`, `_bytes`) through `prometheus-client`; the admin API's
//! `GET /metrics` renders them after the gauges it reads from the engine at scrape time.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Latency buckets: 20 µs doubling to ~10 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_02, 2.0, 20))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub topic: String,
    /// Empty for a pull outside any group.
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `native` (and `grpc`, `kafka` as those front ends come).
    pub protocol: &'static str,
    pub op: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub protocol: &'static str,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

/// Counters, gauges and histograms, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub messages_in: Family<TopicLabels, Counter>,
    pub bytes_in: Family<TopicLabels, Counter>,
    pub messages_out: Family<DeliveryLabels, Counter>,
    pub bytes_out: Family<DeliveryLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    pub connections: Family<ProtocolLabels, Gauge>,
    pub long_polls_waiting: Gauge,
    pub append_seconds: Histogram,
    pub append_group_sends: Histogram,
    pub log_fsync_seconds: Histogram,
    pub retries: Family<GroupLabels, Counter>,
    pub dead_letters: Family<GroupLabels, Counter>,
    pub replication_wait_seconds: Histogram,
    pub recovery_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let messages_in = Family::<TopicLabels, Counter>::default();
        registry.register("wasmq_messages_in", "Messages stored, by topic", messages_in.clone());
        let bytes_in = Family::<TopicLabels, Counter>::default();
        registry.register_with_unit("wasmq_in", "Message body bytes stored, by topic", Unit::Bytes, bytes_in.clone());
        let messages_out = Family::<DeliveryLabels, Counter>::default();
        registry.register("wasmq_messages_out", "Messages delivered by pulls, by topic and group", messages_out.clone());
        let bytes_out = Family::<DeliveryLabels, Counter>::default();
        registry.register_with_unit(
            "wasmq_out",
            "Message body bytes delivered by pulls, by topic and group",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("wasmq_requests", "Requests answered, by protocol, operation and outcome", requests.clone());
        let request_seconds = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register_with_unit(
            "wasmq_request_duration",
            "Time from a request read to its answer queued, by protocol and operation",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let connections = Family::<ProtocolLabels, Gauge>::default();
        registry.register("wasmq_connections", "Open client connections, by protocol", connections.clone());
        let long_polls_waiting = Gauge::default();
        registry.register("wasmq_long_polls_waiting", "Pulls waiting for a message", long_polls_waiting.clone());
        let append_seconds = latency();
        registry.register_with_unit(
            "wasmq_store_append_duration",
            "One group append (log and consume queues)",
            Unit::Seconds,
            append_seconds.clone(),
        );
        let append_group_sends = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register("wasmq_store_append_group_sends", "Sends appended together by one group append", append_group_sends.clone());
        let log_fsync_seconds = latency();
        registry.register_with_unit(
            "wasmq_store_fsync_duration",
            "One fsync of the commit log (flush)",
            Unit::Seconds,
            log_fsync_seconds.clone(),
        );
        let retries = Family::<GroupLabels, Counter>::default();
        registry.register("wasmq_retries", "Messages handed back for a later retry, by group", retries.clone());
        let dead_letters = Family::<GroupLabels, Counter>::default();
        registry.register("wasmq_dead_letters", "Messages moved to a dead-letter topic, by group", dead_letters.clone());
        let replication_wait_seconds = latency();
        registry.register_with_unit(
            "wasmq_replication_wait",
            "Time a send waited for its slaves under synchronous replication",
            Unit::Seconds,
            replication_wait_seconds.clone(),
        );
        let recovery_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "wasmq_recovery",
            "How long the store's recovery took at start",
            Unit::Seconds,
            recovery_seconds.clone(),
        );
        Self {
            registry,
            messages_in,
            bytes_in,
            messages_out,
            bytes_out,
            requests,
            request_seconds,
            connections,
            long_polls_waiting,
            append_seconds,
            append_group_sends,
            log_fsync_seconds,
            retries,
            dead_letters,
            replication_wait_seconds,
            recovery_seconds,
        }
    }
}

/// Handles on one operation's request counters and histogram, for a front end to keep instead of
/// looking them up per request.
#[derive(Debug, Clone)]
pub struct OpMetrics {
    ok: Counter,
    error: Counter,
    seconds: Histogram,
}

impl OpMetrics {
    /// A request answered after `took`.
    pub fn record(&self, ok: bool, took: Duration) {
        if ok { &self.ok } else { &self.error }.inc();
        self.seconds.observe(took.as_secs_f64());
    }
}

impl Metrics {
    /// Handles on `protocol`'s `op` requests.
    #[must_use]
    pub fn op(&self, protocol: &'static str, op: &'static str) -> OpMetrics {
        // One statement each: `get_or_create` holds the family's read lock until its guard drops,
        // and creating the next label set takes the write lock.
        let ok = self.requests.get_or_create(&RequestLabels { protocol, op, outcome: "ok" }).clone();
        let error = self.requests.get_or_create(&RequestLabels { protocol, op, outcome: "error" }).clone();
        let seconds = self.request_seconds.get_or_create(&OpLabels { protocol, op }).clone();
        OpMetrics { ok, error, seconds }
    }

    /// A request of `protocol` answered after `took`.
    pub fn request(&self, protocol: &'static str, op: &'static str, ok: bool, took: Duration) {
        self.requests.get_or_create(&RequestLabels { protocol, op, outcome: if ok { "ok" } else { "error" } }).inc();
        self.request_seconds.get_or_create(&OpLabels { protocol, op }).observe(took.as_secs_f64());
    }

    /// `messages` of `bytes` body bytes stored on `topic`.
    pub(crate) fn stored(&self, topic: &str, messages: u64, bytes: u64) {
        let labels = TopicLabels { topic: topic.to_owned() };
        self.messages_in.get_or_create(&labels).inc_by(messages);
        self.bytes_in.get_or_create(&labels).inc_by(bytes);
    }

    /// The text exposition (OpenMetrics, ending with `# EOF`).
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handles for an operation whose label sets do not exist yet (a deadlock once: the first
    /// lookup's read lock held while the second created its label set).
    #[test]
    fn handles_for_a_new_operation_are_made_without_deadlock() {
        let m = Metrics::default();
        let op = m.op("native", "pull");
        op.record(true, Duration::from_millis(1));
        op.record(false, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("wasmq_requests_total{protocol=\"native\",op=\"pull\",outcome=\"error\"} 1"), "{text}");
    }

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::default();
        m.stored("orders", 3, 300);
        m.request("native", "send", true, Duration::from_micros(50));
        let text = m.render();
        assert!(text.contains("wasmq_messages_in_total{topic=\"orders\"} 3"), "{text}");
        assert!(text.contains("wasmq_in_bytes_total{topic=\"orders\"} 300"), "{text}");
        assert!(text.contains("wasmq_requests_total{protocol=\"native\",op=\"send\",outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("wasmq_request_duration_seconds_count{protocol=\"native\",op=\"send\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
