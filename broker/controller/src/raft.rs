//! The controller's state machine under openraft: [`ControllerState`] applied in log order, its
//! snapshots on disk, and the Raft node built from them and a log store
//! ([`crate::log_store::LogStore`]).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use wasmq_controller_api::{Command, Outcome};

use crate::state::ControllerState;

openraft::declare_raft_types!(
    /// The controller's Raft types: commands in, outcomes out.
    pub TypeConfig:
        D = Command,
        R = Outcome,
);

pub use wasmq_controller_api::NodeId;

/// A controller node.
pub type Raft = openraft::Raft<TypeConfig>;

/// The state machine as a snapshot holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: ControllerState,
}

/// A snapshot as it is kept on disk: where it ends, and the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine of one controller node: the applied state in memory, the last snapshot in
/// `snapshot.json` (written to a temporary file, synced, then renamed). After a restart the state
/// is the snapshot's, and openraft applies the committed entries that follow it again.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    applied: RwLock<Applied>,
    snapshot: RwLock<Option<StoredSnapshot>>,
    path: PathBuf,
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// The state machine whose snapshots live in `dir`, starting from the last one there.
    ///
    /// # Errors
    /// A snapshot that cannot be read or decoded.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("snapshot.json");
        let (applied, snapshot) = match std::fs::read(&path) {
            Ok(bytes) => {
                let s: StoredSnapshot = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                let state: ControllerState = serde_json::from_slice(&s.data).map_err(std::io::Error::other)?;
                (Applied { last_applied: s.meta.last_log_id, membership: s.meta.last_membership.clone(), state }, Some(s))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Applied::default(), None),
            Err(e) => return Err(e),
        };
        Ok(Self { inner: Arc::new(Inner { applied: RwLock::new(applied), snapshot: RwLock::new(snapshot), path }) })
    }

    /// The state as applied so far on this node.
    pub async fn state(&self) -> ControllerState {
        self.inner.applied.read().await.state.clone()
    }

    async fn keep(&self, s: StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(&s).map_err(io_err)?;
        let (path, tmp) = (self.inner.path.clone(), self.inner.path.with_extension("json.tmp"));
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(io_err)?
        .map_err(io_err)?;
        *self.inner.snapshot.write().await = Some(s);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let a = self.inner.applied.read().await.clone();
        let data = serde_json::to_vec(&a.state).map_err(io_err)?;
        let snapshot_id = a.last_applied.map_or_else(|| "empty".to_owned(), |l| format!("{}-{}", l.leader_id, l.index));
        let meta = SnapshotMeta { last_log_id: a.last_applied, last_membership: a.membership, snapshot_id };
        self.keep(StoredSnapshot { meta: meta.clone(), data: data.clone() }).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let a = self.inner.applied.read().await;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut a = self.inner.applied.write().await;
        let mut out = Vec::new();
        for e in entries {
            a.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Outcome::Refused("no command".into()),
                EntryPayload::Normal(c) => a.state.apply(&c),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(e.log_id), m);
                    Outcome::Refused("no command".into())
                }
            });
        }
        Ok(out)
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state: ControllerState = serde_json::from_slice(&data).map_err(io_err)?;
        self.keep(StoredSnapshot { meta: meta.clone(), data }).await?;
        *self.inner.applied.write().await = Applied { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .inner
            .snapshot
            .read()
            .await
            .as_ref()
            .map(|s| Snapshot { meta: s.meta.clone(), snapshot: Box::new(Cursor::new(s.data.clone())) }))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;
    use std::time::Duration;

    use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::{BasicNode, Config};

    use super::*;
    use crate::log_store::LogStore;
    use wasmq_controller_api::{BrokerSet, Election};

    /// Nodes reach each other in process; a node out of the table is down.
    #[derive(Clone, Default)]
    struct Router(Arc<Mutex<BTreeMap<NodeId, Raft>>>);

    struct Conn {
        router: Router,
        target: NodeId,
    }

    impl Router {
        // The error type is the one openraft's network trait returns.
        #[allow(clippy::result_large_err)]
        fn get<E: std::error::Error>(&self, target: NodeId) -> Result<Raft, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
            let down = || Unreachable::new(&std::io::Error::other(format!("node {target} is down")));
            self.0.lock().unwrap().get(&target).cloned().ok_or_else(|| RPCError::Unreachable(down()))
        }
    }

    impl RaftNetworkFactory<TypeConfig> for Router {
        type Network = Conn;

        async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
            Conn { router: self.clone(), target }
        }
    }

    impl RaftNetwork<TypeConfig> for Conn {
        async fn append_entries(
            &mut self,
            rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
            let raft = self.router.get(self.target)?;
            raft.append_entries(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }

        async fn install_snapshot(
            &mut self,
            rpc: InstallSnapshotRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>> {
            let raft = self.router.get(self.target)?;
            raft.install_snapshot(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }

        async fn vote(
            &mut self,
            rpc: VoteRequest<NodeId>,
            _option: RPCOption,
        ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
            let raft = self.router.get(self.target)?;
            raft.vote(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }
    }

    async fn start(id: NodeId, dir: &Path, router: &Router) -> (Raft, StateMachine) {
        let config = Config { heartbeat_interval: 50, election_timeout_min: 200, election_timeout_max: 400, ..Default::default() };
        let log = LogStore::open(&dir.join("raft.redb")).unwrap();
        let sm = StateMachine::open(dir).unwrap();
        let raft = Raft::new(id, Arc::new(config.validate().unwrap()), router.clone(), log, sm.clone()).await.unwrap();
        router.0.lock().unwrap().insert(id, raft.clone());
        (raft, sm)
    }

    async fn leader(nodes: &[&Raft]) -> NodeId {
        let started = std::time::Instant::now();
        loop {
            let leaders: BTreeSet<NodeId> = nodes.iter().filter_map(|r| r.metrics().borrow().current_leader).collect();
            if let [one] = leaders.iter().copied().collect::<Vec<_>>()[..]
                && nodes.iter().any(|r| r.metrics().borrow().id == one)
            {
                return one;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no single leader among the live nodes: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn write(raft: &Raft, c: Command) -> Outcome {
        raft.client_write(c).await.unwrap().data
    }

    async fn converged(sms: &[&StateMachine], want: &BrokerSet) {
        let started = std::time::Instant::now();
        loop {
            let mut all = true;
            for sm in sms {
                all &= sm.state().await.sets.get("a") == Some(want);
            }
            if all {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the nodes never agreed on {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Three controller nodes: the leader's commands reach every node; with the leader down the
    /// other two elect one and go on; the old leader, started again from its own files, catches
    /// up — also from a snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_agree_survive_their_leader_and_recover_from_disk() {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let router = Router::default();
        let mut nodes = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            nodes.push(start(i as NodeId + 1, d.path(), &router).await);
        }
        let members: BTreeMap<NodeId, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(format!("node-{id}")))).collect();
        nodes[0].0.initialize(members).await.unwrap();
        let first = leader(&[&nodes[0].0, &nodes[1].0, &nodes[2].0]).await;
        let l = &nodes[first as usize - 1].0;
        for id in [0, 1, 2] {
            write(l, Command::Register { set: "a".into(), id, addr: format!("b{id}:7070") }).await;
        }
        let Outcome::Applied(now) =
            write(l, Command::AlterInSync { set: "a".into(), master: 0, epoch: 1, in_sync: [0, 1, 2].into() }).await
        else {
            panic!()
        };
        converged(&[&nodes[0].1, &nodes[1].1, &nodes[2].1], &now).await;
        l.trigger().snapshot().await.unwrap();
        l.wait(Some(Duration::from_secs(5)))
            .metrics(|m| m.snapshot.is_some() && m.snapshot == m.last_applied, "a snapshot of everything applied")
            .await
            .unwrap();

        // The leader goes down: the other two elect one and take commands.
        let (old, old_sm) = nodes.remove(first as usize - 1);
        router.0.lock().unwrap().remove(&first);
        old.shutdown().await.unwrap();
        drop((old, old_sm));
        // What its snapshot file holds is the state it had applied.
        let kept = StateMachine::open(dirs[first as usize - 1].path()).unwrap().state().await;
        assert_eq!(kept.sets.get("a"), Some(&now), "the snapshot on disk");
        let second = leader(&[&nodes[0].0, &nodes[1].0]).await;
        assert_ne!(second, first);
        let l = if nodes[0].0.metrics().borrow().id == second { &nodes[0].0 } else { &nodes[1].0 };
        let how = Election::Failover { log_ends: [(1, 100), (2, 150)].into() };
        let Outcome::Applied(now) = write(l, Command::Elect { set: "a".into(), epoch: 1, how }).await else { panic!() };
        assert_eq!((now.master, now.epoch), (Some(2), 2));

        // The old leader starts again from its files (its snapshot and its log), and catches up.
        let (back, back_sm) = start(first, dirs[first as usize - 1].path(), &router).await;
        converged(&[&nodes[0].1, &nodes[1].1, &back_sm], &now).await;
        back.shutdown().await.unwrap();
        for (r, _) in nodes {
            r.shutdown().await.unwrap();
        }
    }
}
