//! The built plugin in the broker's runtime: one binary, two groups' configurations.

use wasmq_plugin_testkit::{Delivery, Harness, MessageBuf, Role, build_plugin};

#[test]
fn one_binary_filters_differently_per_attachment() {
    let h = Harness::load(build_plugin(env!("CARGO_MANIFEST_DIR")).unwrap()).unwrap();
    let mut eu = h.attach(Role::Filter, &[("where", "prop:region == eu and json:amount >= 100")]).unwrap();
    let mut us = h.attach(Role::Filter, &[("where", "prop:region == us"), ("otherwise", "dead-letter")]).unwrap();
    let msgs = [
        MessageBuf::new().property("region", "eu").body(r#"{"amount":150}"#),
        MessageBuf::new().property("region", "eu").body(r#"{"amount":50}"#),
        MessageBuf::new().property("region", "us").body(r#"{"amount":150}"#),
    ];
    assert_eq!(eu.filter(&msgs).unwrap().decisions, vec![Delivery::Deliver, Delivery::Skip, Delivery::Skip]);
    let r = us.filter(&msgs).unwrap();
    assert_eq!(r.decisions, vec![Delivery::DeadLetter, Delivery::DeadLetter, Delivery::Deliver]);
    println!("content-filter: {:.0} instructions/message", r.fuel_per_message);
    assert!(r.fuel_per_message < 50_000.0, "{} instructions per message", r.fuel_per_message);
    // Each attachment is passed only what its conditions read: no bodies for the `us` group.
    assert!(!eu.batch(&msgs).bodies.is_empty());
    let b = us.batch(&msgs);
    assert!(b.bodies.is_empty() && b.body_offsets.is_empty() && !b.properties.is_empty(), "{b:?}");
    let e = h.attach(Role::Filter, &[("where", "nonsense")]).unwrap_err();
    assert!(e.to_string().contains("no operator"), "{e}");
}
