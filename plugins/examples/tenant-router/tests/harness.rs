//! The built plugin in the broker's runtime: same decisions as natively, within budget.

use wasmq_plugin_testkit::{Harness, MessageBuf, Role, Route, build_plugin};

#[test]
fn routes_tenants_in_the_sandbox_within_an_instruction_budget() {
    let h = Harness::load(build_plugin(env!("CARGO_MANIFEST_DIR")).unwrap()).unwrap();
    assert_eq!(h.manifest().roles, vec![Role::Router]);
    let mut run = h.attach(Role::Router, &[("tenants", "acme=0-3,globex=4-7")]).unwrap();
    let msgs: Vec<_> =
        (0..100).map(|i| MessageBuf::new().property("tenant", if i % 2 == 0 { "acme" } else { "globex" }).key(format!("k{i}"))).collect();
    let r = run.route(8, &msgs).unwrap();
    for (i, d) in r.decisions.iter().enumerate() {
        let ok = if i % 2 == 0 { matches!(d, Route::Queue(0..=3)) } else { matches!(d, Route::Queue(4..=7)) };
        assert!(ok, "message {i}: {d:?}");
    }
    let r = run.route(8, &[MessageBuf::new().property("tenant", "initech")]).unwrap();
    assert!(matches!(&r.decisions[0], Route::Reject(m) if m.contains("initech")));
    println!("tenant-router: {:.0} instructions/message, peak memory {} KiB", r.fuel_per_message, r.peak_memory >> 10);
    assert!(r.fuel_per_message < 20_000.0, "{} instructions per message", r.fuel_per_message);
    assert!(h.attach(Role::Router, &[("tenants", "acme=9-1")]).is_err());
}
