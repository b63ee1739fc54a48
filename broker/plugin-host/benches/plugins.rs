//! Per-message cost of plugins where the broker runs them: a router (`tenant-router`) on the
//! send path and a filter (`content-filter`) on the delivery path, in batches of 100 and of 1,
//! through the broker's own `PluginRegistry` and the engine's `place` / `filter_delivery` (batch
//! building, the sandboxed call, applying decisions).
//!
//! `cargo bench -p wasmq-plugin-host --bench plugins` (= `just bench-plugins`, which also runs the
//! throughput comparison through a broker). Custom harness: prints ns/message per case.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmq_admin_types::AttachPlugin;
use wasmq_engine::{Engine, Plugins as _};
use wasmq_plugin_host::{Limits, PluginRegistry, Role};
use wasmq_store::{NewMessage, Properties, QueueRead};

const QUEUES: u32 = 8;
const BODY_BYTES: usize = 1024;
const RUN: Duration = Duration::from_secs(2);

fn message(i: usize) -> NewMessage {
    NewMessage {
        properties: Properties {
            keys: vec![format!("k{}", i % 1024)],
            unique_id: Some(format!("id-{i}")),
            user: vec![("tenant".into(), "acme".into())],
            ..Properties::default()
        },
        born_ms: 1_700_000_000_000 + i as u64,
        body: Bytes::from(vec![b'x'; BODY_BYTES]),
        ..NewMessage::default()
    }
}

fn wasm(dir: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/examples").join(dir);
    std::fs::read(wasmq_plugin_testkit::build_plugin(path).expect("build the plugin")).expect("read the plugin")
}

/// Runs `f` (which handles `n` messages) for [`RUN`] and returns ns per message.
fn time(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < RUN {
        for _ in 0..64 {
            f();
        }
        calls += 64;
    }
    started.elapsed().as_nanos() as f64 / (calls as f64 * n as f64)
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = wasmq_store::Store::open(wasmq_store::StoreConfig::small_for_tests(dir.path().join("store"))).expect("store");
    let engine =
        Arc::new(Engine::open(Arc::new(store), dir.path().join("config"), "bench", Arc::new(wasmq_store::SystemClock)).expect("engine"));
    engine.create_topic("t", QUEUES).expect("topic");
    let plugins = PluginRegistry::open(dir.path(), Limits::default()).expect("plugins");
    let attach = |name: &str, config: &[(&str, &str)]| AttachPlugin {
        plugin: name.to_owned(),
        version: 1,
        config: config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        on_error: None,
    };
    plugins.upload(&wasm("tenant-router")).expect("upload the router");
    plugins.upload(&wasm("content-filter")).expect("upload the filter");
    plugins.attach(Role::Router, "t", None, attach("tenant-router", &[("tenants", "acme=0-7")])).expect("attach the router");
    plugins.attach(Role::Filter, "t", Some("g"), attach("content-filter", &[("where", "prop:tenant == acme")])).expect("attach the filter");

    // Messages to filter, as the delivery path reads them from the log.
    let stored: Vec<NewMessage> = (0..100).map(|i| NewMessage { topic: "t".into(), queue_id: 0, ..message(i) }).collect();
    engine.send("t", Some(0), stored).expect("append");
    let read = |n: usize| engine.pull("t", 0, 0, n, 64 << 20).expect("pull");
    let router = plugins.send_path("t").and_then(|p| p.router).expect("a router is attached");
    let filter = plugins.delivery_filter("t", "g").expect("a filter is attached");

    println!("plugin cost per message, {BODY_BYTES}-byte bodies (ns/message, host side included)");
    let mut summary = Vec::new();
    for n in [100, 1] {
        let batch: Vec<NewMessage> = (0..n).map(message).collect();
        let mut routed = batch.clone();
        let ns = time(n, || {
            routed.clone_from(&batch);
            wasmq_engine::place(Some(router.as_ref()), None, &mut routed, QUEUES, 0).expect("routed");
        });
        let copy = time(n, || routed.clone_from(&batch));
        let route_ns = ns - copy;
        println!("send path, router tenant-router, batch of {n}: {route_ns:.0} ns/message");
        let template: QueueRead = read(n);
        assert_eq!(template.messages.len(), n);
        let ns = time(n, || {
            let kept = engine.filter_delivery("g", "t", filter.as_ref(), template.clone());
            assert_eq!(kept.messages.len(), n);
        });
        let clone = time(n, || drop(std::hint::black_box(template.clone())));
        let filter_ns = ns - clone;
        println!("delivery path, filter content-filter, batch of {n}: {filter_ns:.0} ns/message");
        summary.push(format!("batch {n}: router {route_ns:.0} ns/message, filter {filter_ns:.0} ns/message"));
    }
    println!("--- summary ---");
    for s in summary {
        println!("{s}");
    }
}
