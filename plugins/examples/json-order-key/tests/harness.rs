//! The built plugin in the broker's runtime.

use wasmq_plugin_testkit::{Harness, MessageBuf, OrderingKey, Role, build_plugin};

#[test]
fn keys_by_order_id_in_the_sandbox_within_an_instruction_budget() {
    let h = Harness::load(build_plugin(env!("CARGO_MANIFEST_DIR")).unwrap()).unwrap();
    let mut run = h.attach(Role::OrderingKey, &[]).unwrap();
    let msgs: Vec<_> =
        (0..100).map(|i| MessageBuf::new().body(format!(r#"{{"order_id":"o-{}","step":{i},"note":"some text"}}"#, i % 10))).collect();
    let r = run.ordering_key(&msgs).unwrap();
    for (i, d) in r.decisions.iter().enumerate() {
        assert_eq!(*d, OrderingKey::Hashed(wasmq_plugin_testkit::key_hash(format!("o-{}", i % 10).as_bytes())));
    }
    let r = run.ordering_key(&[MessageBuf::new().body("{not json")]).unwrap();
    assert_eq!(r.decisions, vec![OrderingKey::MessageKey]);
    println!("json-order-key: {:.0} instructions/message, peak memory {} KiB", r.fuel_per_message, r.peak_memory >> 10);
    assert!(r.fuel_per_message < 50_000.0, "{} instructions per message", r.fuel_per_message);
}
