//! The admin console's files (built from `console/` by this crate's `build.rs` into
//! `$OUT_DIR/console`), served at `/` of the admin port. Embedded in release builds (read from
//! disk in debug builds); a broker built with `WASMQ_CONSOLE=off` says so at `/`.

use axum::http::{HeaderValue, Uri, header};
use axum::response::{Html, IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "$OUT_DIR/console/"]
struct Assets;

/// Scripts and styles from this origin only; WebAssembly may be compiled; nothing else loads.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>wasmq</title></head><body>\
<h1>wasmq</h1><p>This broker was built without its console (<code>WASMQ_CONSOLE=off</code>). Build it again \
without that variable to serve the console here; the admin API is at <code>/api/v1</code>.</p></body></html>";

/// Whether the console's files are there.
pub(crate) fn built() -> bool {
    Assets::get("index.html").is_some()
}

/// `GET /` and the console's files; anything else under `/api` is an unknown endpoint.
pub(crate) async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") || path == "metrics" {
        return crate::admin::error(404, "no such endpoint");
    }
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = Assets::get(path) else {
        return if path == "index.html" { Html(NOT_BUILT).into_response() } else { crate::admin::error(404, format!("no file {path}")) };
    };
    let mut resp = file.data.into_owned().into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(file.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}
