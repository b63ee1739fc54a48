//! The admin API from the browser: `fetch` with the bearer token, JSON in and out, errors as
//! the API's own words.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestInit, Response};

const TOKEN_KEY: &str = "wasmq-token";
const DARK_KEY: &str = "wasmq-dark";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The token the operator logged in with.
pub(crate) fn token() -> Option<String> {
    storage()?.get_item(TOKEN_KEY).ok()?
}

pub(crate) fn set_token(t: Option<&str>) {
    if let Some(s) = storage() {
        let _ = match t {
            Some(t) => s.set_item(TOKEN_KEY, t),
            None => s.remove_item(TOKEN_KEY),
        };
    }
}

pub(crate) fn dark_mode() -> bool {
    storage().and_then(|s| s.get_item(DARK_KEY).ok()?).is_some_and(|v| v == "1")
}

/// Switches the page's colours (a `dark` class on `<html>`), remembered across visits.
pub(crate) fn set_dark_mode(on: bool) {
    if let Some(s) = storage() {
        let _ = s.set_item(DARK_KEY, if on { "1" } else { "0" });
    }
    if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
        let _ = if on { root.class_list().add_1("dark") } else { root.class_list().remove_1("dark") };
    }
}

fn js(e: JsValue) -> String {
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// `GET /api/v1{path}`.
pub(crate) async fn get<T: DeserializeOwned>(path: &str) -> Result<T, String> {
    send("GET", path, None).await
}

/// A request to `/api/v1{path}` with a JSON body; an error answer becomes its `error` text.
pub(crate) async fn send<T: DeserializeOwned>(method: &str, path: &str, body: Option<String>) -> Result<T, String> {
    request(method, path, body.map(|b| JsValue::from_str(&b)), "application/json").await
}

/// A request with any body `fetch` takes (a string, a `File`, …) of `content_type`.
pub(crate) async fn request<T: DeserializeOwned>(method: &str, path: &str, body: Option<JsValue>, content_type: &str) -> Result<T, String> {
    let token = token().ok_or("not logged in")?;
    let init = RequestInit::new();
    init.set_method(method);
    let headers = Headers::new().map_err(js)?;
    headers.set("Authorization", &format!("Bearer {token}")).map_err(js)?;
    headers.set("Content-Type", content_type).map_err(js)?;
    init.set_headers(&headers);
    if let Some(b) = body {
        init.set_body(&b);
    }
    let req = Request::new_with_str_and_init(&format!("/api/v1{path}"), &init).map_err(js)?;
    let window = web_sys::window().ok_or("no window")?;
    let resp: Response = JsFuture::from(window.fetch_with_request(&req)).await.map_err(js)?.dyn_into().map_err(js)?;
    let text = JsFuture::from(resp.text().map_err(js)?).await.map_err(js)?.as_string().unwrap_or_default();
    if !resp.ok() {
        let said = serde_json::from_str::<wasmq_admin_types::ApiError>(&text).map(|e| e.error).unwrap_or(text);
        return Err(format!("{} {}: {said}", resp.status(), resp.status_text()));
    }
    // Empty answers (204) read as JSON null.
    serde_json::from_str(if text.is_empty() { "null" } else { &text }).map_err(|e| format!("unexpected answer: {e}"))
}

/// Percent-encodes a query value.
pub(crate) fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A message body's bytes.
pub(crate) fn body_bytes(b64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default()
}

/// A message body for display: its text when it is UTF-8, else its size.
pub(crate) fn body_text(b64: &str) -> String {
    String::from_utf8(body_bytes(b64)).unwrap_or_else(|e| format!("<{} bytes of binary>", e.as_bytes().len()))
}

/// `12.3 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[u]) }
}

/// `3d 4h`, `5m 2s`.
pub(crate) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// A time in ms since the epoch as ISO 8601 (UTC).
pub(crate) fn time(ms: u64) -> String {
    js_sys::Date::new(&JsValue::from_f64(ms as f64)).to_iso_string().as_string().unwrap_or_default()
}

/// A `datetime-local` input's value (local time) in ms since the epoch.
pub(crate) fn parse_local_time(v: &str) -> Option<u64> {
    let ms = js_sys::Date::parse(v);
    (ms.is_finite() && ms >= 0.0).then_some(ms as u64)
}
