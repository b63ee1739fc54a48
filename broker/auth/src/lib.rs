//! Who a client is and what it may do, for every front end alike.
//!
//! `model.rs` (actions, resources, patterns, policies, the built-in roles), `security.rs`
//! ([`Security`]: users with argon2id password hashes, access keys for RocketMQ 5 signatures,
//! API tokens kept as SHA-256, console sessions, policies; `config/security.json`),
//! `password.rs` (hashing, random secrets, constant-time comparison) and `limiter.rs` (failed
//! logins per user and per address). Knows no socket, wire type or engine.
//!
//! The rule: once any user exists, a request is **denied unless allowed** — by a built-in role
//! of its user or an allow policy naming the user or one of its roles, and no deny policy.

pub mod audit;
pub mod limiter;
pub mod model;
pub mod password;
pub mod security;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use audit::{AuditEvent, AuditLog};
pub use model::{Action, BuiltinRole, Effect, Kind, Pattern, Policy, Resource, Subject};
pub use security::{BOOTSTRAP_USER, Security, TokenView, User, UserView};

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No credentials (allowed everything only while no user exists).
    Anonymous,
    User(Arc<str>),
}

impl Identity {
    #[must_use]
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::User(u) => Some(u),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
            Self::User(u) => f.write_str(u),
        }
    }
}

/// A request refused by the policies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not authorized: user {user} may not {action} on {resource}")]
pub struct Denied {
    pub user: String,
    pub action: Action,
    pub resource: Resource,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} exists already")]
    Exists(String),
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    #[error("too many failed logins: try again in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("security state: {0}")]
    Io(String),
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: &str) -> Identity {
        Identity::User(n.into())
    }

    fn topic(n: &str) -> Resource {
        Resource::Topic(n.into())
    }

    fn policy(subject: &str, resource: &str, actions: &[Action], effect: Effect) -> Policy {
        Policy { subject: Subject::parse(subject).unwrap(), resource: Pattern::parse(resource).unwrap(), actions: actions.to_vec(), effect }
    }

    #[test]
    fn without_users_everything_is_allowed_and_with_one_nothing_unless_allowed() {
        let s = Security::in_memory();
        assert!(s.authorize(&Identity::Anonymous, Action::Admin, &Resource::Cluster).is_ok());
        let pw = s.bootstrap(None).unwrap().unwrap();
        assert!(s.bootstrap(None).unwrap().is_none(), "only once");
        assert_eq!(s.login("admin", &pw, None).unwrap(), user("admin"));
        let denied = s.authorize(&Identity::Anonymous, Action::Produce, &topic("t")).unwrap_err();
        assert_eq!(denied.to_string(), "not authorized: user anonymous may not produce on topic t");
        s.create_user("alice", "alice-password-1", &[]).unwrap();
        let denied = s.authorize(&user("alice"), Action::Consume, &Resource::Group("g".into())).unwrap_err();
        assert_eq!(denied.to_string(), "not authorized: user alice may not consume on group g");
        assert!(s.authorize(&user("admin"), Action::Admin, &Resource::Cluster).is_ok());
    }

    #[test]
    fn policies_allow_by_user_and_role_and_a_deny_wins() {
        let s = Security::in_memory();
        s.bootstrap(Some("admin-password-1")).unwrap();
        s.create_user("alice", "alice-password-1", &["payments".into()]).unwrap();
        s.create_user("bob", "bob-password-12", &["payments".into(), "viewer".into()]).unwrap();
        s.add_policy(policy("role:payments", "topic:pay.*", &[Action::Produce, Action::Consume], Effect::Allow)).unwrap();
        s.add_policy(policy("user:bob", "topic:pay.audit", &[Action::Produce], Effect::Deny)).unwrap();
        assert!(s.authorize(&user("alice"), Action::Produce, &topic("pay.in")).is_ok());
        assert!(s.authorize(&user("alice"), Action::Produce, &topic("pay.audit")).is_ok());
        assert!(s.authorize(&user("bob"), Action::Produce, &topic("pay.audit")).is_err(), "the deny wins");
        assert!(s.authorize(&user("bob"), Action::Consume, &topic("pay.audit")).is_ok());
        assert!(s.authorize(&user("alice"), Action::Produce, &topic("orders")).is_err());
        assert!(s.authorize(&user("alice"), Action::Describe, &topic("orders")).is_err());
        assert!(s.authorize(&user("alice"), Action::Describe, &topic("pay.in")).is_ok(), "implied by produce");
        assert!(s.authorize(&user("bob"), Action::Describe, &topic("orders")).is_ok(), "viewer");
        // A role taken away takes effect at the next request.
        s.set_roles("alice", &[]).unwrap();
        assert!(s.authorize(&user("alice"), Action::Produce, &topic("pay.in")).is_err());
        // A deleted user is refused even with an identity established before.
        s.delete_user("bob").unwrap();
        assert!(s.authorize(&user("bob"), Action::Consume, &topic("pay.audit")).is_err());
        assert!(!s.policies().iter().any(|p| p.subject == Subject::User("bob".into())), "its policies went with it");
        let again = s.add_policy(policy("role:payments", "topic:pay.*", &[Action::Consume, Action::Produce], Effect::Allow));
        assert!(!again.unwrap(), "an equal policy (actions in another order) is not added twice");
        s.remove_policy(policy("role:payments", "topic:pay.*", &[Action::Produce, Action::Consume], Effect::Allow)).unwrap();
        assert!(s.remove_policy(policy("role:payments", "topic:pay.*", &[Action::Produce], Effect::Allow)).is_err());
    }

    #[test]
    fn the_last_admin_stays() {
        let s = Security::in_memory();
        s.bootstrap(Some("admin-password-1")).unwrap();
        assert!(s.delete_user("admin").unwrap_err().to_string().contains("no user with the admin role"));
        assert!(s.set_roles("admin", &["viewer".into()]).is_err());
        assert!(s.authorize(&user("admin"), Action::Admin, &Resource::Cluster).is_ok(), "a refused change changes nothing");
    }

    #[test]
    fn logins_are_checked_and_rate_limited() {
        let s = Security::in_memory();
        s.bootstrap(Some("admin-password-1")).unwrap();
        let peer = Some("10.1.2.3".parse().unwrap());
        for _ in 0..limiter::LOGIN_FAILURES_PER_USER_MAX {
            let e = s.login("admin", "guess-guess-guess", peer).unwrap_err();
            assert!(matches!(e, AuthError::Unauthenticated(_)), "{e}");
            assert!(!e.to_string().contains("guess"), "the password stays out of the error");
        }
        let e = s.login("admin", "admin-password-1", peer).unwrap_err();
        assert!(matches!(e, AuthError::RateLimited(_)), "even the right password waits: {e}");
        assert!(s.login("admin", "admin-password-1", Some("10.9.9.9".parse().unwrap())).is_ok(), "not from another address");
        // An unknown user is answered as a wrong password is.
        let unknown = s.login("nobody", "whatever-whatever", None).unwrap_err().to_string();
        assert!(unknown.contains("wrong user name or password"), "{unknown}");
    }

    #[test]
    fn tokens_and_sessions_name_their_user_until_ended() {
        let s = Security::in_memory();
        s.bootstrap(Some("admin-password-1")).unwrap();
        s.create_user("ci", "ci-password-123", &["operator".into()]).unwrap();
        let (view, secret) = s.create_token("ci", "deploy", Some(Duration::from_secs(60)), 1_000).unwrap();
        assert_eq!(s.token_user(&secret, 2_000).unwrap(), user("ci"));
        assert!(s.token_user(&secret, 61_000).is_err(), "expired");
        assert!(s.token_user(&format!("{secret}x"), 2_000).is_err());
        assert!(s.token_user("wqt_nope_nope", 2_000).is_err());
        assert!(!format!("{:?}", s.tokens(None)).contains(&secret));
        s.delete_token(&view.id).unwrap();
        assert!(s.token_user(&secret, 2_000).is_err(), "deleted");
        let session = s.start_session("ci");
        assert_eq!(s.session_user(&session).unwrap(), user("ci"));
        s.end_session(&session);
        assert!(s.session_user(&session).is_err());
        let session = s.start_session("ci");
        let (_, secret) = s.create_token("ci", "other", None, 1_000).unwrap();
        s.delete_user("ci").unwrap();
        assert!(s.session_user(&session).is_err(), "a deleted user's session ends");
        assert!(s.token_user(&secret, 2_000).is_err(), "and its tokens go");
    }

    #[test]
    fn access_keys_and_certificates_map_to_users() {
        let s = Security::in_memory();
        s.bootstrap(Some("admin-password-1")).unwrap();
        s.create_user("app", "app-password-12", &[]).unwrap();
        let secret = s.new_access_secret("app").unwrap();
        assert_eq!(s.access_key("app", None, |k| k == secret.as_bytes()).unwrap(), user("app"));
        assert!(s.access_key("app", None, |_| false).unwrap_err().to_string().contains("wrong signature for access key \"app\""));
        assert!(s.access_key("admin", None, |_| true).unwrap_err().to_string().contains("unknown access key"), "no secret made");
        s.set_certificates("app", &["app.example.com".into()]).unwrap();
        assert_eq!(s.certificate_user(&["x".into(), "app.example.com".into()]), Some(user("app")));
        assert!(s.set_certificates("admin", &["app.example.com".into()]).is_err(), "one user per name");
        assert!(!format!("{:?}", s.users()).contains(&secret));
    }

    #[test]
    fn a_slave_adopts_its_masters_state_whole() {
        let master = Security::in_memory();
        master.bootstrap(Some("admin-password-1")).unwrap();
        master.create_user("app", "app-password-12", &["team".into()]).unwrap();
        master.add_policy(policy("role:team", "topic:t", &[Action::Produce], Effect::Allow)).unwrap();
        let slave = Security::in_memory();
        slave.bootstrap(Some("slave-password-1")).unwrap();
        assert!(slave.adopt(&master.export()).unwrap());
        assert!(!slave.adopt(&master.export()).unwrap(), "nothing new the second time");
        assert!(slave.login("admin", "admin-password-1", None).is_ok() && slave.login("admin", "slave-password-1", None).is_err());
        assert!(slave.authorize(&user("app"), Action::Produce, &topic("t")).is_ok());
        assert!(slave.adopt("{not json").unwrap_err().to_string().contains("the master's users and policies"));
    }

    #[test]
    fn the_state_survives_a_reopen_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.json");
        let s = Security::open(&path).unwrap();
        s.bootstrap(Some("admin-password-1")).unwrap();
        s.add_policy(policy("role:r", "group:g*", &[Action::Consume], Effect::Allow)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("admin-password-1") && text.contains("$argon2id$"));
        let again = Security::open(&path).unwrap();
        assert!(again.login("admin", "admin-password-1", None).is_ok());
        assert_eq!(again.policies(), s.policies());
        std::fs::write(&path, "{not json").unwrap();
        assert!(Security::open(&path).unwrap_err().to_string().contains("security.json"));
    }

    proptest::proptest! {
        /// Against a plain model: allowed exactly when some allow (built-in role or policy)
        /// covers it and no deny does.
        #[test]
        fn decisions_follow_the_rule(
            rules in proptest::collection::vec((0usize..3, 0usize..4, 0usize..7, proptest::bool::ANY), 0..8),
            roles in proptest::collection::vec(0usize..5, 0..3),
            asked in (0usize..7, 0usize..4),
        ) {
            let role_names = ["viewer", "operator", "admin", "team-a", "team-b"];
            let resources = ["topic:a", "topic:a*", "group:a", "cluster"];
            let concrete = [Resource::Topic("a".into()), Resource::Topic("ab".into()), Resource::Group("a".into()), Resource::Cluster];
            let subjects = ["user:u", "role:team-a", "role:team-b"];
            let s = Security::in_memory();
            let roles: Vec<String> = roles.iter().map(|r| role_names[*r].to_owned()).collect();
            s.insert_hashed("admin", "-", &["admin".to_owned()]);
            s.insert_hashed("u", "-", &roles);
            let mut added = Vec::new();
            for (subj, res, act, deny) in &rules {
                let p = policy(subjects[*subj], resources[*res], &[Action::ALL[*act]], if *deny { Effect::Deny } else { Effect::Allow });
                s.add_policy(p.clone()).unwrap();
                added.push(p);
            }
            let (action, resource) = (Action::ALL[asked.0], &concrete[asked.1]);
            let applies = |p: &Policy| match &p.subject { Subject::User(u) => u == "u", Subject::Role(r) => roles.contains(r) };
            let decided = |action: Action| {
                let matching: Vec<&Policy> = added.iter().filter(|p| applies(p) && p.actions.contains(&action) && p.resource.matches(resource)).collect();
                let builtin = roles.iter().any(|r| match r.as_str() {
                    "admin" => true,
                    "operator" => !matches!(resource, Resource::Cluster) && action != Action::Admin || matches!(resource, Resource::Cluster) && action == Action::Describe,
                    "viewer" => action == Action::Describe,
                    _ => false,
                });
                if matching.iter().any(|p| p.effect == Effect::Deny) { Some(false) }
                else if builtin || matching.iter().any(|p| p.effect == Effect::Allow) { Some(true) }
                else { None }
            };
            let expected = match decided(action) {
                Some(d) => d,
                None => action == Action::Describe && Action::ALL.iter().any(|a| *a != Action::Describe && decided(*a) == Some(true)),
            };
            proptest::prop_assert_eq!(s.authorize(&user("u"), action, resource).is_ok(), expected);
        }
    }
}
