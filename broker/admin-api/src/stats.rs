//! Figures over time for the console's charts: every few seconds the broker samples each
//! topic's message count and each group's lag into a ring buffer (ten minutes' worth).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmq_engine::Engine;

use crate::now_ms;

/// How often figures are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept (ten minutes at the interval).
pub const SAMPLES_MAX: usize = 120;
/// Most topics and groups followed (the first by name); the rest have no history.
pub const FOLLOWED_MAX: usize = 1_000;

#[derive(Debug, Clone)]
struct Sample {
    at_ms: u64,
    /// Topic → messages ever stored (sum of its queues' max offsets).
    topics: BTreeMap<Arc<str>, u64>,
    /// Group → messages not yet committed, over its committed queues.
    groups: BTreeMap<Arc<str>, u64>,
}

/// The ring buffer.
#[derive(Debug, Default)]
pub struct Stats {
    samples: Mutex<VecDeque<Sample>>,
}

impl Stats {
    /// Takes one sample now.
    pub fn sample(&self, engine: &Engine) {
        let store = engine.store();
        let topics = engine
            .topics()
            .into_iter()
            .filter(|(t, _)| !wasmq_engine::is_internal_topic(t))
            .take(FOLLOWED_MAX)
            .map(|(t, c)| {
                let total = (0..c.queues).map(|q| store.queue_bounds(&t, q).1).sum();
                (Arc::from(t.as_str()), total)
            })
            .collect();
        let groups = engine
            .offsets()
            .groups
            .into_iter()
            .take(FOLLOWED_MAX)
            .map(|(g, topics)| {
                let lag = topics
                    .iter()
                    .flat_map(|(t, qs)| qs.iter().map(move |(q, committed)| store.queue_bounds(t, *q).1.saturating_sub(*committed)))
                    .sum();
                (Arc::from(g.as_str()), lag)
            })
            .collect();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() >= SAMPLES_MAX {
            samples.pop_front();
        }
        samples.push_back(Sample { at_ms: now_ms(), topics, groups });
    }

    /// A topic's message rate between samples: (sample time, messages per second).
    pub fn topic_rate(&self, topic: &str) -> Vec<(u64, f64)> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .filter_map(|(a, b)| {
                let (x, y) = (a.topics.get(topic)?, b.topics.get(topic)?);
                let secs = (b.at_ms.saturating_sub(a.at_ms)).max(1) as f64 / 1000.0;
                Some((b.at_ms, y.saturating_sub(*x) as f64 / secs))
            })
            .collect()
    }

    /// A group's lag at each sample: (sample time, messages not yet committed).
    pub fn group_lag(&self, group: &str) -> Vec<(u64, u64)> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.iter().filter_map(|s| Some((s.at_ms, *s.groups.get(group)?))).collect()
    }
}

/// Samples every [`SAMPLE_INTERVAL`] until `stop`.
pub async fn sampler(stats: Arc<Stats>, engine: Arc<Engine>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let (s, e) = (Arc::clone(&stats), Arc::clone(&engine));
                let _ = tokio::task::spawn_blocking(move || s.sample(&e)).await;
            }
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_lag_from_samples() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = wasmq_store::Store::open(wasmq_store::StoreConfig::small_for_tests(dir.path().join("s"))).unwrap();
        let engine = Engine::open(Arc::new(store), dir.path().join("c"), "b", Arc::new(wasmq_store::SystemClock)).unwrap();
        engine.create_topic("t", 2).unwrap();
        let stats = Stats::default();
        stats.sample(&engine);
        let msg = || wasmq_store::NewMessage { body: bytes::Bytes::from_static(b"x"), ..Default::default() };
        engine.send("t", Some(0), vec![msg(); 10]).unwrap();
        engine.send("t", Some(1), vec![msg(); 10]).unwrap();
        engine.commit_offset("g", "t", 0, 4).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        stats.sample(&engine);
        let rate = stats.topic_rate("t");
        assert_eq!(rate.len(), 1);
        assert!(rate[0].1 > 0.0, "{rate:?}");
        assert_eq!(stats.group_lag("g").last().map(|(_, l)| *l), Some(6), "committed queues only");
        assert!(stats.topic_rate("%HALF%").is_empty());
        for _ in 0..SAMPLES_MAX + 5 {
            stats.sample(&engine);
        }
        assert_eq!(stats.group_lag("g").len(), SAMPLES_MAX, "a ring");
    }
}
