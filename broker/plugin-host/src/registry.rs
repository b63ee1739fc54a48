//! The broker's plugins: the registry of uploaded versions and attachments (persisted under
//! the data directory), and the live attachments as the engine's plugin traits
//! ([`wasmq_engine::Router`], [`wasmq_engine::KeySelector`], [`wasmq_engine::DeliveryFilter`]):
//! the engine applies their verdicts and failure policies.
//!
//! Layout: `plugins/modules/<sha256>.wasm` (the uploaded bytes, content-addressed),
//! `plugins/cache/` (compiled artifacts), `config/plugins.json` (versions and attachments).
//!
//! Hot swap: each send or pull takes the attachment's `Arc` once and uses it for the whole
//! batch; an attach replaces the `Arc` only after the new instance's `init` succeeded, so a
//! batch is judged by exactly one version and nothing is lost or evaluated twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmq_admin_types::{AttachPlugin, AttachmentView, PluginDetail, PluginStats, PluginVersion};
use wasmq_engine::{DeliveryFilter, FailurePolicy, KeySelector, PluginMessage, Router, Verdict};

use crate::{Attached, Attachment, Batch, BatchBuilder, CallError, Delivery, Fields, Limits, OrderingKey, Plugin, Role, Route, Runtime};
use crate::{field_names, parse_role, role_name};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Why an admin operation on plugins failed; maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    BadModule(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

impl PluginError {
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::BadModule(_) | Self::Invalid(_) => 400,
            Self::NotFound(_) => 404,
            Self::Io(_) => 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionRecord {
    name: String,
    version: u32,
    sha256: String,
    size: usize,
    label: String,
    roles: Vec<String>,
    needs: Vec<String>,
    uploaded_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AttachmentRecord {
    role: String,
    topic: String,
    group: Option<String>,
    plugin: String,
    version: u32,
    sha256: String,
    config: BTreeMap<String, String>,
    on_error: String,
    attached_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    versions: Vec<VersionRecord>,
    attachments: Vec<AttachmentRecord>,
}

/// A running attachment (or one whose module failed to load: then its policy decides alone).
#[derive(Debug)]
struct Live {
    record: AttachmentRecord,
    attached: Result<Attached, String>,
    policy: FailurePolicy,
    policy_applied: AtomicU64,
    /// The last call took longer than [`INLINE_CALL_MAX`] (or failed by its deadline), or
    /// there was none yet: the next runs with `block_in_place`, so the worker's other tasks
    /// move to another thread.
    slow: AtomicBool,
}

/// Calls that recently took at most this long run inline on the async worker: handing the
/// worker's tasks to another thread (`block_in_place`) costs more than such a call. A new
/// attachment must first show a fast call; one that turns slow blocks one worker for at most
/// one call (bounded by its deadline) before it runs aside again.
const INLINE_CALL_MAX: Duration = Duration::from_micros(500);

impl Live {
    fn new(record: AttachmentRecord, attached: Result<Attached, String>) -> Self {
        let policy = policy_of(&record.on_error);
        Self { record, attached, policy, policy_applied: AtomicU64::new(0), slow: AtomicBool::new(true) }
    }

    fn needs(&self) -> Fields {
        self.attached.as_ref().map_or(Fields::empty(), Attached::needs)
    }
}

/// The router and the ordering-key selector of a topic, taken once for a whole batch.
type SendPath = (Option<Arc<Live>>, Option<Arc<Live>>);

#[derive(Debug, Default, Clone)]
struct TopicPlugins {
    router: Option<Arc<Live>>,
    key: Option<Arc<Live>>,
    filters: HashMap<String, Arc<Live>>,
}

impl TopicPlugins {
    fn is_empty(&self) -> bool {
        self.router.is_none() && self.key.is_none() && self.filters.is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Compiled but unattached versions kept in memory (others load again from the artifact cache).
const LOADED_UNATTACHED_MAX: usize = 8;

/// The broker's plugins. Admin operations are serialized; the hot path takes one read lock.
pub struct PluginRegistry {
    runtime: Runtime,
    modules_dir: PathBuf,
    registry_path: PathBuf,
    registry: Mutex<Registry>,
    /// Compiled versions: every attached one (shared by its attachments) and a few others.
    loaded: Mutex<HashMap<String, Plugin>>,
    live: RwLock<HashMap<String, TopicPlugins>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").field("modules_dir", &self.modules_dir).finish_non_exhaustive()
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn io(e: impl std::fmt::Display) -> PluginError {
    PluginError::Io(e.to_string())
}

impl PluginRegistry {
    /// Opens the registry under `data_dir` and re-attaches every saved attachment. A module
    /// that no longer loads is logged and its attachment kept in its failure policy's hands.
    ///
    /// # Errors
    /// The plugin runtime cannot start, or the registry file is unreadable.
    pub fn open(data_dir: &Path, limits: Limits) -> anyhow::Result<Self> {
        let modules_dir = data_dir.join("plugins").join("modules");
        std::fs::create_dir_all(&modules_dir)?;
        let runtime = Runtime::new(limits, Some(data_dir.join("plugins").join("cache")))?;
        let registry_path = data_dir.join("config").join("plugins.json");
        let registry: Registry = match std::fs::read(&registry_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| anyhow::anyhow!("{}: {e}", registry_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", registry_path.display())),
        };
        let this = Self {
            runtime,
            modules_dir,
            registry_path,
            registry: Mutex::new(Registry::default()),
            loaded: Mutex::default(),
            live: RwLock::default(),
        };
        for rec in &registry.attachments {
            let attached = this.load_sha(&rec.sha256).map_err(|e| e.to_string()).and_then(|p| {
                let role = parse_role(&rec.role).ok_or_else(|| format!("unknown role {}", rec.role))?;
                Attached::new(p, attachment_of(role, rec), policy_of(&rec.on_error)).map_err(|e| e.to_string())
            });
            if let Err(e) = &attached {
                tracing::error!(plugin = %rec.plugin, version = rec.version, topic = %rec.topic, group = ?rec.group, "plugin attachment not running ({e}); its failure policy ({}) applies", rec.on_error);
            }
            this.install(Live::new(rec.clone(), attached));
        }
        *lock(&this.registry) = registry;
        Ok(this)
    }

    fn load_sha(&self, sha256: &str) -> Result<Plugin, PluginError> {
        if let Some(p) = lock(&self.loaded).get(sha256) {
            return Ok(p.clone());
        }
        let path = self.modules_dir.join(format!("{sha256}.wasm"));
        let bytes = std::fs::read(&path).map_err(|e| PluginError::Io(format!("{}: {e}", path.display())))?;
        let p = self.runtime.load(&bytes).map_err(|e| PluginError::BadModule(e.to_string()))?;
        lock(&self.loaded).insert(sha256.to_owned(), p.clone());
        Ok(p)
    }

    fn install(&self, live: Live) {
        let live = Arc::new(live);
        let mut map = self.live.write().unwrap_or_else(PoisonError::into_inner);
        let t = map.entry(live.record.topic.clone()).or_default();
        match (live.record.role.as_str(), &live.record.group) {
            ("router", _) => t.router = Some(live),
            ("ordering-key", _) => t.key = Some(live),
            (_, Some(g)) => {
                t.filters.insert(g.clone(), live);
            }
            _ => {}
        }
    }

    fn save(&self, registry: &Registry) -> Result<(), PluginError> {
        let bytes = serde_json::to_vec_pretty(registry).map_err(io)?;
        if let Some(d) = self.registry_path.parent() {
            std::fs::create_dir_all(d).map_err(io)?;
        }
        write_atomically(&self.registry_path, &bytes).map_err(io)
    }

    /// Validates, compiles and stores a plugin binary; the same bytes again return the existing
    /// version. Blocking (compiles): call from a blocking thread.
    ///
    /// # Errors
    /// [`PluginError::BadModule`] naming what is wrong with the binary.
    pub fn upload(&self, bytes: &[u8]) -> Result<PluginVersion, PluginError> {
        let plugin = self.runtime.load(bytes).map_err(|e| PluginError::BadModule(e.to_string()))?;
        let mut reg = lock(&self.registry);
        if let Some(v) = reg.versions.iter().find(|v| v.sha256 == plugin.sha256()) {
            return Ok(version_view(v, false));
        }
        let m = plugin.manifest();
        let version = reg.versions.iter().filter(|v| v.name == m.name).map(|v| v.version).max().unwrap_or(0) + 1;
        write_atomically(&self.modules_dir.join(format!("{}.wasm", plugin.sha256())), bytes).map_err(io)?;
        let rec = VersionRecord {
            name: m.name.clone(),
            version,
            sha256: plugin.sha256().to_owned(),
            size: bytes.len(),
            label: m.version.clone(),
            roles: m.roles.iter().map(|r| role_name(*r).to_owned()).collect(),
            needs: field_names(m.needs).into_iter().map(str::to_owned).collect(),
            uploaded_ms: now_ms(),
        };
        reg.versions.push(rec.clone());
        if let Err(e) = self.save(&reg) {
            reg.versions.pop();
            return Err(e);
        }
        lock(&self.loaded).insert(rec.sha256.clone(), plugin);
        self.forget_unattached(&reg);
        tracing::info!(plugin = %rec.name, version, sha256 = %rec.sha256, "plugin uploaded");
        Ok(version_view(&rec, true))
    }

    /// Attaches (or swaps) a pinned plugin version: `router` / `ordering-key` on a topic, or
    /// `filter` on a group's subscription to a topic. The new instance's `init` runs first; only
    /// then does it replace the old one, at the next batch. Blocking: call from a blocking thread.
    ///
    /// The caller checks that the topic exists.
    ///
    /// # Errors
    /// Unknown plugin or version; a role the plugin lacks; a configuration its `init` refuses.
    pub fn attach(&self, role: Role, topic: &str, group: Option<&str>, req: AttachPlugin) -> Result<AttachmentView, PluginError> {
        if let Some(g) = group {
            wasmq_engine::validate_group(g).map_err(PluginError::Invalid)?;
        }
        let on_error = req.on_error.as_deref().unwrap_or("fail-open");
        let policy = FailurePolicy::parse(on_error)
            .ok_or_else(|| PluginError::Invalid(format!("on_error {on_error:?}: use fail-open or fail-closed")))?;
        let mut reg = lock(&self.registry);
        let v = reg
            .versions
            .iter()
            .find(|v| v.name == req.plugin && v.version == req.version)
            .cloned()
            .ok_or_else(|| PluginError::NotFound(format!("no plugin {} version {}", req.plugin, req.version)))?;
        let plugin = self.load_sha(&v.sha256)?;
        let rec = AttachmentRecord {
            role: role_name(role).to_owned(),
            topic: topic.to_owned(),
            group: group.map(str::to_owned),
            plugin: v.name.clone(),
            version: v.version,
            sha256: v.sha256.clone(),
            config: req.config,
            on_error: policy.as_str().to_owned(),
            attached_ms: now_ms(),
        };
        // Named as the operator named it: name@version (the binary's own label is in the cause).
        let attached = Attached::new(plugin, attachment_of(role, &rec), policy)
            .map_err(|e| PluginError::Invalid(format!("{}@{}: {e}", rec.plugin, rec.version)))?;
        let previous = reg.attachments.iter().position(|a| a.role == rec.role && a.topic == rec.topic && a.group == rec.group);
        let old = match previous {
            Some(i) => Some(std::mem::replace(&mut reg.attachments[i], rec.clone())),
            None => {
                reg.attachments.push(rec.clone());
                None
            }
        };
        if let Err(e) = self.save(&reg) {
            match (previous, old) {
                (Some(i), Some(o)) => reg.attachments[i] = o,
                _ => {
                    reg.attachments.pop();
                }
            }
            return Err(e);
        }
        let live = Live::new(rec, Ok(attached));
        let view = view_of(&live);
        self.install(live);
        self.forget_unattached(&reg);
        tracing::info!(plugin = %view.plugin, version = view.version, role = %view.role, topic, group, "plugin attached");
        Ok(view)
    }

    /// Removes an attachment.
    ///
    /// # Errors
    /// [`PluginError::NotFound`] when nothing is attached there.
    pub fn detach(&self, role: Role, topic: &str, group: Option<&str>) -> Result<(), PluginError> {
        let role = role_name(role);
        let mut reg = lock(&self.registry);
        let i =
            reg.attachments.iter().position(|a| a.role == role && a.topic == topic && a.group.as_deref() == group).ok_or_else(|| {
                PluginError::NotFound(format!(
                    "no {role} attached to {topic}{}",
                    group.map(|g| format!(" for group {g}")).unwrap_or_default()
                ))
            })?;
        let rec = reg.attachments.remove(i);
        if let Err(e) = self.save(&reg) {
            reg.attachments.insert(i, rec);
            return Err(e);
        }
        self.uninstall(&reg, |t| match role {
            "router" if t.0 == topic => t.1.router = None,
            "ordering-key" if t.0 == topic => t.1.key = None,
            "filter" if t.0 == topic => {
                t.1.filters.remove(group.unwrap_or_default());
            }
            _ => {}
        });
        Ok(())
    }

    /// Changes the live attachments with `f`, under the registry lock the caller holds.
    fn uninstall(&self, reg: &Registry, mut f: impl FnMut((&str, &mut TopicPlugins))) {
        let mut map = self.live.write().unwrap_or_else(PoisonError::into_inner);
        for (k, v) in map.iter_mut() {
            f((k, v));
        }
        map.retain(|_, v| !v.is_empty());
        drop(map);
        self.forget_unattached(reg);
    }

    /// Drops compiled versions no attachment of `reg` uses, once there are more than
    /// [`LOADED_UNATTACHED_MAX`] of them (a few stay so swapping back and forth is quick).
    fn forget_unattached(&self, reg: &Registry) {
        let attached: HashSet<&str> = reg.attachments.iter().map(|a| a.sha256.as_str()).collect();
        let mut loaded = lock(&self.loaded);
        if loaded.keys().filter(|sha| !attached.contains(sha.as_str())).count() > LOADED_UNATTACHED_MAX {
            loaded.retain(|sha, _| attached.contains(sha.as_str()));
        }
    }

    /// Drops the attachments of a deleted topic.
    pub fn forget_topic(&self, topic: &str) {
        let mut reg = lock(&self.registry);
        let before = reg.attachments.len();
        reg.attachments.retain(|a| a.topic != topic);
        if reg.attachments.len() != before
            && let Err(e) = self.save(&reg)
        {
            tracing::error!(topic, "saving plugin attachments: {e}");
        }
        self.uninstall(&reg, |t| {
            if t.0 == topic {
                *t.1 = TopicPlugins::default();
            }
        });
    }

    /// Every attachment with its stats.
    #[must_use]
    pub fn attachments(&self) -> Vec<AttachmentView> {
        let map = self.live.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<AttachmentView> =
            map.values().flat_map(|t| t.router.iter().chain(t.key.iter()).chain(t.filters.values())).map(|l| view_of(l)).collect();
        out.sort_by(|a, b| (&a.topic, &a.role, &a.group).cmp(&(&b.topic, &b.role, &b.group)));
        out
    }

    /// Every plugin with its versions and attachments.
    #[must_use]
    pub fn list(&self) -> Vec<PluginDetail> {
        let attachments = self.attachments();
        let reg = lock(&self.registry);
        let mut names: Vec<&str> = reg.versions.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|n| PluginDetail {
                name: n.to_owned(),
                versions: reg.versions.iter().filter(|v| v.name == n).map(|v| version_view(v, false)).collect(),
                attachments: attachments.iter().filter(|a| a.plugin == n).cloned().collect(),
            })
            .collect()
    }

    /// One plugin, if uploaded.
    #[must_use]
    pub fn describe(&self, name: &str) -> Option<PluginDetail> {
        self.list().into_iter().find(|p| p.name == name)
    }

    fn send_path_of(&self, topic: &str) -> Option<SendPath> {
        let map = self.live.read().unwrap_or_else(PoisonError::into_inner);
        let t = map.get(topic)?;
        (t.router.is_some() || t.key.is_some()).then(|| (t.router.clone(), t.key.clone()))
    }

    fn filter_of(&self, topic: &str, group: &str) -> Option<Arc<Live>> {
        let map = self.live.read().unwrap_or_else(PoisonError::into_inner);
        map.get(topic)?.filters.get(group).cloned()
    }
}

impl wasmq_engine::Plugins for PluginRegistry {
    fn send_path(&self, topic: &str) -> Option<wasmq_engine::SendPath> {
        let (router, key) = self.send_path_of(topic)?;
        Some(wasmq_engine::SendPath { router: router.map(|r| r as Arc<dyn Router>), key: key.map(|k| k as Arc<dyn KeySelector>) })
    }

    fn delivery_filter(&self, topic: &str, group: &str) -> Option<Arc<dyn DeliveryFilter>> {
        self.filter_of(topic, group).map(|f| f as Arc<dyn DeliveryFilter>)
    }
}

impl wasmq_engine::Attachment for Live {
    fn label(&self) -> String {
        format!("{}@{}", self.record.plugin, self.record.version)
    }

    fn policy(&self) -> FailurePolicy {
        self.policy
    }

    fn policy_applied(&self) {
        self.policy_applied.fetch_add(1, Ordering::Relaxed);
    }
}

impl Router for Live {
    fn route(&self, queues: u32, messages: &[PluginMessage<'_>]) -> Vec<Verdict<wasmq_engine::Route>> {
        let route = |r: Route| match r {
            Route::Queue(q) => wasmq_engine::Route::Queue(q),
            Route::DefaultRouting => wasmq_engine::Route::DefaultRouting,
            Route::Reject(reason) => wasmq_engine::Route::Reject(reason),
        };
        verdicts(evaluate(self, messages, |a, b| a.route(queues, b)), route)
    }
}

impl KeySelector for Live {
    fn ordering_key(&self, messages: &[PluginMessage<'_>]) -> Vec<Verdict<wasmq_engine::OrderingKey>> {
        let key = |k: OrderingKey| match k {
            OrderingKey::Hashed(h) => wasmq_engine::OrderingKey::Hashed(h),
            OrderingKey::MessageKey => wasmq_engine::OrderingKey::MessageKey,
            OrderingKey::None => wasmq_engine::OrderingKey::None,
        };
        verdicts(evaluate(self, messages, |a, b| a.ordering_key(b)), key)
    }
}

impl DeliveryFilter for Live {
    fn filter(&self, messages: &[PluginMessage<'_>]) -> Vec<Verdict<wasmq_engine::Delivery>> {
        let delivery = |d: Delivery| match d {
            Delivery::Deliver => wasmq_engine::Delivery::Deliver,
            Delivery::Skip => wasmq_engine::Delivery::Skip,
            Delivery::DeadLetter => wasmq_engine::Delivery::DeadLetter,
        };
        verdicts(evaluate(self, messages, |a, b| a.filter(b)), delivery)
    }
}

fn verdicts<D, E>(outcomes: Vec<Outcome<D>>, map: impl Fn(D) -> E) -> Vec<Verdict<E>> {
    outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Decided(d) => Verdict::Decided(map(d)),
            Outcome::Failed(e) => Verdict::Failed(e.to_string()),
            Outcome::Undecided(e) => Verdict::Undecided(e.to_string()),
        })
        .collect()
}

fn batch_of(needs: Fields, indices: &[usize], messages: &[PluginMessage<'_>]) -> Batch {
    let mut b = BatchBuilder::with_capacity(needs, indices.len());
    for &i in indices {
        let v = &messages[i];
        let p = v.properties;
        b.push(
            i64::try_from(v.born_ms).unwrap_or(i64::MAX),
            v.key().unwrap_or_default().as_bytes(),
            p.tags.as_deref().unwrap_or_default().as_bytes(),
            p.user.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
            v.body,
        );
    }
    b.finish()
}

/// What a plugin said about one message.
#[derive(Debug)]
enum Outcome<D> {
    Decided(D),
    /// The call failed with this message alone in it (a trap, a timeout, a bad answer): the
    /// message itself makes the plugin fail.
    Failed(CallError),
    /// No call judged this message on its own (the breaker is open, no instance could be
    /// made, or its batch failed and it was not tried alone): nothing is known about it.
    Undecided(CallError),
}

impl<D> Outcome<D> {
    fn single(r: Result<Vec<D>, CallError>) -> Self {
        match r.and_then(|mut d| if d.len() == 1 { Ok(d.remove(0)) } else { Err(CallError::BadDecision("no decision".into())) }) {
            Ok(d) => Self::Decided(d),
            Err(e @ (CallError::BreakerOpen(_) | CallError::Instantiate(_))) => Self::Undecided(e),
            Err(e) => Self::Failed(e),
        }
    }
}

/// Runs a plugin on `messages` and returns one outcome per message. When the
/// batch call traps, each message is tried alone (on fresh instances) so one poison message
/// does not condemn its batch; after a timeout only the first is tried alone (each try may
/// cost a whole deadline) and the rest stay undecided. A plugin whose last call was slow runs
/// under `block_in_place`, so other tasks of this worker thread move elsewhere meanwhile; a
/// fast one runs inline.
fn evaluate<D>(
    live: &Live,
    messages: &[PluginMessage<'_>],
    call: impl Fn(&Attached, &Batch) -> Result<Vec<D>, CallError>,
) -> Vec<Outcome<D>> {
    let all: Vec<usize> = (0..messages.len()).collect();
    let indices = &all[..];
    if indices.is_empty() {
        return Vec::new();
    }
    let attached = match &live.attached {
        Ok(a) => a,
        Err(e) => return indices.iter().map(|_| Outcome::Undecided(CallError::Instantiate(e.clone()))).collect(),
    };
    let needs = live.needs();
    let alone = |i: usize| Outcome::single(call(attached, &batch_of(needs, &[i], messages)));
    let run = || {
        let batch = batch_of(needs, indices, messages);
        match call(attached, &batch) {
            Ok(ds) => {
                // The host checks there is one decision per message; a short answer would
                // leave the rest undecided, never invented.
                let mut ds = ds.into_iter();
                indices
                    .iter()
                    .map(|_| ds.next().map_or_else(|| Outcome::Undecided(CallError::BadDecision("no decision".into())), Outcome::Decided))
                    .collect()
            }
            Err(e) if indices.len() == 1 => vec![Outcome::single(Err(e))],
            Err(e @ (CallError::BreakerOpen(_) | CallError::Instantiate(_))) => {
                indices.iter().map(|_| Outcome::Undecided(e.clone())).collect()
            }
            Err(e) if e.trap_kind() == Some(crate::TrapKind::Timeout) => {
                let mut out = vec![alone(indices[0])];
                out.extend(indices[1..].iter().map(|_| Outcome::Undecided(e.clone())));
                out
            }
            Err(_) => indices.iter().map(|&i| alone(i)).collect(),
        }
    };
    let started = Instant::now();
    let out = match tokio::runtime::Handle::try_current() {
        Ok(h) if live.slow.load(Ordering::Relaxed) && h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(run)
        }
        _ => run(),
    };
    live.slow.store(started.elapsed() > INLINE_CALL_MAX, Ordering::Relaxed);
    out
}

fn attachment_of(role: Role, rec: &AttachmentRecord) -> Attachment {
    Attachment {
        role,
        topic: rec.topic.clone(),
        group: rec.group.clone(),
        config: rec.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn policy_of(s: &str) -> FailurePolicy {
    FailurePolicy::parse(s).unwrap_or_default()
}

fn version_view(v: &VersionRecord, created: bool) -> PluginVersion {
    PluginVersion {
        name: v.name.clone(),
        version: v.version,
        sha256: v.sha256.clone(),
        size: v.size,
        label: v.label.clone(),
        roles: v.roles.clone(),
        needs: v.needs.clone(),
        uploaded_ms: v.uploaded_ms,
        created,
    }
}

fn view_of(l: &Live) -> AttachmentView {
    let r = &l.record;
    let stats = match &l.attached {
        Ok(a) => {
            let s = a.stats();
            PluginStats {
                calls: s.calls,
                messages: s.messages,
                errors: s.errors,
                traps: s.traps,
                timeouts: s.timeouts,
                memory_exhausted: s.memory_exhausted,
                stack_overflows: s.stack_overflows,
                breaker_trips: s.breaker_trips,
                breaker_open: s.breaker_open,
                instances: s.instances,
                memory_peak_bytes: s.memory_peak_bytes,
                timeout_call_max_ns: s.timeout_call_max_ns,
                ns_per_message: s.ns_per_message(),
                policy_applied: 0,
                counters: s.counters,
            }
        }
        Err(_) => PluginStats::default(),
    };
    AttachmentView {
        role: r.role.clone(),
        topic: r.topic.clone(),
        group: r.group.clone(),
        plugin: r.plugin.clone(),
        version: r.version,
        sha256: r.sha256.clone(),
        config: r.config.clone(),
        on_error: r.on_error.clone(),
        attached_ms: r.attached_ms,
        error: l.attached.as_ref().err().cloned(),
        stats: PluginStats { policy_applied: l.policy_applied.load(Ordering::Relaxed), ..stats },
    }
}
