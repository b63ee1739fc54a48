//! Logins and who may do what: `POST /login` (a session: cookie for the console, bearer token
//! for tools), `/logout`, `/me`, users, policies and API tokens. Changing users and policies
//! needs `admin` on the cluster; a user may change its own password, make its own access key
//! and manage its own API tokens.

use std::sync::Arc;

use axum::extract::{Extension, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, body::Bytes};
use wasmq_admin_types::{
    AccessKey, AuditEntry, CreateToken, CreateUser, Login, Me, PolicyView, Session, TokenCreated, TokenView, UpdateUser, UserView,
};
use wasmq_auth::{Action, AuthError, Effect, Pattern, Policy, Resource, Subject};

use crate::admin::{AdminState, error};
use crate::authz::{Caller, SESSION_COOKIE, session_cookie};

/// The address a request came from (an extension `serve` adds), for login rate limiting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub std::net::SocketAddr);

fn auth_error(e: &AuthError) -> Response {
    let status = match e {
        AuthError::Invalid(_) => 400,
        AuthError::NotFound(_) => 404,
        AuthError::Exists(_) => 409,
        AuthError::Unauthenticated(_) => 401,
        AuthError::RateLimited(_) => 429,
        AuthError::Io(_) => 500,
    };
    error(status, e.to_string())
}

/// Users, policies and API tokens change on the master: a slave adopts them whole from it.
fn on_master(s: &AdminState) -> Result<(), Box<Response>> {
    match &s.replication.role {
        wasmq_service::Role::Slave { master, .. } => Err(Box::new(error(
            409,
            format!("this broker is a slave: change users, policies and API tokens on its master ({master}); it takes them from there"),
        ))),
        wasmq_service::Role::Master => Ok(()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(error(400, format!("bad JSON: {e}"))))
}

/// Runs argon2 work (hashing, checking a password) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, AuthError> + Send + 'static) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(auth_error(&e)),
        Err(e) => Err(error(500, e.to_string())),
    }
}

fn me_of(s: &AdminState, caller: &Caller) -> Me {
    match caller {
        Caller::Token { read_only } => {
            let role = if *read_only { "viewer" } else { "admin" };
            Me { user: format!("{role} token"), roles: vec![role.to_owned()], console_role: Some(role.to_owned()) }
        }
        Caller::User(asker) => {
            let who = &asker.who;
            let security = s.service.security();
            let roles = who.user().and_then(|u| security.user(u)).map(|u| u.roles).unwrap_or_default();
            Me { user: who.to_string(), roles, console_role: security.console_role(who).map(|r| r.name().to_owned()) }
        }
    }
}

pub(crate) async fn login(State(s): State<AdminState>, peer: Option<Extension<Peer>>, body: Bytes) -> Response {
    let login: Login = match parse(&body) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let service = Arc::clone(&s.service);
    let ip = peer.map(|Extension(Peer(p))| p.ip());
    let user = login.user.clone();
    let who = match blocking(move || service.login(&login.user, &login.password, ip, crate::authz::VIA)).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    let token = s.service.security().start_session(&user);
    let me = me_of(&s, &Caller::User(wasmq_service::Asker::new(who, ip, crate::authz::VIA)));
    let mut resp = Json(Session { token: token.clone(), me }).into_response();
    if let Ok(v) = format!("{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/").parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(crate) async fn logout(State(s): State<AdminState>, req: Request) -> Response {
    let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    for token in bearer.map(str::to_owned).into_iter().chain(session_cookie(&req)) {
        s.service.security().end_session(&token);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0").parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(crate) async fn me(State(s): State<AdminState>, Extension(caller): Extension<Caller>) -> Json<Me> {
    Json(me_of(&s, &caller))
}

fn view(u: wasmq_auth::UserView) -> UserView {
    UserView { name: u.name, roles: u.roles, access_key: u.access_key, certificates: u.certificates }
}

pub(crate) async fn list_users(State(s): State<AdminState>) -> Json<Vec<UserView>> {
    Json(s.service.security().users().into_iter().map(view).collect())
}

pub(crate) async fn describe_user(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.service.security().user(&name) {
        Some(u) => Json(view(u)).into_response(),
        None => error(404, format!("user {name} does not exist")),
    }
}

pub(crate) async fn create_user(State(s): State<AdminState>, body: Bytes) -> Response {
    if let Err(r) = on_master(&s) {
        return *r;
    }
    let c: CreateUser = match parse(&body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let security = Arc::clone(s.service.security());
    let name = c.name.clone();
    match blocking(move || security.create_user(&c.name, &c.password, &c.roles)).await {
        Ok(()) => {
            tracing::info!(user = name, "user created");
            (StatusCode::CREATED, Json(s.service.security().user(&name).map(view))).into_response()
        }
        Err(r) => r,
    }
}

/// An admin changes anything of a user; a user may change its own password only.
pub(crate) async fn update_user(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = on_master(&s) {
        return *r;
    }
    let u: UpdateUser = match parse(&body) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let own = caller.user() == Some(name.as_str());
    if !(own && u.roles.is_none() && u.certificates.is_none())
        && let Err(r) = caller.allow(&s, Action::Admin, &Resource::Cluster)
    {
        return *r;
    }
    // One's own password only with the current one: a session or token taken over does not
    // become the account.
    if own && u.password.is_some() {
        let Some(current) = u.current_password.clone() else {
            return error(400, "to change your own password, give current_password too");
        };
        let (service, user) = (Arc::clone(&s.service), name.clone());
        let from = match &caller {
            Caller::User(a) => a.from,
            Caller::Token { .. } => None,
        };
        match blocking(move || service.login(&user, &current, from, crate::authz::VIA)).await {
            Ok(_) => {}
            Err(r) if r.status() == axum::http::StatusCode::UNAUTHORIZED => return error(403, "the current password is wrong"),
            Err(r) => return r,
        }
    }
    let security = Arc::clone(s.service.security());
    let target = name.clone();
    let changed = blocking(move || {
        if security.user(&target).is_none() {
            return Err(AuthError::NotFound(format!("user {target}")));
        }
        if let Some(p) = &u.password {
            security.set_password(&target, p)?;
        }
        if let Some(r) = &u.roles {
            security.set_roles(&target, r)?;
        }
        if let Some(c) = &u.certificates {
            security.set_certificates(&target, c)?;
        }
        Ok(())
    })
    .await;
    match changed {
        Ok(()) => Json(s.service.security().user(&name).map(view)).into_response(),
        Err(r) => r,
    }
}

pub(crate) async fn delete_user(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    if let Err(r) = on_master(&s) {
        return *r;
    }
    match s.service.security().delete_user(&name) {
        Ok(()) => {
            tracing::info!(user = name, "user deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => auth_error(&e),
    }
}

/// A new access secret for the user's access key (an admin's, or the user's own).
pub(crate) async fn new_access_key(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = on_master(&s) {
        return *r;
    }
    if caller.user() != Some(name.as_str())
        && let Err(r) = caller.allow(&s, Action::Admin, &Resource::Cluster)
    {
        return *r;
    }
    match s.service.security().new_access_secret(&name) {
        Ok(secret) => Json(AccessKey { access_key: name, secret_key: secret }).into_response(),
        Err(e) => auth_error(&e),
    }
}

fn policy(p: PolicyView) -> Result<Policy, AuthError> {
    Ok(Policy {
        subject: Subject::parse(&p.subject)?,
        resource: Pattern::parse(&p.resource)?,
        actions: p.actions.iter().map(|a| Action::parse(a)).collect::<Result<_, _>>()?,
        effect: match p.effect.as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            other => return Err(AuthError::Invalid(format!("effect {other:?}: allow or deny"))),
        },
    })
}

fn policy_view(p: Policy) -> PolicyView {
    PolicyView {
        subject: p.subject.to_string(),
        resource: p.resource.to_string(),
        actions: p.actions.iter().map(|a| a.name().to_owned()).collect(),
        effect: match p.effect {
            Effect::Allow => "allow".into(),
            Effect::Deny => "deny".into(),
        },
    }
}

/// The policy a change names, on a master (else the answer refusing it).
fn policy_to_change(s: &AdminState, body: &Bytes) -> Result<Policy, Box<Response>> {
    on_master(s)?;
    policy(parse::<PolicyView>(body)?).map_err(|e| Box::new(auth_error(&e)))
}

pub(crate) async fn list_policies(State(s): State<AdminState>) -> Json<Vec<PolicyView>> {
    Json(s.service.security().policies().into_iter().map(policy_view).collect())
}

pub(crate) async fn add_policy(State(s): State<AdminState>, body: Bytes) -> Response {
    let p = match policy_to_change(&s, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match s.service.security().add_policy(p.clone()) {
        Ok(true) => (StatusCode::CREATED, Json(policy_view(p))).into_response(),
        Ok(false) => Json(policy_view(p)).into_response(),
        Err(e) => auth_error(&e),
    }
}

pub(crate) async fn remove_policy(State(s): State<AdminState>, body: Bytes) -> Response {
    let p = match policy_to_change(&s, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match s.service.security().remove_policy(p) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => auth_error(&e),
    }
}

fn token_view(t: wasmq_auth::TokenView) -> TokenView {
    TokenView { id: t.id, user: t.user, name: t.name, created_ms: t.created_ms, expires_ms: t.expires_ms }
}

/// Whether the caller may manage `owner`'s tokens: its own, or anyone's as an admin.
fn may_manage_tokens_of(s: &AdminState, caller: &Caller, owner: &str) -> Result<(), Box<Response>> {
    if caller.user() == Some(owner) { Ok(()) } else { caller.allow(s, Action::Admin, &Resource::Cluster) }
}

pub(crate) async fn list_tokens(State(s): State<AdminState>, Extension(caller): Extension<Caller>) -> Json<Vec<TokenView>> {
    let all = caller.allow(&s, Action::Admin, &Resource::Cluster).is_ok();
    let user = if all { None } else { Some(caller.user().unwrap_or_default()) };
    Json(s.service.security().tokens(user).into_iter().map(token_view).collect())
}

pub(crate) async fn create_token(State(s): State<AdminState>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    if let Err(r) = on_master(&s) {
        return *r;
    }
    let c: CreateToken = match parse(&body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(owner) = c.user.clone().or_else(|| caller.user().map(str::to_owned)) else {
        return error(400, "name the token's user (a configured token is no user)");
    };
    if let Err(r) = may_manage_tokens_of(&s, &caller, &owner) {
        return *r;
    }
    let ttl = c.ttl_ms.map(std::time::Duration::from_millis);
    match s.service.security().create_token(&owner, &c.name, ttl, crate::now_ms()) {
        Ok((v, token)) => (StatusCode::CREATED, Json(TokenCreated { token, view: token_view(v) })).into_response(),
        Err(e) => auth_error(&e),
    }
}

pub(crate) async fn delete_token(State(s): State<AdminState>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    if let Err(r) = on_master(&s) {
        return *r;
    }
    let Some(owner) = s.service.security().token_owner(&id) else {
        return error(404, format!("API token {id} does not exist"));
    };
    if let Err(r) = may_manage_tokens_of(&s, &caller, &owner) {
        return *r;
    }
    match s.service.security().delete_token(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => auth_error(&e),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    limit: Option<usize>,
}

/// The audit log, newest first (default 100 entries).
pub(crate) async fn audit(State(s): State<AdminState>, axum::extract::Query(q): axum::extract::Query<AuditQuery>) -> Json<Vec<AuditEntry>> {
    let entries = s.service.audit().recent(q.limit.unwrap_or(100));
    Json(
        entries
            .into_iter()
            .map(|e| AuditEntry {
                at_ms: e.at_ms,
                user: e.user,
                from: e.from,
                via: e.via,
                what: e.what,
                resource: e.resource,
                result: e.result,
            })
            .collect(),
    )
}
