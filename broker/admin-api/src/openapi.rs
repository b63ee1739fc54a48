//! The admin API's OpenAPI 3.1 document (`GET /api/v1/openapi.json`, no token needed): one
//! table of every endpoint, with JSON Schemas generated from the shared types (schemars). A test
//! holds the table and the router to the same routes.

use axum::Json;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};
use wasmq_admin_types as t;

pub(crate) const PATH: &str = "/api/v1/openapi.json";

/// A request or response body.
enum Body {
    /// JSON of a shared type.
    Json(fn(&mut SchemaGenerator) -> Value),
    /// A plugin's WebAssembly bytes.
    Wasm,
    /// Prometheus text.
    Text,
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

struct Endpoint {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    /// Query parameters: (name, description).
    query: &'static [(&'static str, &'static str)],
    request: Option<Body>,
    /// The success status and its body (none: 204).
    ok: u16,
    response: Option<Body>,
}

const fn ep(method: &'static str, path: &'static str, summary: &'static str, ok: u16, response: Option<Body>) -> Endpoint {
    Endpoint { method, path, summary, query: &[], request: None, ok, response }
}

fn endpoints() -> Vec<Endpoint> {
    use Body::{Json as J, Text, Wasm};
    vec![
        ep(
            "get",
            "/api/v1/broker",
            "This broker: name, role, version, log offsets, uptime, disk use.",
            200,
            Some(J(schema::<t::BrokerInfo>)),
        ),
        ep(
            "get",
            "/api/v1/cluster",
            "Every broker set (from the name servers, else this broker and its replicas).",
            200,
            Some(J(schema::<t::ClusterView>)),
        ),
        ep(
            "get",
            "/api/v1/controller",
            "The failover controller: nodes and leader; per broker set the master, epoch, in-sync set and each member's lag.",
            200,
            Some(J(schema::<t::ControllerView>)),
        ),
        ep(
            "get",
            "/api/v1/replicas",
            "This broker's replication: its slaves, or its master link.",
            200,
            Some(J(schema::<t::ReplicaStatus>)),
        ),
        ep("get", "/api/v1/topics", "Topics (internal ones left out).", 200, Some(J(schema::<Vec<t::TopicSummary>>))),
        Endpoint {
            request: Some(J(schema::<t::CreateTopic>)),
            ..ep(
                "post",
                "/api/v1/topics",
                "Create a topic with a queue count and, optionally, its own retention and message type.",
                201,
                Some(J(schema::<t::TopicSummary>)),
            )
        },
        ep("get", "/api/v1/topics/{name}", "A topic with each queue's min and max offsets.", 200, Some(J(schema::<t::TopicDetail>))),
        Endpoint {
            request: Some(J(schema::<t::UpdateTopic>)),
            ..ep(
                "patch",
                "/api/v1/topics/{name}",
                "Change a topic's message type (NORMAL, FIFO, DELAY, TRANSACTION, MIXED); sends of another kind are refused.",
                200,
                Some(J(schema::<t::TopicSummary>)),
            )
        },
        Endpoint {
            request: Some(J(schema::<t::GroupSettings>)),
            ..ep(
                "put",
                "/api/v1/groups/{name}",
                "Set a consumer group's settings (creating the group): `fifo` for in-order consumption by RocketMQ 5 consumers.",
                200,
                Some(J(schema::<t::GroupSettings>)),
            )
        },
        ep("delete", "/api/v1/topics/{name}", "Delete a topic (its messages stay in the log until retention).", 204, None),
        ep(
            "get",
            "/api/v1/topics/{name}/rate",
            "[[at_ms, messages per second], …] over the last ten minutes.",
            200,
            Some(J(schema::<Vec<(u64, f64)>>)),
        ),
        Endpoint {
            query: &[("key", "the message key to look for (at most 256 messages, newest first)")],
            ..ep(
                "get",
                "/api/v1/topics/{name}/messages",
                "Messages of a topic with a key (newest first).",
                200,
                Some(J(schema::<Vec<t::MessageView>>)),
            )
        },
        Endpoint {
            request: Some(J(schema::<t::SendMessage>)),
            ..ep(
                "post",
                "/api/v1/topics/{name}/messages",
                "Send a test message (waits as a producer's send does).",
                201,
                Some(J(schema::<t::SentMessage>)),
            )
        },
        Endpoint {
            query: &[
                ("offset", "first queue offset to read"),
                ("time", "or: start at the first message stored at or after this time (ms)"),
                ("count", "how many messages (default 50, at most 256)"),
            ],
            ..ep(
                "get",
                "/api/v1/topics/{name}/queues/{queue}/messages",
                "Browse a queue from an offset or a time.",
                200,
                Some(J(schema::<t::QueuePage>)),
            )
        },
        ep("get", "/api/v1/messages/{id}", "The newest message with this unique id.", 200, Some(J(schema::<t::MessageView>))),
        ep("get", "/api/v1/groups", "Consumer groups with mode and member count.", 200, Some(J(schema::<Vec<t::GroupSummary>>))),
        ep(
            "get",
            "/api/v1/groups/{name}",
            "A group: members, assignments, per-queue offset and lag.",
            200,
            Some(J(schema::<t::GroupDetail>)),
        ),
        ep("delete", "/api/v1/groups/{name}", "Delete a group's offsets (refused while it has members).", 204, None),
        Endpoint {
            request: Some(J(schema::<t::ResetOffset>)),
            ..ep(
                "post",
                "/api/v1/groups/{name}/reset-offset",
                "Reset a group's offsets on a topic to earliest, latest or a time.",
                200,
                Some(J(schema::<t::GroupDetail>)),
            )
        },
        ep(
            "get",
            "/api/v1/groups/{name}/lag-history",
            "[[at_ms, lag], …] over the last ten minutes.",
            200,
            Some(J(schema::<Vec<(u64, u64)>>)),
        ),
        ep("get", "/api/v1/groups/{name}/dlq", "The group's dead letters.", 200, Some(J(schema::<Vec<t::DeadLetter>>))),
        Endpoint {
            request: Some(J(schema::<t::Resend>)),
            ..ep("post", "/api/v1/groups/{name}/dlq/resend", "Send one dead letter back to its topic.", 200, Some(J(schema::<t::Resent>)))
        },
        ep(
            "post",
            "/api/v1/groups/{name}/dlq/resend-all",
            "Send every dead letter back to its topic.",
            200,
            Some(J(schema::<t::ResentAll>)),
        ),
        ep("get", "/api/v1/plugins", "Uploaded plugins with their versions and attachments.", 200, Some(J(schema::<Vec<t::PluginDetail>>))),
        Endpoint {
            request: Some(Wasm),
            ..ep(
                "post",
                "/api/v1/plugins",
                "Upload a plugin (a WebAssembly component); 201 for a new version, 200 for one already known.",
                201,
                Some(J(schema::<t::PluginVersion>)),
            )
        },
        ep("get", "/api/v1/plugins/{name}", "A plugin's versions and attachments.", 200, Some(J(schema::<t::PluginDetail>))),
        ep("get", "/api/v1/attachments", "Every plugin attachment with its statistics.", 200, Some(J(schema::<Vec<t::AttachmentView>>))),
        Endpoint {
            request: Some(J(schema::<t::AttachPlugin>)),
            ..ep(
                "put",
                "/api/v1/topics/{topic}/plugins/{role}",
                "Attach a `router` or `ordering-key` plugin to a topic.",
                200,
                Some(J(schema::<t::AttachmentView>)),
            )
        },
        ep("delete", "/api/v1/topics/{topic}/plugins/{role}", "Detach a topic's plugin.", 204, None),
        Endpoint {
            request: Some(J(schema::<t::AttachPlugin>)),
            ..ep(
                "put",
                "/api/v1/groups/{group}/filters/{topic}",
                "Attach a filter plugin to a group's subscription of a topic.",
                200,
                Some(J(schema::<t::AttachmentView>)),
            )
        },
        ep("delete", "/api/v1/groups/{group}/filters/{topic}", "Detach a group's filter.", 204, None),
        ep(
            "get",
            "/api/v1/transactions",
            "Undecided transactions by topic and producer group, with counters.",
            200,
            Some(J(schema::<t::Transactions>)),
        ),
        ep("get", "/api/v1/scheduled", "Scheduled messages waiting, overdue and due soon.", 200, Some(J(schema::<t::Scheduled>))),
        ep("get", "/metrics", "Prometheus metrics (text format).", 200, Some(Text)),
        ep("get", PATH, "This document (no token needed).", 200, None),
        Endpoint {
            request: Some(J(schema::<t::Login>)),
            ..ep(
                "post",
                "/api/v1/login",
                "Log in with a user name and password: a session (the `wasmq_session` cookie, and its token for `Authorization: Bearer`). Failed logins are rate limited (429).",
                200,
                Some(J(schema::<t::Session>)),
            )
        },
        ep("post", "/api/v1/logout", "End the session the request carries.", 204, None),
        ep("get", "/api/v1/me", "Who the request's credentials name, and their console role.", 200, Some(J(schema::<t::Me>))),
        ep("get", "/api/v1/users", "Users (no credentials shown). Needs admin on the cluster.", 200, Some(J(schema::<Vec<t::UserView>>))),
        Endpoint {
            request: Some(J(schema::<t::CreateUser>)),
            ..ep("post", "/api/v1/users", "Create a user with a password and roles.", 201, Some(J(schema::<t::UserView>)))
        },
        ep("get", "/api/v1/users/{name}", "A user.", 200, Some(J(schema::<t::UserView>))),
        Endpoint {
            request: Some(J(schema::<t::UpdateUser>)),
            ..ep(
                "patch",
                "/api/v1/users/{name}",
                "Change a user's password, roles or certificate names (a user may change its own password, giving the current one).",
                200,
                Some(J(schema::<t::UserView>)),
            )
        },
        ep("delete", "/api/v1/users/{name}", "Delete a user, its API tokens and policies; its sessions end.", 204, None),
        ep(
            "post",
            "/api/v1/users/{name}/access-key",
            "A new access secret for RocketMQ 5 clients (access key: the user's name), shown once (an admin, or the user itself).",
            200,
            Some(J(schema::<t::AccessKey>)),
        ),
        ep("get", "/api/v1/policies", "Every policy.", 200, Some(J(schema::<Vec<t::PolicyView>>))),
        Endpoint {
            request: Some(J(schema::<t::PolicyView>)),
            ..ep("post", "/api/v1/policies", "Add a policy (201; 200 when an equal one exists).", 201, Some(J(schema::<t::PolicyView>)))
        },
        Endpoint {
            request: Some(J(schema::<t::PolicyView>)),
            ..ep("delete", "/api/v1/policies", "Remove the policy equal to the body.", 204, None)
        },
        ep("get", "/api/v1/tokens", "API tokens: the caller's own (an admin: all).", 200, Some(J(schema::<Vec<t::TokenView>>))),
        Endpoint {
            request: Some(J(schema::<t::CreateToken>)),
            ..ep("post", "/api/v1/tokens", "Make an API token (its secret is shown once).", 201, Some(J(schema::<t::TokenCreated>)))
        },
        ep("delete", "/api/v1/tokens/{id}", "Delete an API token (one's own, or as an admin any).", 204, None),
        Endpoint {
            query: &[("limit", "how many entries, newest first (default 100, at most 10000)")],
            ..ep(
                "get",
                "/api/v1/audit",
                "The audit log: admin changes, refused requests and failed logins (who, from where, what, result).",
                200,
                Some(J(schema::<Vec<t::AuditEntry>>)),
            )
        },
    ]
}

/// Every documented (method, path), for the authorization table's test.
#[cfg(test)]
pub(crate) fn routes() -> Vec<(&'static str, &'static str)> {
    endpoints().into_iter().map(|e| (e.method, e.path)).collect()
}

fn content(body: &Body, g: &mut SchemaGenerator) -> Value {
    match body {
        Body::Json(f) => json!({ "application/json": { "schema": f(g) } }),
        Body::Wasm => json!({ "application/wasm": { "schema": { "type": "string", "contentMediaType": "application/wasm" } } }),
        Body::Text => json!({ "text/plain": { "schema": { "type": "string" } } }),
    }
}

/// The whole document.
pub(crate) fn document() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut g = settings.into_generator();
    let error = g.subschema_for::<t::ApiError>().to_value();
    let mut paths = serde_json::Map::new();
    for e in endpoints() {
        let mut parameters: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        parameters.extend(
            e.query.iter().map(|(name, d)| json!({ "name": name, "in": "query", "description": d, "schema": { "type": "string" } })),
        );
        let mut responses = serde_json::Map::new();
        let mut ok = json!({ "description": if e.ok == 204 { "done" } else { "success" } });
        if let Some(r) = &e.response {
            ok["content"] = content(r, &mut g);
        }
        responses.insert(e.ok.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({ "description": "an error, in words (400 bad input, 401 not logged in, 403 not authorized or cross-origin, 404 unknown, 409 conflict, 429 too many failed logins)",
                    "content": { "application/json": { "schema": error } } }),
        );
        let mut op = json!({ "summary": e.summary, "operationId": format!("{}{}", e.method, e.path.replace(['/', '{', '}', '.', '-'], "_")), "parameters": parameters, "responses": responses });
        if e.path == PATH || e.path == "/api/v1/login" {
            op["security"] = json!([]);
        }
        if let Some(b) = &e.request {
            op["requestBody"] = json!({ "required": true, "content": content(b, &mut g) });
        }
        // What the caller needs (`authz.rs`), for people and for the authorization matrix test.
        op["x-wasmq-authorization"] = match crate::authz::need(&e.method.to_uppercase().parse().unwrap_or_default(), e.path) {
            Some(crate::authz::Need::Public) | None => json!({ "public": true }),
            Some(crate::authz::Need::LoggedIn) => json!({ "logged_in": true }),
            Some(crate::authz::Need::Do(action, on)) => json!({ "action": action.name(), "resource": match on {
                crate::authz::On::Cluster => "cluster".to_owned(),
                crate::authz::On::Topic(p) => format!("topic:{{{p}}}"),
                crate::authz::On::Group(p) => format!("group:{{{p}}}"),
                crate::authz::On::TopicInBody => "topic:(the body's name)".to_owned(),
            } }),
        };
        paths.entry(e.path.to_owned()).or_insert_with(|| json!({}))[e.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "wasmq admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Everything the console does. Log in (POST /api/v1/login) for a session cookie or bearer token, or send an API token as a bearer token; once the broker has users, every endpoint checks the caller's roles and policies. The broker's configured admin token may do everything, its read-only token only read. Requests whose Origin is not the admin address itself are refused."
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } }
        },
        "security": [{ "token": [] }]
    })
}

pub(crate) async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every (method, path) the router serves, read from its source: each `.route(` call up to
    /// the next call of the builder chain.
    fn routed() -> BTreeSet<(String, String)> {
        let src = include_str!("admin.rs");
        let mut out = BTreeSet::new();
        for chunk in src.split(".route(").skip(1) {
            let chunk = chunk.split("\n        .").next().unwrap_or(chunk);
            let path = if chunk.starts_with("crate::openapi::PATH") { PATH } else { chunk.split('"').nth(1).expect("a quoted path") };
            for m in ["get", "post", "put", "patch", "delete"] {
                if [format!(", {m}("), format!("\n            {m}("), format!(").{m}(")].iter().any(|p| chunk.contains(p.as_str())) {
                    out.insert((m.to_owned(), path.to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_describes_every_route_and_only_those() {
        let documented: BTreeSet<(String, String)> = endpoints().into_iter().map(|e| (e.method.to_owned(), e.path.to_owned())).collect();
        let routed = routed();
        assert!(routed.len() > 30, "the route reader found the routes: {routed:?}");
        assert_eq!(documented.difference(&routed).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "documented but not routed");
        assert_eq!(routed.difference(&documented).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "routed but not documented");
    }

    /// Each operation says what it needs; only the document itself and the login are public.
    #[test]
    fn every_operation_says_what_it_needs() {
        let doc = document();
        let mut n = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let a = &op["x-wasmq-authorization"];
                assert!(a.is_object(), "{method} {path}");
                if a["public"] == true {
                    assert!(path == PATH || path == "/api/v1/login", "{method} {path} is public");
                }
                n += 1;
            }
        }
        assert!(n > 40, "{n}");
        assert_eq!(
            doc["paths"]["/api/v1/topics/{name}"]["delete"]["x-wasmq-authorization"],
            json!({"action": "delete", "resource": "topic:{name}"})
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "missing schema {name}");
        }
        assert!(schemas.contains_key("ClusterView") && schemas.contains_key("MessageView"), "{:?}", schemas.keys());
        assert_eq!(
            doc["paths"]["/api/v1/topics"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/CreateTopic"
        );
    }
}
