//! Authorization in the service's terms: every front end asks [`Service::authorize`] for each
//! (action, resource) a request needs, with the identity its connection logged in as. Internal
//! topics take their rights from what they belong to ([`topic_resource`]).

use wasmq_auth::{Action, Identity, Resource};

use crate::{Service, ServiceError};

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

impl Service {
    /// The users and policies every front end checks requests against.
    #[must_use]
    pub fn security(&self) -> &std::sync::Arc<wasmq_auth::Security> {
        &self.security
    }

    /// Whether `who` may do `action` on `resource`; a refusal is logged.
    ///
    /// # Errors
    /// [`ServiceError::Denied`], whose text names the user, the action and the resource.
    pub fn authorize(&self, who: &Identity, action: Action, resource: &Resource) -> Result<(), ServiceError> {
        self.security.authorize(who, action, resource).map_err(|d| {
            tracing::warn!(user = %who, action = %action, resource = %resource, "request denied");
            ServiceError::Denied(d.to_string())
        })
    }

    /// Who ends a transaction must be allowed to produce to its half message's topic (a
    /// transaction no longer pending changes nothing, and needs nothing).
    ///
    /// # Errors
    /// As [`Service::authorize`].
    pub fn authorize_end_transaction(&self, who: &Identity, log_offset: u64, unique_id: &str) -> Result<(), ServiceError> {
        match self.engine.pending_half_topic(log_offset, unique_id) {
            Some(topic) => self.authorize_topic(who, Action::Produce, &topic),
            None => Ok(()),
        }
    }

    /// [`Service::authorize`] for a topic, through [`topic_resource`].
    ///
    /// # Errors
    /// As [`Service::authorize`].
    pub fn authorize_topic(&self, who: &Identity, action: Action, topic: &str) -> Result<(), ServiceError> {
        self.authorize(who, action, &topic_resource(topic))
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
