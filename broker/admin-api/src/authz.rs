//! Who calls the admin API and what each endpoint needs: [`ENDPOINTS`] gives every route's
//! decision (a test holds it to the OpenAPI table, which another holds to the router), and
//! [`auth`] applies it to each request.
//!
//! Credentials, in order: `Authorization: Bearer <token>` — an API token (`wqt_…`), a session
//! token from `POST /api/v1/login`, or the broker's configured admin / read-only token (which
//! act as before users existed) — else the `wasmq_session` cookie the console's login set.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use wasmq_service::{Action, Asker, Identity, Resource};

use crate::admin::{AdminState, error};

/// The admin API's name in the audit log.
pub(crate) const VIA: &str = "admin";
/// The console's session cookie.
pub(crate) const SESSION_COOKIE: &str = "wasmq_session";
/// Largest body read to find the name of a topic being created.
const CREATE_BODY_BYTES_MAX: usize = 64 << 10;

/// Where an endpoint's resource comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    Cluster,
    /// The topic named by this path parameter.
    Topic(&'static str),
    /// The group named by this path parameter.
    Group(&'static str),
    /// The topic named by the JSON body's `name`.
    TopicInBody,
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing (the API's description, the login itself).
    Public,
    /// Any logged-in caller; the handler decides the rest (it depends on what the request
    /// finds: a message's topic, a token's owner, whether a user changes itself).
    LoggedIn,
    Do(Action, On),
}

use Action::{Admin, Alter, Consume, Create, Delete, Describe, Produce};
use Need::{Do, LoggedIn, Public};
use On::{Cluster, Group, Topic, TopicInBody};

/// Every endpoint (method, path as routed) and what it needs.
pub(crate) const ENDPOINTS: &[(&str, &str, Need)] = &[
    ("get", "/api/v1/broker", Do(Describe, Cluster)),
    ("get", "/api/v1/cluster", Do(Describe, Cluster)),
    ("get", "/api/v1/controller", Do(Describe, Cluster)),
    ("get", "/api/v1/replicas", Do(Describe, Cluster)),
    ("get", "/api/v1/topics", Do(Describe, Cluster)),
    ("post", "/api/v1/topics", Do(Create, TopicInBody)),
    ("get", "/api/v1/topics/{name}", Do(Describe, Topic("name"))),
    ("patch", "/api/v1/topics/{name}", Do(Alter, Topic("name"))),
    ("delete", "/api/v1/topics/{name}", Do(Delete, Topic("name"))),
    ("get", "/api/v1/topics/{name}/rate", Do(Describe, Topic("name"))),
    ("get", "/api/v1/topics/{name}/messages", Do(Consume, Topic("name"))),
    ("post", "/api/v1/topics/{name}/messages", Do(Produce, Topic("name"))),
    ("get", "/api/v1/topics/{name}/queues/{queue}/messages", Do(Consume, Topic("name"))),
    ("put", "/api/v1/topics/{topic}/plugins/{role}", Do(Alter, Topic("topic"))),
    ("delete", "/api/v1/topics/{topic}/plugins/{role}", Do(Alter, Topic("topic"))),
    ("get", "/api/v1/groups", Do(Describe, Cluster)),
    ("get", "/api/v1/groups/{name}", Do(Describe, Group("name"))),
    ("put", "/api/v1/groups/{name}", Do(Alter, Group("name"))),
    ("delete", "/api/v1/groups/{name}", Do(Delete, Group("name"))),
    ("post", "/api/v1/groups/{name}/reset-offset", Do(Alter, Group("name"))),
    ("get", "/api/v1/groups/{name}/dlq", Do(Consume, Group("name"))),
    ("post", "/api/v1/groups/{name}/dlq/resend", Do(Alter, Group("name"))),
    ("post", "/api/v1/groups/{name}/dlq/resend-all", Do(Alter, Group("name"))),
    ("get", "/api/v1/groups/{name}/lag-history", Do(Describe, Group("name"))),
    ("put", "/api/v1/groups/{group}/filters/{topic}", Do(Alter, Group("group"))),
    ("delete", "/api/v1/groups/{group}/filters/{topic}", Do(Alter, Group("group"))),
    ("get", "/api/v1/plugins", Do(Describe, Cluster)),
    // A plugin is code the broker runs: the cluster's admins upload it.
    ("post", "/api/v1/plugins", Do(Admin, Cluster)),
    ("get", "/api/v1/plugins/{name}", Do(Describe, Cluster)),
    ("get", "/api/v1/attachments", Do(Describe, Cluster)),
    ("get", "/api/v1/transactions", Do(Describe, Cluster)),
    ("get", "/api/v1/scheduled", Do(Describe, Cluster)),
    ("get", "/api/v1/messages/{id}", LoggedIn),
    ("get", "/metrics", Do(Describe, Cluster)),
    ("get", "/api/v1/openapi.json", Public),
    ("post", "/api/v1/login", Public),
    ("post", "/api/v1/logout", LoggedIn),
    ("get", "/api/v1/me", LoggedIn),
    ("get", "/api/v1/users", Do(Admin, Cluster)),
    ("post", "/api/v1/users", Do(Admin, Cluster)),
    ("get", "/api/v1/users/{name}", Do(Admin, Cluster)),
    ("patch", "/api/v1/users/{name}", LoggedIn),
    ("delete", "/api/v1/users/{name}", Do(Admin, Cluster)),
    ("post", "/api/v1/users/{name}/access-key", LoggedIn),
    ("get", "/api/v1/policies", Do(Admin, Cluster)),
    ("post", "/api/v1/policies", Do(Admin, Cluster)),
    ("delete", "/api/v1/policies", Do(Admin, Cluster)),
    ("get", "/api/v1/tokens", LoggedIn),
    ("post", "/api/v1/tokens", LoggedIn),
    ("delete", "/api/v1/tokens/{id}", LoggedIn),
    ("get", "/api/v1/audit", Do(Admin, Cluster)),
];

/// Who made a request, for handlers (an extension the middleware adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The broker's configured admin token (or, `read_only`, its read-only token).
    Token {
        read_only: bool,
    },
    User(Asker),
}

impl Caller {
    /// Whether the caller may do `action` on `resource` (a 403 answer saying why if not).
    pub(crate) fn allow(&self, s: &AdminState, action: Action, resource: &Resource) -> Result<(), Box<Response>> {
        match self {
            Self::Token { read_only: false } => Ok(()),
            // Reads, as before users existed (the endpoints a GET reaches).
            Self::Token { read_only: true } if matches!(action, Describe | Consume) => Ok(()),
            Self::Token { read_only: true } => Err(Box::new(error(403, "the read-only token cannot change anything; use the admin token"))),
            Self::User(asker) => s.service.authorize(asker, action, resource).map_err(|e| Box::new(error(403, e.to_string()))),
        }
    }

    /// The user, if the caller is one.
    pub(crate) fn user(&self) -> Option<&str> {
        match self {
            Self::User(asker) => asker.who.user(),
            Self::Token { .. } => None,
        }
    }
}

/// The decision for `method` on the routed `path`.
pub(crate) fn need(method: &Method, path: &str) -> Option<Need> {
    let method = method.as_str().to_ascii_lowercase();
    let method = if method == "head" { "get" } else { method.as_str() };
    ENDPOINTS.iter().find(|(m, p, _)| *m == method && *p == path).map(|(_, _, n)| *n)
}

/// The value of `{name}` in `uri_path` routed by `pattern` (percent-decoded).
fn param(pattern: &str, uri_path: &str, name: &str) -> Option<String> {
    let at = pattern.split('/').position(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) == Some(name))?;
    let raw = uri_path.split('/').nth(at)?;
    percent_encoding::percent_decode_str(raw).decode_utf8().ok().map(|s| s.into_owned())
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    wasmq_auth::password::same(a, b)
}

/// The session token in the request's cookies, if any.
pub(crate) fn session_cookie(req: &Request) -> Option<String> {
    req.headers().get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == SESSION_COOKIE && !v.is_empty()).then(|| v.to_owned())
    })
}

/// Who the request's credentials name; `Err` answers 401.
fn caller(s: &AdminState, req: &Request) -> Result<Caller, Box<Response>> {
    let from = req.extensions().get::<crate::users::Peer>().map(|p| p.0.ip());
    let user = |who: Identity| Caller::User(Asker::new(who, from, VIA));
    let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let security = s.service.security();
    let unauthenticated = |e: wasmq_auth::AuthError| Box::new(error(401, e.to_string()));
    match bearer {
        Some(t) if same(t.as_bytes(), s.token.as_bytes()) => Ok(Caller::Token { read_only: false }),
        Some(t) if s.read_token.as_deref().is_some_and(|r| same(t.as_bytes(), r.as_bytes())) => Ok(Caller::Token { read_only: true }),
        Some(t) if t.starts_with("wqt_") => security.token_user(t, crate::now_ms()).map(user).map_err(unauthenticated),
        Some(t) if security.enforcing() => security.session_user(t).map(user).map_err(unauthenticated),
        Some(_) => Err(Box::new(error(401, "wrong token"))),
        None => match session_cookie(req) {
            Some(t) => security.session_user(&t).map(user).map_err(unauthenticated),
            None => Err(Box::new(error(
                401,
                "not logged in: POST /api/v1/login with a user and password, or send Authorization: Bearer <API token>",
            ))),
        },
    }
}

/// The resource `on` names in this request (reading a created topic's name from its body).
async fn resource(on: On, pattern: &str, req: Request) -> Result<(Resource, Request), Box<Response>> {
    let path = req.uri().path().to_owned();
    let from_path = |name: &str| param(pattern, &path, name).ok_or_else(|| Box::new(error(400, format!("the path has no {{{name}}}"))));
    Ok(match on {
        On::Cluster => (Resource::Cluster, req),
        On::Topic(p) => (wasmq_service::topic_resource(&from_path(p)?), req),
        On::Group(p) => (Resource::Group(from_path(p)?), req),
        On::TopicInBody => {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, CREATE_BODY_BYTES_MAX)
                .await
                .map_err(|_| Box::new(error(413, format!("a topic's creation takes at most {CREATE_BODY_BYTES_MAX} bytes"))))?;
            let name = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                .unwrap_or_default();
            (wasmq_service::topic_resource(&name), Request::from_parts(parts, axum::body::Body::from(bytes)))
        }
    })
}

/// Refuses a request from another origin (a page elsewhere posting here), finds who sent it,
/// and lets it through only if the endpoint's decision allows it; handlers find the
/// [`Caller`] in the request's extensions.
pub(crate) async fn auth(State(s): State<AdminState>, mut req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if origin.to_str().ok() != Some(&format!("https://{host}")) {
            return error(403, "cross-origin request refused: the admin API answers pages it serves itself");
        }
    }
    let Some(pattern) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()) else {
        return next.run(req).await;
    };
    let Some(need) = need(req.method(), &pattern) else {
        return error(500, format!("{} {pattern} has no authorization decision", req.method()));
    };
    if need == Need::Public {
        return next.run(req).await;
    }
    let caller = match caller(&s, &req) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Need::Do(action, on) = need {
        let (resource, r) = match resource(on, &pattern, req).await {
            Ok(x) => x,
            Err(r) => return *r,
        };
        req = r;
        if let Err(r) = caller.allow(&s, action, &resource) {
            return *r;
        }
    }
    let change = !matches!(*req.method(), Method::GET | Method::HEAD);
    let what = format!("{} {}", req.method(), req.uri().path());
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    if change {
        let status = resp.status();
        let result = if status.is_success() { "ok".to_owned() } else { format!("failed: {}", status.as_u16()) };
        let asker = match &caller {
            Caller::User(a) => a.clone(),
            Caller::Token { read_only } => {
                Asker::new(Identity::User(if *read_only { "read-only token" } else { "admin token" }.into()), None, VIA)
            }
        };
        s.service.record(&asker, &what, &pattern, &result);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_found_and_decoded() {
        assert_eq!(param("/api/v1/topics/{name}/rate", "/api/v1/topics/a%20b/rate", "name").as_deref(), Some("a b"));
        assert_eq!(param("/api/v1/groups/{group}/filters/{topic}", "/api/v1/groups/g/filters/t", "topic").as_deref(), Some("t"));
        assert_eq!(param("/api/v1/topics", "/api/v1/topics", "name"), None);
    }

    /// Every endpoint of the OpenAPI table (held to the router by its own test) has exactly one
    /// decision here, and nothing else does: a new endpoint without a decision fails this test
    /// (and, routed, answers 500 rather than run unchecked).
    #[test]
    fn every_endpoint_has_one_decision() {
        let mut documented: Vec<(String, String)> =
            crate::openapi::routes().into_iter().map(|(m, p)| (m.to_owned(), p.to_owned())).collect();
        documented.sort();
        let mut decided: Vec<(String, String)> = ENDPOINTS.iter().map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned())).collect();
        decided.sort();
        let before = decided.len();
        decided.dedup();
        assert_eq!(before, decided.len(), "an endpoint is decided twice");
        assert_eq!(decided, documented);
    }
}
