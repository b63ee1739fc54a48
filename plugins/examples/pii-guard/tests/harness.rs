//! The built plugin in the broker's runtime, in both of its roles.

use wasmq_plugin_testkit::{Delivery, Harness, MessageBuf, Role, Route, build_plugin};

#[test]
fn rejects_on_send_and_dead_letters_on_delivery_and_logs_without_the_data() {
    let h = Harness::load(build_plugin(env!("CARGO_MANIFEST_DIR")).unwrap()).unwrap();
    assert_eq!(h.manifest().roles, vec![Role::Router, Role::Filter]);
    let msgs = [MessageBuf::new().body("card 4111 1111 1111 1111"), MessageBuf::new().body("nothing to see")];
    let r = h.attach(Role::Router, &[]).unwrap().route(4, &msgs).unwrap();
    assert!(matches!(&r.decisions[0], Route::Reject(m) if m.contains("card number")));
    assert_eq!(r.decisions[1], Route::DefaultRouting);
    assert_eq!(r.logs.len(), 1);
    assert!(!r.logs[0].message.contains("4111"), "the log must not carry the number: {}", r.logs[0].message);
    let r = h.attach(Role::Filter, &[]).unwrap().filter(&msgs).unwrap();
    assert_eq!(r.decisions, vec![Delivery::DeadLetter, Delivery::Deliver]);
    println!("pii-guard: {:.0} instructions/message", r.fuel_per_message);
}
