//! The admin HTTP API (JSON under `/api/v1`, bearer token), served over HTTPS by [`crate::serve`].
//! `router(state)` is a plain axum router, tested without sockets.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use wasmq_admin_types::{ApiError, BrokerInfo, CreateTopic, QueueOffsets, TopicDetail, TopicSummary};
use wasmq_engine::Engine;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub engine: Arc<Engine>,
    pub token: Arc<str>,
    pub listen: String,
    pub admin_listen: String,
}

fn error(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(ApiError { error: message.into() })).into_response()
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.as_bytes(), state.token.as_bytes()) => next.run(req).await,
        Some(_) => error(401, "wrong token"),
        None => error(401, "missing bearer token (Authorization: Bearer <token>)"),
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/v1/broker", get(broker_info))
        .route("/api/v1/topics", get(list_topics).post(create_topic))
        .route("/api/v1/topics/{name}", get(describe_topic).delete(delete_topic))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .fallback(|| async { error(404, "no such endpoint") })
        .with_state(state)
}

async fn broker_info(State(s): State<AdminState>) -> Json<BrokerInfo> {
    let store = s.engine.store();
    Json(BrokerInfo {
        broker_name: s.engine.broker_name().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        listen: s.listen.clone(),
        admin_listen: s.admin_listen.clone(),
        flush: match store.config().flush {
            wasmq_store::FlushMode::Sync { .. } => "sync".into(),
            wasmq_store::FlushMode::Async { .. } => "async".into(),
        },
        log_min_offset: store.min_offset(),
        log_end_offset: store.end_offset(),
        log_durable_offset: store.durable_offset(),
        store_failure: store.failure().map(|f| f.to_string()),
        topics: s.engine.topics().len(),
    })
}

async fn list_topics(State(s): State<AdminState>) -> Json<Vec<TopicSummary>> {
    Json(s.engine.topics().into_iter().map(|(name, c)| TopicSummary { name, queues: c.queues, created_ms: c.created_ms }).collect())
}

async fn create_topic(State(s): State<AdminState>, body: Result<Json<CreateTopic>, axum::extract::rejection::JsonRejection>) -> Response {
    let Json(t) = match body {
        Ok(b) => b,
        Err(e) => return error(400, e.body_text()),
    };
    match s.engine.create_topic(&t.name, t.queues) {
        Ok(c) => (StatusCode::CREATED, Json(TopicSummary { name: t.name, queues: c.queues, created_ms: c.created_ms })).into_response(),
        Err(e) => error(crate::wire::topic_status(&e), e.to_string()),
    }
}

async fn describe_topic(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.engine.describe(&name) {
        Ok(t) => Json(TopicDetail {
            name: t.name,
            created_ms: t.created_ms,
            queues: t
                .queues
                .into_iter()
                .map(|q| QueueOffsets { queue_id: q.queue_id, min_offset: q.min_offset, max_offset: q.max_offset })
                .collect(),
        })
        .into_response(),
        Err(e) => error(crate::wire::topic_status(&e), e.to_string()),
    }
}

async fn delete_topic(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.engine.delete_topic(&name) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(crate::wire::topic_status(&e), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(app: &Router, method: &str, uri: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
        let mut req = axum::http::Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn topics_crud_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = wasmq_store::Store::open(wasmq_store::StoreConfig::small_for_tests(dir.path().join("s"))).unwrap();
        let engine = Engine::open(Arc::new(store), dir.path().join("c"), "b", Arc::new(wasmq_store::SystemClock)).unwrap();
        let token = "0123456789abcdef0123";
        let app = router(AdminState { engine: Arc::new(engine), token: token.into(), listen: "l".into(), admin_listen: "a".into() });
        assert_eq!(call(&app, "GET", "/api/v1/topics", None, "").await.0, 401);
        assert_eq!(call(&app, "GET", "/api/v1/topics", Some("wrong-token-xxxxxx"), "").await.0, 401);
        let (s, v) = call(&app, "POST", "/api/v1/topics", Some(token), r#"{"name":"orders","queues":4}"#).await;
        assert_eq!((s, v["queues"].as_u64()), (201, Some(4)));
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(token), r#"{"name":"orders","queues":4}"#).await.0, 409);
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(token), r#"{"name":"bad name","queues":4}"#).await.0, 400);
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(token), r#"{"name":"x","queues":0}"#).await.0, 400);
        assert_eq!(call(&app, "POST", "/api/v1/topics", Some(token), "not json").await.0, 400);
        let (s, v) = call(&app, "GET", "/api/v1/topics/orders", Some(token), "").await;
        assert_eq!((s, v["queues"].as_array().map(Vec::len)), (200, Some(4)));
        assert_eq!(call(&app, "GET", "/api/v1/topics", Some(token), "").await.1.as_array().map(Vec::len), Some(1));
        assert_eq!(call(&app, "GET", "/api/v1/broker", Some(token), "").await.1["topics"], 1);
        assert_eq!(call(&app, "DELETE", "/api/v1/topics/orders", Some(token), "").await.0, 204);
        assert_eq!(call(&app, "GET", "/api/v1/topics/orders", Some(token), "").await.0, 404);
    }
}
