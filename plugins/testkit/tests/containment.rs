//! Hostile plugins are stopped by the sandbox, counted, and never take the host down; bad
//! binaries are refused at load with a reason.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasmq_plugin_host::{Attached, FailurePolicy};
use wasmq_plugin_testkit::{Attachment, CallError, Harness, Limits, LoadError, MessageBuf, Role, Route, Runtime, TrapKind};

fn hostile() -> Harness {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hostile");
    Harness::load(wasmq_plugin_testkit::build_plugin(dir).unwrap()).unwrap()
}

/// The hostile plugin with a deadline of a second, for tests of limits other than time: on a
/// loaded machine a memory bomb may otherwise hit the 10 ms deadline first.
fn hostile_patient() -> Harness {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hostile");
    let bytes = std::fs::read(wasmq_plugin_testkit::build_plugin(dir).unwrap()).unwrap();
    Harness::from_bytes(&bytes, Limits { call_timeout: Duration::from_secs(1), ..Limits::default() }).unwrap()
}

fn msgs(n: usize) -> Vec<MessageBuf> {
    (0..n).map(|i| MessageBuf::new().key(format!("k{i}"))).collect()
}

#[test]
fn a_well_behaved_instance_routes_by_key_and_reports_its_cost() {
    let h = hostile();
    assert_eq!(h.manifest().name, "hostile");
    assert_eq!(h.manifest().roles, vec![Role::Router, Role::OrderingKey, Role::Filter]);
    let mut run = h.attach(Role::Router, &[]).unwrap();
    assert!(run.init_logs.iter().any(|l| l.message.contains("mode ok")), "{:?}", run.init_logs);
    let r = run.route(8, &msgs(100)).unwrap();
    assert_eq!(r.decisions.len(), 100);
    for (i, d) in r.decisions.iter().enumerate() {
        let want = (wasmq_plugin_host::key_hash(format!("k{i}").as_bytes()) % 8) as u32;
        assert_eq!(*d, Route::Queue(want));
    }
    assert!(r.fuel > 0 && r.fuel_per_message > 0.0);
    assert!(r.peak_memory > 0);
}

#[test]
fn an_endless_loop_is_interrupted_by_the_deadline_and_the_next_call_works() {
    let h = hostile();
    let mut run = h.attach(Role::Filter, &[("mode", "loop")]).unwrap();
    let t = Instant::now();
    let e = run.filter(&msgs(1)).unwrap_err();
    assert_eq!(e.trap_kind(), Some(TrapKind::Timeout), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "interrupted after {:?}", t.elapsed());
    // The harness replaced the instance; a fresh one loops again, so the error repeats.
    assert_eq!(run.filter(&msgs(1)).unwrap_err().trap_kind(), Some(TrapKind::Timeout));
}

#[test]
fn deep_recursion_and_memory_bombs_are_contained() {
    let h = hostile_patient();
    let e = h.attach(Role::Router, &[("mode", "recurse")]).unwrap().route(4, &msgs(1)).unwrap_err();
    assert_eq!(e.trap_kind(), Some(TrapKind::StackOverflow), "{e}");
    let e = h.attach(Role::OrderingKey, &[("mode", "bomb")]).unwrap().ordering_key(&msgs(1)).unwrap_err();
    assert_eq!(e.trap_kind(), Some(TrapKind::MemoryExhausted), "{e}");
}

#[test]
fn a_panic_names_itself_and_a_refused_init_is_an_init_error() {
    let h = hostile();
    let mut run = h.attach(Role::Router, &[("mode", "trap-every"), ("k", "3")]).unwrap();
    assert!(run.route(4, &msgs(2)).is_ok());
    let e = run.route(4, &msgs(2)).unwrap_err();
    assert_eq!(e.trap_kind(), Some(TrapKind::Trap));
    assert!(e.to_string().contains("trap on message 3 as asked"), "{e}");
    let e = h.attach(Role::Router, &[("mode", "init-fail")]).unwrap_err();
    assert!(matches!(&e, CallError::Init(m) if m.contains("refusing")), "{e}");
    let e = h.attach(Role::Router, &[("k", "x")]).unwrap_err();
    assert!(matches!(&e, CallError::Init(m) if m.contains("config k=")), "{e}");
}

#[test]
fn repeated_failures_open_the_breaker_and_other_attachments_carry_on() {
    let h = hostile();
    let attach = |mode: &str| {
        let a = Attachment { role: Role::Filter, topic: "t".into(), group: Some("g".into()), config: vec![("mode".into(), mode.into())] };
        Attached::new(h.plugin().clone(), a, FailurePolicy::Open).unwrap()
    };
    let bad = attach("trap-tag");
    let good = attach("ok");
    let run = h.attach(Role::Filter, &[]).unwrap();
    let trap = run.batch(&[MessageBuf::new().tags("trap")]);
    let fine = run.batch(&msgs(10));
    for _ in 0..wasmq_plugin_host::BREAKER_FAILURES {
        assert!(matches!(bad.filter(&trap), Err(CallError::Trap { .. })));
        assert_eq!(good.filter(&fine).unwrap().len(), 10);
    }
    assert!(matches!(bad.filter(&fine), Err(CallError::BreakerOpen(_))), "the breaker opened");
    let s = bad.stats();
    assert_eq!((s.traps, s.breaker_trips, s.errors), (5, 1, 6));
    assert!(s.breaker_open);
    assert_eq!(s.instances, 5, "the first instance, then one after each of the first four traps");
    let g = good.stats();
    assert_eq!((g.calls, g.messages, g.errors, g.instances), (5, 50, 0, 1));
}

#[test]
fn bad_binaries_are_refused_at_load_with_the_reason() {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    assert!(matches!(runtime.load(b"not wasm at all"), Err(LoadError::NotWasm)));
    assert!(matches!(runtime.load(&vec![0u8; wasmq_plugin_host::PLUGIN_BYTES_MAX + 1]), Err(LoadError::TooLarge { .. })));
    // A core module that was not built with the SDK (no wasmq:plugin world inside).
    let core = wat::parse_str(r#"(module (import "env" "evil" (func)) (func (export "f")))"#).unwrap();
    let e = runtime.load(&core).unwrap_err();
    assert!(matches!(e, LoadError::Componentize(_)), "{e}");
    // A component that imports a host interface the broker does not offer.
    let comp = wat::parse_str(
        r#"(component
             (import "wasi:filesystem/types@0.2.0" (instance))
           )"#,
    )
    .unwrap();
    let e = runtime.load(&comp).unwrap_err();
    assert!(matches!(&e, LoadError::Import(n) if n.starts_with("wasi:filesystem")), "{e}");
    assert!(e.to_string().contains("may import only wasmq:plugin/host"));
    // A component that exports nothing of the world.
    let empty = wat::parse_str("(component)").unwrap();
    assert!(matches!(runtime.load(&empty), Err(LoadError::World(_))));
}

#[test]
fn a_poison_message_in_a_batch_counts_against_the_plugin_only_when_tried_alone() {
    let h = hostile();
    let a = Attachment { role: Role::Filter, topic: "t".into(), group: Some("g".into()), config: vec![("mode".into(), "trap-tag".into())] };
    let bad = Attached::new(h.plugin().clone(), a, FailurePolicy::Closed).unwrap();
    let run = h.attach(Role::Filter, &[]).unwrap();
    let mut with_poison = msgs(5);
    with_poison.push(MessageBuf::new().tags("trap"));
    let mixed = run.batch(&with_poison);
    for _ in 0..2 * wasmq_plugin_host::BREAKER_FAILURES {
        assert!(matches!(bad.filter(&mixed), Err(CallError::Trap { .. })));
    }
    let s = bad.stats();
    assert!(!s.breaker_open && s.breaker_trips == 0, "the caller tries such batches message by message: {s:?}");
    let alone = run.batch(&[MessageBuf::new().tags("trap")]);
    for _ in 0..wasmq_plugin_host::BREAKER_FAILURES {
        assert!(bad.filter(&alone).is_err());
    }
    assert!(bad.stats().breaker_open, "a message that fails alone counts");
}
