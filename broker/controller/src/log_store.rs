//! The controller's Raft log and vote on disk, in a redb database: every append, vote and
//! truncation is committed (fsync) before openraft is told it is done, so a controller node that
//! is killed keeps every entry it acknowledged to its leader and every vote it granted.

// openraft's storage traits return its `StorageError`, a large value; the helpers here return it
// too rather than box it and convert back.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableTable, TableDefinition};

use crate::raft::{NodeId, TypeConfig};

/// Log entries by index (JSON).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The vote, the committed log id and the last purged log id (JSON), by name.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// The log of one controller node (cheap to clone: one database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

impl LogStore {
    /// Opens (or creates) the log in `path`.
    ///
    /// # Errors
    /// The database cannot be opened or its tables created (the text names the file).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let open = || -> std::result::Result<Database, redb::Error> {
            let db = Database::create(path)?;
            let tx = db.begin_write()?;
            tx.open_table(LOG)?;
            tx.open_table(META)?;
            tx.commit()?;
            Ok(db)
        };
        let db = open().map_err(|e| std::io::Error::other(format!("the controller's Raft log {}: {e}", path.display())))?;
        Ok(Self { db: Arc::new(db) })
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(read_err),
        }
    }

    fn set_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let tx = self.db.begin_write().map_err(write_err)?;
        tx.open_table(META).map_err(write_err)?.insert(key, bytes.as_slice()).map_err(write_err)?;
        tx.commit().map_err(write_err)
    }

    /// Removes the entries with indexes in `range`.
    fn remove(&self, range: (Bound<u64>, Bound<u64>), purged: Option<&LogId<NodeId>>) -> Result<()> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut log = tx.open_table(LOG).map_err(write_err)?;
            let keys: Vec<u64> = log
                .range(range)
                .map_err(write_err)?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()
                .map_err(write_err)?;
            for k in keys {
                log.remove(k).map_err(write_err)?;
            }
            if let Some(p) = purged {
                let bytes = serde_json::to_vec(p).map_err(write_err)?;
                tx.open_table(META).map_err(write_err)?.insert(PURGED, bytes.as_slice()).map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry<TypeConfig>>> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let log = tx.open_table(LOG).map_err(read_err)?;
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let mut out = Vec::new();
        for r in log.range(bounds).map_err(read_err)? {
            let (_, v) = r.map_err(read_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let purged: Option<LogId<NodeId>> = self.meta(PURGED)?;
        let tx = self.db.begin_read().map_err(read_err)?;
        let log = tx.open_table(LOG).map_err(read_err)?;
        let last = match log.last().map_err(read_err)? {
            Some((_, v)) => Some(serde_json::from_slice::<Entry<TypeConfig>>(v.value()).map_err(read_err)?.log_id),
            None => purged,
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        self.set_meta(VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        self.set_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut log = tx.open_table(LOG).map_err(write_err)?;
            for e in entries {
                let bytes = serde_json::to_vec(&e).map_err(write_err)?;
                log.insert(e.log_id.index, bytes.as_slice()).map_err(write_err)?;
            }
        }
        // Committed with redb's default durability: on disk before the callback.
        let done = tx.commit().map_err(|e| std::io::Error::other(e.to_string()));
        let failed = done.as_ref().err().map(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(done);
        match failed {
            Some(e) => Err(write_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.remove((Bound::Included(log_id.index), Bound::Unbounded), None)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.remove((Bound::Unbounded, Bound::Included(log_id.index)), Some(&log_id))
    }
}

#[cfg(test)]
mod tests {
    use openraft::StorageError;
    use openraft::testing::{StoreBuilder, Suite};

    use super::LogStore;
    use crate::raft::{NodeId, StateMachine, TypeConfig};

    struct OnDisk;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
            let sm = StateMachine::open(dir.path()).unwrap();
            Ok((dir, log, sm))
        }
    }

    /// openraft's own suite of storage checks (log state, votes, appends, truncation, purge,
    /// snapshots, applying) against the on-disk log and the state machine.
    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(OnDisk).unwrap();
    }
}
