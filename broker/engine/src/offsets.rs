//! Consumer-group offsets: (group, topic, queue) → the next offset to consume. Kept in memory,
//! persisted as `offsets.json` by [`crate::Engine::persist_offsets`] (the broker calls it every
//! few seconds and at shutdown, as RocketMQ does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetTable {
    /// group → topic → queue id → offset.
    pub groups: BTreeMap<String, BTreeMap<String, BTreeMap<u32, u64>>>,
}

impl OffsetTable {
    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.groups.get(group)?.get(topic)?.get(&queue_id).copied()
    }

    pub fn set(&mut self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        self.groups.entry(group.to_owned()).or_default().entry(topic.to_owned()).or_default().insert(queue_id, offset);
    }

    pub fn remove_topic(&mut self, topic: &str) {
        for topics in self.groups.values_mut() {
            topics.remove(topic);
        }
    }
}
