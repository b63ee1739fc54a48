//! What is protected and how: actions, resources, resource patterns, subjects, policies and the
//! three built-in roles.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::AuthError;

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Send messages to a topic.
    Produce,
    /// Read a topic's messages; join, commit, receive and acknowledge as a group.
    Consume,
    /// Create a topic or a group's settings.
    Create,
    /// Delete a topic or a group.
    Delete,
    /// Change a topic's or group's settings, offsets, plugins, dead letters.
    Alter,
    /// See that a resource exists and its figures (not its messages).
    Describe,
    /// Users, policies, audit, replication links, plugins' code: the cluster's own keys.
    Admin,
}

impl Action {
    /// Every action, in order.
    pub const ALL: [Self; 7] = [Self::Produce, Self::Consume, Self::Create, Self::Delete, Self::Alter, Self::Describe, Self::Admin];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Alter => "alter",
            Self::Describe => "describe",
            Self::Admin => "admin",
        }
    }

    /// # Errors
    /// A name that is no action.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| AuthError::Invalid(format!("unknown action {s:?}: one of {}", Self::ALL.map(Self::name).join(", "))))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of resources a policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Topic,
    Group,
    Cluster,
}

impl Kind {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Group => "group",
            Self::Cluster => "cluster",
        }
    }
}

/// One resource a request touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Topic(String),
    /// A consumer group (or, for transactions, a producer group).
    Group(String),
    /// The broker or cluster itself: its settings, users, policies, replication.
    Cluster,
}

impl Resource {
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self {
            Self::Topic(_) => Kind::Topic,
            Self::Group(_) => Kind::Group,
            Self::Cluster => Kind::Cluster,
        }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Topic(n) | Self::Group(n) => n,
            Self::Cluster => "",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cluster => f.write_str("the cluster"),
            r => write!(f, "{} {}", r.kind().name(), r.name()),
        }
    }
}

/// Most bytes of a name (user, role, resource pattern).
pub const NAME_BYTES_MAX: usize = 255;

/// A resource pattern: `topic:orders` (that topic), `topic:orders.*` (every topic whose name
/// starts with `orders.`), `topic:*` (every topic), the same for `group:`, and `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern {
    pub kind: Kind,
    /// The name, or its prefix when `prefix` is set (empty with `prefix`: every name).
    pub name: String,
    pub prefix: bool,
}

impl Pattern {
    /// # Errors
    /// Not `topic:NAME`, `group:NAME` (NAME may end with `*`) or `cluster`.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        if s == "cluster" {
            return Ok(Self { kind: Kind::Cluster, name: String::new(), prefix: false });
        }
        let bad = || AuthError::Invalid(format!("resource {s:?}: write topic:NAME, group:NAME (NAME may end with *) or cluster"));
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "topic" => Kind::Topic,
            "group" => Kind::Group,
            _ => return Err(bad()),
        };
        let (name, prefix) = match name.strip_suffix('*') {
            Some(p) => (p, true),
            None => (name, false),
        };
        if (name.is_empty() && !prefix) || name.contains('*') || name.len() > NAME_BYTES_MAX {
            return Err(bad());
        }
        Ok(Self { kind, name: name.to_owned(), prefix })
    }

    #[must_use]
    pub fn matches(&self, r: &Resource) -> bool {
        self.kind == r.kind()
            && (self.kind == Kind::Cluster || if self.prefix { r.name().starts_with(&self.name) } else { r.name() == self.name })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Cluster => f.write_str("cluster"),
            k => write!(f, "{}:{}{}", k.name(), self.name, if self.prefix { "*" } else { "" }),
        }
    }
}

impl TryFrom<String> for Pattern {
    type Error = AuthError;
    fn try_from(s: String) -> Result<Self, AuthError> {
        Self::parse(&s)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> Self {
        p.to_string()
    }
}

/// Who a policy is for: one user, or every user with a role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Subject {
    User(String),
    Role(String),
}

impl Subject {
    /// # Errors
    /// Not `user:NAME` or `role:NAME`.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let bad = || AuthError::Invalid(format!("subject {s:?}: write user:NAME or role:NAME"));
        match s.split_once(':') {
            Some(("user", n)) => check_name("user", n).map(|()| Self::User(n.to_owned())),
            Some(("role", n)) => check_name("role", n).map(|()| Self::Role(n.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(n) => write!(f, "user:{n}"),
            Self::Role(n) => write!(f, "role:{n}"),
        }
    }
}

impl TryFrom<String> for Subject {
    type Error = AuthError;
    fn try_from(s: String) -> Result<Self, AuthError> {
        Self::parse(&s)
    }
}

impl From<Subject> for String {
    fn from(s: Subject) -> Self {
        s.to_string()
    }
}

/// Whether a policy grants or refuses. A matching deny wins over any allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

/// One rule: `subject` may (or may not) do `actions` on resources matching `resource`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Policy {
    pub subject: Subject,
    pub resource: Pattern,
    pub actions: Vec<Action>,
    #[serde(default)]
    pub effect: Effect,
}

impl Policy {
    #[must_use]
    pub fn covers(&self, action: Action, resource: &Resource) -> bool {
        self.actions.contains(&action) && self.resource.matches(resource)
    }
}

/// The built-in roles (the console's): each grants what it says on every resource, before any
/// policy. Other role names are plain groups that policies name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinRole {
    /// Describe anything; change nothing, read no message.
    Viewer,
    /// Everything on topics and groups (create, delete, alter, produce, consume, describe);
    /// describe the cluster. Not users, policies, plugins' code or replication.
    Operator,
    /// Everything.
    Admin,
}

impl BuiltinRole {
    pub const ALL: [Self; 3] = [Self::Viewer, Self::Operator, Self::Admin];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    #[must_use]
    pub fn of(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether the role alone allows `action` on `resource`.
    #[must_use]
    pub fn allows(self, action: Action, resource: &Resource) -> bool {
        match self {
            Self::Admin => true,
            Self::Operator => match resource {
                Resource::Topic(_) | Resource::Group(_) => action != Action::Admin,
                Resource::Cluster => action == Action::Describe,
            },
            Self::Viewer => action == Action::Describe,
        }
    }
}

/// Checks a user or role name: 1 to [`NAME_BYTES_MAX`] bytes of letters, digits, `.`, `_`,
/// `-`, `@`.
///
/// # Errors
/// [`AuthError::Invalid`] naming what is wrong.
pub fn check_name(what: &str, name: &str) -> Result<(), AuthError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(AuthError::Invalid(format!("{what} name must be 1 to {NAME_BYTES_MAX} bytes")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))) {
        return Err(AuthError::Invalid(format!("{what} name {name:?} has {c:?}: use letters, digits, '.', '_', '-', '@'")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_print_and_match() {
        let p = Pattern::parse("topic:orders.*").unwrap();
        assert!(p.matches(&Resource::Topic("orders.eu".into())));
        assert!(!p.matches(&Resource::Topic("orders".into())));
        assert!(!p.matches(&Resource::Group("orders.eu".into())), "a topic pattern names no group");
        assert_eq!(p.to_string(), "topic:orders.*");
        assert!(Pattern::parse("group:*").unwrap().matches(&Resource::Group("any".into())));
        assert!(Pattern::parse("topic:a").unwrap().matches(&Resource::Topic("a".into())));
        assert!(!Pattern::parse("topic:a").unwrap().matches(&Resource::Topic("ab".into())));
        assert!(Pattern::parse("cluster").unwrap().matches(&Resource::Cluster));
        for bad in ["topic:", "queue:a", "topic:a*b", "orders", "cluster:x"] {
            let e = Pattern::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn builtin_roles_grant_what_they_say() {
        let t = Resource::Topic("t".into());
        assert!(BuiltinRole::Viewer.allows(Action::Describe, &t));
        assert!(!BuiltinRole::Viewer.allows(Action::Consume, &t), "a viewer reads no message");
        assert!(BuiltinRole::Operator.allows(Action::Delete, &t));
        assert!(!BuiltinRole::Operator.allows(Action::Admin, &Resource::Cluster));
        assert!(!BuiltinRole::Operator.allows(Action::Alter, &Resource::Cluster));
        assert!(BuiltinRole::Admin.allows(Action::Admin, &Resource::Cluster));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("user", "alice@example.com").is_ok());
        assert!(check_name("user", "").is_err());
        assert!(check_name("user", "a b").unwrap_err().to_string().contains("' '"));
        assert!(Subject::parse("user:bob").is_ok());
        assert!(Subject::parse("bob").is_err());
    }
}
