//! Authorization in the service's terms: every front end asks [`Service::authorize`] for each
//! (action, resource) a request needs, as the [`Asker`] its connection logged in as. Internal
//! topics take their rights from what they belong to ([`topic_resource`]). Refusals and failed
//! logins go to the audit log.

use std::net::IpAddr;

use wasmq_auth::{Action, AuditEvent, AuthError, Identity, Resource};

use crate::{Service, ServiceError};

/// Who asks, from where, through which front end (`native`, `grpc`, `admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    pub who: Identity,
    pub from: Option<IpAddr>,
    pub via: &'static str,
}

impl Asker {
    #[must_use]
    pub fn new(who: Identity, from: Option<IpAddr>, via: &'static str) -> Self {
        Self { who, from, via }
    }
}

/// The resource whose rights a topic follows: a group's retry (`%RETRY%G`) and dead-letter
/// (`%DLQ%G`) topics are the group's; the broker's own (`%HALF%`, `%SCHEDULE%`, `%RECEIPTS%`,
/// …) are the cluster's (only an admin touches them directly); every other topic is itself.
#[must_use]
pub fn topic_resource(topic: &str) -> Resource {
    let group = topic.strip_prefix("%RETRY%").or_else(|| topic.strip_prefix("%DLQ%"));
    match group {
        Some(g) if !g.is_empty() => Resource::Group(g.to_owned()),
        _ if topic.starts_with('%') => Resource::Cluster,
        _ => Resource::Topic(topic.to_owned()),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Service {
    /// The users and policies every front end checks requests against.
    #[must_use]
    pub fn security(&self) -> &std::sync::Arc<wasmq_auth::Security> {
        &self.security
    }

    /// The audit log (admin changes, refusals, failed logins).
    #[must_use]
    pub fn audit(&self) -> &wasmq_auth::AuditLog {
        &self.audit
    }

    /// Records an event of `asker` in the audit log.
    pub fn record(&self, asker: &Asker, what: &str, resource: &str, result: &str) {
        self.audit.record(&AuditEvent {
            at_ms: now_ms(),
            user: asker.who.to_string(),
            from: asker.from.map(|a| a.to_string()),
            via: asker.via.to_owned(),
            what: what.to_owned(),
            resource: resource.to_owned(),
            result: result.to_owned(),
        });
    }

    /// Whether `asker` may do `action` on `resource`; a refusal is logged and audited.
    ///
    /// # Errors
    /// [`ServiceError::Denied`], whose text names the user, the action and the resource.
    pub fn authorize(&self, asker: &Asker, action: Action, resource: &Resource) -> Result<(), ServiceError> {
        self.security.authorize(&asker.who, action, resource).map_err(|d| {
            tracing::warn!(user = %asker.who, from = ?asker.from, via = asker.via, action = %action, resource = %resource, "request denied");
            self.record(asker, action.name(), &resource.to_string(), &format!("denied: {d}"));
            ServiceError::Denied(d.to_string())
        })
    }

    /// Checks a user name and password (argon2: call it off the async workers); a failure is
    /// audited.
    ///
    /// # Errors
    /// As [`wasmq_auth::Security::login`].
    pub fn login(&self, user: &str, password: &str, from: Option<IpAddr>, via: &'static str) -> Result<Identity, AuthError> {
        self.security.login(user, password, from).inspect_err(|e| {
            self.record(&Asker::new(Identity::User(user.into()), from, via), "login", "", &format!("denied: {e}"));
        })
    }

    /// Who ends a transaction must be allowed to produce to its half message's topic (a
    /// transaction no longer pending changes nothing, and needs nothing).
    ///
    /// # Errors
    /// As [`Service::authorize`].
    pub fn authorize_end_transaction(&self, asker: &Asker, log_offset: u64, unique_id: &str) -> Result<(), ServiceError> {
        match self.engine.pending_half_topic(log_offset, unique_id) {
            Some(topic) => self.authorize_topic(asker, Action::Produce, &topic),
            None => Ok(()),
        }
    }

    /// [`Service::authorize`] for a topic, through [`topic_resource`].
    ///
    /// # Errors
    /// As [`Service::authorize`].
    pub fn authorize_topic(&self, asker: &Asker, action: Action, topic: &str) -> Result<(), ServiceError> {
        self.authorize(asker, action, &topic_resource(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_topics_follow_their_owner() {
        assert_eq!(topic_resource("orders"), Resource::Topic("orders".into()));
        assert_eq!(topic_resource(&wasmq_engine::retry_topic("g1")), Resource::Group("g1".into()));
        assert_eq!(topic_resource(&wasmq_engine::dlq_topic("g1")), Resource::Group("g1".into()));
        for internal in [wasmq_engine::HALF_TOPIC, wasmq_engine::SCHEDULE_TOPIC, wasmq_engine::RECEIPTS_TOPIC, "%RETRY%"] {
            assert_eq!(topic_resource(internal), Resource::Cluster, "{internal}");
        }
    }
}
