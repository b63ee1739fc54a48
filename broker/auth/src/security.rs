//! [`Security`]: the users, their credentials and the policies of one broker, kept in
//! `config/security.json` (mode 0600, replaced whole on each change), and the console's sessions
//! in memory.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{Action, BuiltinRole, Effect, Policy, Resource, Subject, check_name};
use crate::password::{self, random_secret, same, sha256_hex};
use crate::{AuthError, Denied, Identity, limiter::Limiter, lock};

/// The user a new broker creates, with the `admin` role.
pub const BOOTSTRAP_USER: &str = "admin";
/// Most users, policies and API tokens one broker keeps (each).
pub const USERS_MAX: usize = 10_000;
pub const POLICIES_MAX: usize = 10_000;
pub const TOKENS_MAX: usize = 10_000;
/// Most roles of one user, actions of one policy.
pub const ROLES_PER_USER_MAX: usize = 64;
/// A console session ends after this long without a request...
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// ...and after this long in any case.
pub const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
/// Most console sessions open at once (the oldest is ended first).
pub const SESSIONS_MAX: usize = 10_000;
/// Most names (certificate subjects) mapped to one user.
pub const CERTIFICATES_PER_USER_MAX: usize = 16;
/// Prefix of API tokens (so a leaked one is recognisable).
const TOKEN_PREFIX: &str = "wqt_";

/// A user as stored. Its `Debug` leaves out every credential.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    /// argon2id PHC string.
    pub password: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The secret key of the user's access key (the access key is the user name) for RocketMQ 5
    /// request signatures, which are HMACs: the broker needs the secret itself to check one, so
    /// it is kept as it is (in this 0600 file only, never shown again after it is made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_secret: Option<String>,
    /// Client certificate names (subject CN or a DNS / email SAN) that log in as this user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("roles", &self.roles)
            .field("access_secret", &self.access_secret.as_ref().map(|_| "<set>"))
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

/// A user as shown (no credential).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserView {
    pub name: String,
    pub roles: Vec<String>,
    pub access_key: bool,
    pub certificates: Vec<String>,
}

/// An API token as stored: its SHA-256 only.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    pub user: String,
    pub name: String,
    pub sha256: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("user", &self.user).field("name", &self.name).finish_non_exhaustive()
    }
}

/// An API token as shown (its id, not its secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenView {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    users: BTreeMap<String, User>,
    #[serde(default)]
    policies: Vec<Policy>,
    /// By token id.
    #[serde(default)]
    tokens: BTreeMap<String, Token>,
}

#[derive(Debug)]
struct Session {
    user: String,
    started: Instant,
    last: Instant,
}

/// Users, credentials and policies; every front end asks it who a client is and whether it may.
#[derive(Debug)]
pub struct Security {
    path: Option<PathBuf>,
    state: RwLock<Arc<State>>,
    /// Held while a change is written, so changes apply one at a time.
    changing: Mutex<()>,
    limiter: Limiter,
    /// By SHA-256 of the session token.
    sessions: Mutex<HashMap<String, Session>>,
    /// Whether any user exists (the state's, kept beside it so that a broker without users
    /// checks a request with one load, not a lock shared by every connection).
    has_users: AtomicBool,
}

impl Security {
    /// The state in `path` (none yet: no users, everything allowed until one is made).
    ///
    /// # Errors
    /// The file cannot be read or is not a valid state.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let state = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice::<State>(&b).map_err(|e| AuthError::Invalid(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(AuthError::Io(format!("{}: {e}", path.display()))),
        };
        Ok(Self::with(Some(path.to_owned()), state))
    }

    /// A state kept in memory only (tests).
    #[must_use]
    pub fn in_memory() -> Self {
        Self::with(None, State::default())
    }

    fn with(path: Option<PathBuf>, state: State) -> Self {
        Self {
            has_users: AtomicBool::new(!state.users.is_empty()),
            path,
            state: RwLock::new(Arc::new(state)),
            changing: Mutex::new(()),
            limiter: Limiter::default(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn snapshot(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Applies `f` to a copy of the state, writes it, then makes it current.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> Result<T, AuthError>) -> Result<T, AuthError> {
        let _one = lock(&self.changing);
        let mut next = State::clone(&self.snapshot());
        let out = f(&mut next)?;
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec_pretty(&next).map_err(|e| AuthError::Io(e.to_string()))?;
            write_private(path, &bytes).map_err(|e| AuthError::Io(format!("{}: {e}", path.display())))?;
        }
        let has_users = !next.users.is_empty();
        *self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        self.has_users.store(has_users, Ordering::Release);
        Ok(out)
    }

    /// The whole state (users with their hashes and secrets, policies, API tokens) as JSON, for
    /// a slave to adopt: it carries secrets, so it only travels to a replication link.
    #[must_use]
    pub fn export(&self) -> String {
        serde_json::to_string(&*self.snapshot()).unwrap_or_default()
    }

    /// Replaces the state with a master's ([`Security::export`]); returns whether it changed.
    /// Sessions stay: they are this broker's own.
    ///
    /// # Errors
    /// Not a state; the file cannot be written.
    pub fn adopt(&self, json: &str) -> Result<bool, AuthError> {
        let theirs: State = serde_json::from_str(json).map_err(|e| AuthError::Invalid(format!("the master's users and policies: {e}")))?;
        let mine = serde_json::to_string(&*self.snapshot()).unwrap_or_default();
        if serde_json::to_string(&theirs).unwrap_or_default() == mine {
            return Ok(false);
        }
        self.change(|s| {
            *s = theirs;
            Ok(())
        })?;
        Ok(true)
    }

    /// Whether any user exists: then every request needs an identity and a policy allowing it.
    #[must_use]
    pub fn enforcing(&self) -> bool {
        self.has_users.load(Ordering::Acquire)
    }

    /// On a broker without users, creates [`BOOTSTRAP_USER`] with the `admin` role and
    /// `password` (or a random one); returns the password, or `None` when users exist.
    ///
    /// # Errors
    /// A given password that is too short; the file cannot be written.
    pub fn bootstrap(&self, password: Option<&str>) -> Result<Option<String>, AuthError> {
        if self.enforcing() {
            return Ok(None);
        }
        let password = password.map_or_else(|| random_secret(12), str::to_owned);
        self.create_user(BOOTSTRAP_USER, &password, &[BuiltinRole::Admin.name().to_owned()])?;
        Ok(Some(password))
    }

    // ---- authorization ----

    /// Whether `who` may do `action` on `resource`: a matching deny policy refuses; a built-in
    /// role or a matching allow policy of the user or one of its roles allows; nothing else
    /// does. Describe is implied by any other action allowed on the resource (as in Kafka: who
    /// may produce to a topic may see its route), unless denied itself. Without users,
    /// everything is allowed.
    ///
    /// # Errors
    /// [`Denied`], naming the user, the action and the resource.
    pub fn authorize(&self, who: &Identity, action: Action, resource: &Resource) -> Result<(), Denied> {
        if !self.enforcing() {
            return Ok(());
        }
        let state = self.snapshot();
        if state.users.is_empty() {
            return Ok(());
        }
        let deny = || Denied { user: who.to_string(), action, resource: resource.clone() };
        let Identity::User(name) = who else { return Err(deny()) };
        // The user as it is now: a deleted user or a removed role takes effect on open
        // connections too.
        let Some(user) = state.users.get(name.as_ref()) else { return Err(deny()) };
        let decide = |action: Action| -> Option<Effect> {
            let applies = |s: &Subject| match s {
                Subject::User(u) => u == name.as_ref(),
                Subject::Role(r) => user.roles.iter().any(|x| x == r),
            };
            let mut found =
                user.roles.iter().filter_map(|r| BuiltinRole::of(r)).any(|r| r.allows(action, resource)).then_some(Effect::Allow);
            for p in state.policies.iter().filter(|p| applies(&p.subject) && p.covers(action, resource)) {
                match p.effect {
                    Effect::Deny => return Some(Effect::Deny),
                    Effect::Allow => found = Some(Effect::Allow),
                }
            }
            found
        };
        let allowed = match decide(action) {
            Some(Effect::Deny) => false,
            Some(Effect::Allow) => true,
            None => {
                action == Action::Describe && Action::ALL.into_iter().any(|a| a != Action::Describe && decide(a) == Some(Effect::Allow))
            }
        };
        if allowed { Ok(()) } else { Err(deny()) }
    }

    /// The built-in role a user's console shows (the highest it has), if any.
    #[must_use]
    pub fn console_role(&self, who: &Identity) -> Option<BuiltinRole> {
        let Identity::User(name) = who else { return None };
        let state = self.snapshot();
        state.users.get(name.as_ref())?.roles.iter().filter_map(|r| BuiltinRole::of(r)).max()
    }

    // ---- authentication ----

    /// Checks a user name and password. Failures are counted per user and per address
    /// ([`crate::limiter`]); past the limit every attempt is refused without being checked.
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`] (the same for an unknown user and a wrong password),
    /// [`AuthError::RateLimited`].
    pub fn login(&self, name: &str, password: &str, peer: Option<IpAddr>) -> Result<Identity, AuthError> {
        let keys = limiter_keys(name, peer);
        let keys: Vec<(&str, usize)> = keys.iter().map(|(k, m)| (k.as_str(), *m)).collect();
        self.limiter.check(&keys, Instant::now()).map_err(AuthError::RateLimited)?;
        let user = self.snapshot().users.get(name).cloned();
        let ok = match &user {
            Some(u) => password::verify(password, &u.password),
            None => {
                password::verify_nothing(password);
                false
            }
        };
        if ok {
            Ok(Identity::User(name.into()))
        } else {
            self.limiter.failed(&keys, Instant::now());
            tracing::warn!(user = name, peer = ?peer, "login refused: wrong user name or password");
            Err(AuthError::Unauthenticated(format!("wrong user name or password for user {name:?}")))
        }
    }

    /// Checks a RocketMQ 5 signature: `check` is given the secret of `access_key`'s user and
    /// says whether the signature was made with it. Failures are rate limited as logins are.
    ///
    /// # Errors
    /// As [`Security::login`]; an access key that is no user's.
    pub fn access_key(&self, access_key: &str, peer: Option<IpAddr>, check: impl FnOnce(&[u8]) -> bool) -> Result<Identity, AuthError> {
        let keys = limiter_keys(access_key, peer);
        let keys: Vec<(&str, usize)> = keys.iter().map(|(k, m)| (k.as_str(), *m)).collect();
        self.limiter.check(&keys, Instant::now()).map_err(AuthError::RateLimited)?;
        let secret = self.snapshot().users.get(access_key).and_then(|u| u.access_secret.clone());
        let Some(secret) = secret else {
            self.limiter.failed(&keys, Instant::now());
            return Err(AuthError::Unauthenticated(format!("unknown access key {access_key:?}")));
        };
        if check(secret.as_bytes()) {
            Ok(Identity::User(access_key.into()))
        } else {
            self.limiter.failed(&keys, Instant::now());
            Err(AuthError::Unauthenticated(format!("wrong signature for access key {access_key:?}")))
        }
    }

    /// The user a client certificate names (its subject CN or one of its SANs), if any.
    #[must_use]
    pub fn certificate_user(&self, names: &[String]) -> Option<Identity> {
        let state = self.snapshot();
        state.users.iter().find(|(_, u)| u.certificates.iter().any(|c| names.contains(c))).map(|(n, _)| Identity::User(n.as_str().into()))
    }

    // ---- API tokens and console sessions ----

    /// Makes an API token for `user` (shown once: only its SHA-256 is kept).
    ///
    /// # Errors
    /// An unknown user, a bad name, too many tokens.
    pub fn create_token(&self, user: &str, name: &str, ttl: Option<Duration>, now_ms: u64) -> Result<(TokenView, String), AuthError> {
        check_name("token", name)?;
        let id = random_secret(6);
        let secret = format!("{TOKEN_PREFIX}{id}_{}", random_secret(24));
        let token = Token {
            user: user.to_owned(),
            name: name.to_owned(),
            sha256: sha256_hex(&secret),
            created_ms: now_ms,
            expires_ms: ttl.map(|t| now_ms + t.as_millis() as u64),
        };
        self.change(|s| {
            if !s.users.contains_key(user) {
                return Err(AuthError::NotFound(format!("user {user}")));
            }
            if s.tokens.len() >= TOKENS_MAX {
                return Err(AuthError::Invalid(format!("at most {TOKENS_MAX} API tokens")));
            }
            s.tokens.insert(id.clone(), token.clone());
            Ok(())
        })?;
        Ok((token_view(&id, &token), secret))
    }

    /// The user an API token belongs to.
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`]: unknown, expired, or its user deleted.
    pub fn token_user(&self, secret: &str, now_ms: u64) -> Result<Identity, AuthError> {
        let wrong = || AuthError::Unauthenticated("unknown or expired API token".into());
        let id = secret.strip_prefix(TOKEN_PREFIX).and_then(|r| r.split_once('_')).map(|(id, _)| id).ok_or_else(wrong)?;
        let state = self.snapshot();
        let t = state.tokens.get(id).ok_or_else(wrong)?;
        if !same(sha256_hex(secret).as_bytes(), t.sha256.as_bytes()) || t.expires_ms.is_some_and(|e| e <= now_ms) {
            return Err(wrong());
        }
        if !state.users.contains_key(&t.user) {
            return Err(wrong());
        }
        Ok(Identity::User(t.user.as_str().into()))
    }

    /// API tokens (of one user, or all).
    #[must_use]
    pub fn tokens(&self, user: Option<&str>) -> Vec<TokenView> {
        self.snapshot().tokens.iter().filter(|(_, t)| user.is_none_or(|u| t.user == u)).map(|(id, t)| token_view(id, t)).collect()
    }

    /// The owner of token `id`, if it exists.
    #[must_use]
    pub fn token_owner(&self, id: &str) -> Option<String> {
        self.snapshot().tokens.get(id).map(|t| t.user.clone())
    }

    /// # Errors
    /// No such token.
    pub fn delete_token(&self, id: &str) -> Result<(), AuthError> {
        self.change(|s| s.tokens.remove(id).map(|_| ()).ok_or_else(|| AuthError::NotFound(format!("API token {id}"))))
    }

    /// Starts a console session for `user` (after a login); returns its token.
    #[must_use]
    pub fn start_session(&self, user: &str) -> String {
        let token = random_secret(32);
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| live(s, now));
        while sessions.len() >= SESSIONS_MAX {
            let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone()) else { break };
            sessions.remove(&oldest);
        }
        sessions.insert(sha256_hex(&token), Session { user: user.to_owned(), started: now, last: now });
        token
    }

    /// The user of a live session (which it keeps alive).
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`]: unknown or ended session, or its user deleted.
    pub fn session_user(&self, token: &str) -> Result<Identity, AuthError> {
        let now = Instant::now();
        let key = sha256_hex(token);
        let mut sessions = lock(&self.sessions);
        let ended = || AuthError::Unauthenticated("the session ended; log in again".into());
        let s = sessions.get_mut(&key).ok_or_else(ended)?;
        if !live(s, now) || !self.snapshot().users.contains_key(&s.user) {
            sessions.remove(&key);
            return Err(ended());
        }
        s.last = now;
        Ok(Identity::User(s.user.as_str().into()))
    }

    pub fn end_session(&self, token: &str) {
        lock(&self.sessions).remove(&sha256_hex(token));
    }

    // ---- users ----

    /// # Errors
    /// A bad name, role or password; the user exists; too many users.
    pub fn create_user(&self, name: &str, password: &str, roles: &[String]) -> Result<(), AuthError> {
        check_name("user", name)?;
        check_roles(roles)?;
        let hash = password::hash(password)?;
        self.change(|s| {
            if s.users.contains_key(name) {
                return Err(AuthError::Exists(format!("user {name}")));
            }
            if s.users.len() >= USERS_MAX {
                return Err(AuthError::Invalid(format!("at most {USERS_MAX} users")));
            }
            s.users.insert(name.to_owned(), User { password: hash, roles: roles.to_vec(), access_secret: None, certificates: Vec::new() });
            Ok(())
        })
    }

    /// A user with an existing hash (tests that make many users skip the hashing).
    #[cfg(test)]
    pub(crate) fn insert_hashed(&self, name: &str, hash: &str, roles: &[String]) {
        self.change(|s| {
            s.users.insert(
                name.to_owned(),
                User { password: hash.to_owned(), roles: roles.to_vec(), access_secret: None, certificates: Vec::new() },
            );
            Ok(())
        })
        .unwrap();
    }

    /// # Errors
    /// No such user; a bad password.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        let hash = password::hash(password)?;
        self.change(|s| {
            user_mut(s, name)?.password = hash;
            Ok(())
        })
    }

    /// # Errors
    /// No such user; a bad role; the last admin losing its role.
    pub fn set_roles(&self, name: &str, roles: &[String]) -> Result<(), AuthError> {
        check_roles(roles)?;
        self.change(|s| {
            user_mut(s, name)?.roles = roles.to_vec();
            keep_an_admin(s)
        })
    }

    /// # Errors
    /// No such user; a bad or duplicate certificate name.
    pub fn set_certificates(&self, name: &str, certificates: &[String]) -> Result<(), AuthError> {
        if certificates.len() > CERTIFICATES_PER_USER_MAX {
            return Err(AuthError::Invalid(format!("at most {CERTIFICATES_PER_USER_MAX} certificate names per user")));
        }
        for c in certificates {
            if c.is_empty() || c.len() > crate::model::NAME_BYTES_MAX || c.chars().any(char::is_control) {
                return Err(AuthError::Invalid(format!("certificate name {c:?}")));
            }
        }
        self.change(|s| {
            if let Some((other, _)) =
                s.users.iter().find(|(n, u)| n.as_str() != name && u.certificates.iter().any(|c| certificates.contains(c)))
            {
                return Err(AuthError::Exists(format!("a certificate name of user {other}")));
            }
            user_mut(s, name)?.certificates = certificates.to_vec();
            Ok(())
        })
    }

    /// Makes a new access secret for the user's access key (its name); returns it (shown once).
    ///
    /// # Errors
    /// No such user.
    pub fn new_access_secret(&self, name: &str) -> Result<String, AuthError> {
        let secret = random_secret(20);
        self.change(|s| {
            user_mut(s, name)?.access_secret = Some(secret.clone());
            Ok(())
        })?;
        Ok(secret)
    }

    /// Deletes a user, its API tokens and its policies, and ends its sessions.
    ///
    /// # Errors
    /// No such user; the last admin.
    pub fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        self.change(|s| {
            s.users.remove(name).ok_or_else(|| AuthError::NotFound(format!("user {name}")))?;
            s.tokens.retain(|_, t| t.user != name);
            s.policies.retain(|p| p.subject != Subject::User(name.to_owned()));
            keep_an_admin(s)
        })?;
        lock(&self.sessions).retain(|_, s| s.user != name);
        Ok(())
    }

    #[must_use]
    pub fn users(&self) -> Vec<UserView> {
        self.snapshot()
            .users
            .iter()
            .map(|(n, u)| UserView {
                name: n.clone(),
                roles: u.roles.clone(),
                access_key: u.access_secret.is_some(),
                certificates: u.certificates.clone(),
            })
            .collect()
    }

    #[must_use]
    pub fn user(&self, name: &str) -> Option<UserView> {
        self.users().into_iter().find(|u| u.name == name)
    }

    // ---- policies ----

    /// Adds a policy (an equal one already there: nothing changes); returns whether it was new.
    ///
    /// # Errors
    /// No actions; too many policies.
    pub fn add_policy(&self, mut policy: Policy) -> Result<bool, AuthError> {
        if policy.actions.is_empty() {
            return Err(AuthError::Invalid("a policy names at least one action".into()));
        }
        policy.actions.sort_unstable();
        policy.actions.dedup();
        self.change(|s| {
            if s.policies.contains(&policy) {
                return Ok(false);
            }
            if s.policies.len() >= POLICIES_MAX {
                return Err(AuthError::Invalid(format!("at most {POLICIES_MAX} policies")));
            }
            s.policies.push(policy);
            Ok(true)
        })
    }

    /// Removes a policy equal to `policy`.
    ///
    /// # Errors
    /// No such policy.
    pub fn remove_policy(&self, mut policy: Policy) -> Result<(), AuthError> {
        policy.actions.sort_unstable();
        policy.actions.dedup();
        self.change(|s| {
            let before = s.policies.len();
            s.policies.retain(|p| *p != policy);
            if s.policies.len() == before {
                return Err(AuthError::NotFound(format!("policy {} {} on {}", policy.subject, actions(&policy.actions), policy.resource)));
            }
            Ok(())
        })
    }

    #[must_use]
    pub fn policies(&self) -> Vec<Policy> {
        self.snapshot().policies.clone()
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last) < SESSION_IDLE && now.duration_since(s.started) < SESSION_MAX
}

fn token_view(id: &str, t: &Token) -> TokenView {
    TokenView { id: id.to_owned(), user: t.user.clone(), name: t.name.clone(), created_ms: t.created_ms, expires_ms: t.expires_ms }
}

fn actions(a: &[Action]) -> String {
    a.iter().map(|a| a.name()).collect::<Vec<_>>().join(",")
}

fn limiter_keys(name: &str, peer: Option<IpAddr>) -> Vec<(String, usize)> {
    use crate::limiter::{LOGIN_FAILURES_PER_ADDRESS_MAX, LOGIN_FAILURES_PER_USER_MAX};
    // A user from one address, not the user everywhere: failures from elsewhere cannot lock a
    // user out.
    match peer {
        Some(ip) => vec![(format!("user:{name}@{ip}"), LOGIN_FAILURES_PER_USER_MAX), (format!("ip:{ip}"), LOGIN_FAILURES_PER_ADDRESS_MAX)],
        None => vec![(format!("user:{name}"), LOGIN_FAILURES_PER_USER_MAX)],
    }
}

fn user_mut<'a>(s: &'a mut State, name: &str) -> Result<&'a mut User, AuthError> {
    s.users.get_mut(name).ok_or_else(|| AuthError::NotFound(format!("user {name}")))
}

fn check_roles(roles: &[String]) -> Result<(), AuthError> {
    if roles.len() > ROLES_PER_USER_MAX {
        return Err(AuthError::Invalid(format!("at most {ROLES_PER_USER_MAX} roles per user")));
    }
    roles.iter().try_for_each(|r| check_name("role", r))
}

/// Refuses a change that leaves no user with the `admin` role: no one could manage the users,
/// and without any user the broker would be open to all.
fn keep_an_admin(s: &State) -> Result<(), AuthError> {
    let admin = BuiltinRole::Admin.name();
    if !s.users.values().any(|u| u.roles.iter().any(|r| r == admin)) {
        return Err(AuthError::Invalid("that would leave no user with the admin role".into()));
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file of mode 0600, fsynced, then renamed over it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
