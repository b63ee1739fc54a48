//! The engine on a slave: read-only (its log arrives from the master through the store's
//! `append_raw`), with the master's topics and consumer offsets adopted, and the offsets
//! committed on it (while consumers read from it) kept to hand back to the master.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::engine::{Engine, EngineError, GroupSettings, lock};
use crate::offsets::OffsetTable;
use crate::topics::{self, TopicConfig};

impl Engine {
    /// Makes this engine a slave's: every write is refused with `why` (which names the master).
    pub fn set_read_only(&self, why: impl Into<String>) {
        *lock(&self.read_only) = Some(why.into());
    }

    /// Marks this engine a slave's: its log arrives from the master, so the transactions and
    /// scheduled messages in it are not tracked as they arrive, and it keeps the recovery
    /// watermarks it has on disk (from when it was last master, or none) instead of saving its
    /// own: a watermark it wrote would pass halves and scheduled messages it never saw, and
    /// once elected it would not find them. Elected, it opens again and scans from those.
    pub fn set_follower(&self) {
        self.follows.store(true, Ordering::Release);
    }

    /// Takes writes again (a fenced master that the controller confirms as master).
    pub fn clear_read_only(&self) {
        *lock(&self.read_only) = None;
    }

    /// Why writes are refused, on a slave.
    pub fn read_only(&self) -> Option<String> {
        lock(&self.read_only).clone()
    }

    /// The topic registry, for a slave to adopt.
    pub fn topics_json(&self) -> String {
        serde_json::to_string(&*self.snapshot()).unwrap_or_default()
    }

    /// On a slave: takes the master's topic registry. Topics the master deleted go here too.
    ///
    /// # Errors
    /// Bad JSON, or the registry could not be saved.
    pub fn adopt_topics(&self, json: &str) -> Result<(), EngineError> {
        let table: BTreeMap<String, TopicConfig> =
            serde_json::from_str(json).map_err(|e| EngineError::Invalid(format!("topics from the master: {e}")))?;
        let _w = lock(&self.topics.write);
        let old = self.snapshot();
        if *old == table {
            return Ok(());
        }
        topics::save_json(&self.topics.path, &table).map_err(|source| EngineError::Save { path: self.topics.path.clone(), source })?;
        *self.topics.map.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(table.clone());
        for gone in old.keys().filter(|t| !table.contains_key(*t)) {
            if let Err(e) = self.store.remove_topic(gone) {
                tracing::warn!(topic = gone, error = %e, "removing a topic the master deleted");
            }
            lock(&self.consumers.offsets).remove_topic(gone);
        }
        Ok(())
    }

    /// Consumer groups' settings, for a slave to adopt.
    pub fn group_settings_json(&self) -> String {
        serde_json::to_string(&*lock(&self.consumers.settings)).unwrap_or_default()
    }

    /// On a slave: takes the master's group settings (a group the master deleted goes here
    /// too), so that a slave promoted to master hands out FIFO groups' messages as the master
    /// did.
    ///
    /// # Errors
    /// Bad JSON, or the settings could not be saved.
    pub fn adopt_group_settings(&self, json: &str) -> Result<(), EngineError> {
        let table: BTreeMap<String, GroupSettings> =
            serde_json::from_str(json).map_err(|e| EngineError::Invalid(format!("group settings from the master: {e}")))?;
        let mut all = lock(&self.consumers.settings);
        if *all == table {
            return Ok(());
        }
        topics::save_json(&self.consumers.settings_path, &table)
            .map_err(|source| EngineError::Save { path: self.consumers.settings_path.clone(), source })?;
        *all = table;
        Ok(())
    }

    /// On a slave: the offsets committed here since they were last handed to the master.
    pub fn local_commits(&self) -> OffsetTable {
        lock(&self.consumers.local_commits).clone()
    }

    /// On a slave: the master took `handed` (merged) and answered with its whole table, which
    /// becomes this one's; commits made here meanwhile are kept on top, to hand over next time.
    ///
    /// # Errors
    /// Bad JSON from the master.
    pub fn adopt_offsets(&self, json: &str, handed: &OffsetTable) -> Result<(), EngineError> {
        let mut table: OffsetTable =
            serde_json::from_str(json).map_err(|e| EngineError::Invalid(format!("offsets from the master: {e}")))?;
        let mut local = lock(&self.consumers.local_commits);
        for (g, topics) in &handed.groups {
            for (t, queues) in topics {
                for (q, o) in queues {
                    if local.get(g, t, *q) == Some(*o)
                        && let Some(ts) = local.groups.get_mut(g).and_then(|ts| ts.get_mut(t))
                    {
                        ts.remove(q);
                    }
                }
            }
        }
        local.groups.retain(|_, ts| {
            ts.retain(|_, qs| !qs.is_empty());
            !ts.is_empty()
        });
        merge_max(&mut table, &local);
        drop(local);
        *lock(&self.consumers.offsets) = table;
        self.consumers.offsets_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// On a master: takes offsets committed on a slave, keeping the larger of the two per
    /// queue (a consumer that read from the slave went forward; one that rewound did so here).
    ///
    /// # Errors
    /// Bad JSON.
    pub fn merge_offsets(&self, json: &str) -> Result<(), EngineError> {
        let theirs: OffsetTable = serde_json::from_str(json).map_err(|e| EngineError::Invalid(format!("offsets from a slave: {e}")))?;
        if theirs.groups.is_empty() {
            return Ok(());
        }
        merge_max(&mut lock(&self.consumers.offsets), &theirs);
        self.consumers.offsets_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// The offsets table as JSON (for a slave).
    pub fn offsets_json(&self) -> String {
        serde_json::to_string(&*lock(&self.consumers.offsets)).unwrap_or_default()
    }

    /// Records arrived from the master: long polls look again (which queues got them is the
    /// store's to know, so every waiter is woken).
    pub fn wake_all(&self) {
        let woken: Vec<_> = lock(&self.delivery.waiters).drain().flat_map(|(_, v)| v).collect();
        for w in woken {
            w.wake();
        }
    }
}

fn merge_max(into: &mut OffsetTable, from: &OffsetTable) {
    for (g, topics) in &from.groups {
        for (t, queues) in topics {
            for (q, o) in queues {
                if into.get(g, t, *q).is_none_or(|mine| mine < *o) {
                    into.set(g, t, *q, *o);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wasmq_store::{ManualClock, Store, StoreConfig};

    use crate::Engine;

    fn engine(dir: &std::path::Path) -> Engine {
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.join("store"))).unwrap();
        Engine::open(Arc::new(store), dir.join("config"), "b0", Arc::new(ManualClock::new(5))).unwrap()
    }

    #[test]
    fn a_slave_adopts_topics_and_offsets_and_hands_back_its_own_commits() {
        let (m, s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let master = engine(m.path());
        let slave = engine(s.path());
        slave.set_read_only("a slave of b0");
        master.create_topic("t", 2).unwrap();
        master.create_topic("gone", 1).unwrap();
        slave.adopt_topics(&master.topics_json()).unwrap();
        assert_eq!(slave.topic("t").map(|c| c.queues), Some(2));
        assert!(slave.create_topic("x", 1).is_err(), "a slave creates no topics");
        assert!(slave.send("t", Some(0), vec![wasmq_store::NewMessage::default()]).is_err(), "nor takes sends");
        master.delete_topic("gone").unwrap();
        slave.adopt_topics(&master.topics_json()).unwrap();
        assert!(slave.topic("gone").is_none());

        master.set_group_settings("fifo-group", crate::GroupSettings { fifo: true }).unwrap();
        master.set_group_settings("plain", crate::GroupSettings { fifo: false }).unwrap();
        slave.adopt_group_settings(&master.group_settings_json()).unwrap();
        assert!(slave.group_settings("fifo-group").fifo && !slave.group_settings("plain").fifo);
        master.delete_group("fifo-group").unwrap();
        slave.adopt_group_settings(&master.group_settings_json()).unwrap();
        assert!(!slave.group_settings("fifo-group").fifo, "the master's deletion reaches the slave");
        drop(slave);
        let slave = engine(s.path());
        assert!(!slave.group_settings("fifo-group").fifo && slave.groups().contains(&"plain".to_owned()), "kept in groups.json");
        slave.set_read_only("a slave of b0");

        master.commit_offset("g", "t", 0, 10).unwrap();
        slave.adopt_offsets(&master.offsets_json(), &Default::default()).unwrap();
        assert_eq!(slave.query_offset("g", "t", 0), Some(10));
        // The master is away; a consumer reads from the slave and commits there.
        slave.commit_offset("g", "t", 0, 15).unwrap();
        slave.commit_offset("g", "t", 1, 3).unwrap();
        let handed = slave.local_commits();
        master.merge_offsets(&serde_json::to_string(&handed).unwrap()).unwrap();
        assert_eq!((master.query_offset("g", "t", 0), master.query_offset("g", "t", 1)), (Some(15), Some(3)));
        slave.commit_offset("g", "t", 1, 4).unwrap(); // meanwhile
        slave.adopt_offsets(&master.offsets_json(), &handed).unwrap();
        assert_eq!(slave.query_offset("g", "t", 1), Some(4), "a commit made meanwhile is kept");
        assert_eq!(slave.local_commits().get("g", "t", 0), None, "handed over");
        assert_eq!(slave.local_commits().get("g", "t", 1), Some(4));
        master.commit_offset("g", "t", 0, 12).unwrap(); // a rewind on the master
        master.merge_offsets(&serde_json::to_string(&slave.local_commits()).unwrap()).unwrap();
        assert_eq!(master.query_offset("g", "t", 0), Some(12), "only what the slave saw committed is merged");
    }
}
