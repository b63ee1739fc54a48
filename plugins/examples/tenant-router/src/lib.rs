//! Routes by tenant: the `tenant` property picks a range of queues, the message key's hash a
//! queue inside it, so one tenant's load cannot spill into another's queues and equal keys
//! keep their order.
//!
//! Configuration:
//! - `tenants`: `acme=0-3,globex=4-5` (queue ranges, inclusive). Without it, every tenant
//!   spreads over the whole topic.
//! - `unknown`: what to do with a tenant not in `tenants`: `reject` (default) or `default`
//!   (the producer's queue).
//!
//! A message without a `tenant` property is rejected.

use wasmq_plugin_sdk::{Attachment, Fields, Message, Plugin, Role, Route, counter_add, export, key_hash};

#[derive(Debug)]
pub struct TenantRouter {
    tenants: Vec<(String, u32, u32)>,
    reject_unknown: bool,
}

fn parse_tenants(spec: &str) -> Result<Vec<(String, u32, u32)>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|entry| {
            let (name, range) = entry.split_once('=').ok_or_else(|| format!("tenants entry {entry:?} is not name=from-to"))?;
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let from: u32 = a.trim().parse().map_err(|e| format!("tenants entry {entry:?}: {e}"))?;
            let to: u32 = b.trim().parse().map_err(|e| format!("tenants entry {entry:?}: {e}"))?;
            if from > to {
                return Err(format!("tenants entry {entry:?}: empty range"));
            }
            Ok((name.trim().to_owned(), from, to))
        })
        .collect()
}

impl Plugin for TenantRouter {
    const ROLES: &'static [Role] = &[Role::Router];
    const NEEDS: Fields = Fields::KEY.union(Fields::PROPERTIES);

    fn init(a: &Attachment) -> Result<Self, String> {
        let tenants = parse_tenants(a.get("tenants").unwrap_or_default())?;
        let reject_unknown = match a.get("unknown").unwrap_or("reject") {
            "reject" => true,
            "default" => false,
            other => return Err(format!("unknown={other:?}: use reject or default")),
        };
        Ok(Self { tenants, reject_unknown })
    }

    fn route(&mut self, m: &Message<'_>, queues: u32) -> Route {
        let Some(tenant) = m.property_str("tenant") else {
            counter_add("rejected", 1);
            return Route::Reject("message has no tenant property".into());
        };
        let (from, to) = if self.tenants.is_empty() {
            (0, queues - 1)
        } else {
            match self.tenants.iter().find(|(n, _, _)| n == tenant) {
                Some(&(_, from, to)) => (from, to.min(queues - 1)),
                None if self.reject_unknown => {
                    counter_add("rejected", 1);
                    return Route::Reject(format!("unknown tenant {tenant:?}"));
                }
                None => return Route::DefaultRouting,
            }
        };
        if from > to {
            return Route::Reject(format!("tenant {tenant:?} has queues {from}-{to}, but the topic has only {queues}"));
        }
        let spread = u64::from(to - from + 1);
        let h = key_hash(m.key().unwrap_or(tenant.as_bytes()));
        Route::Queue(from + (h % spread) as u32)
    }
}

export!(TenantRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmq_plugin_sdk::MessageBuf;

    fn router(config: &[(&str, &str)]) -> TenantRouter {
        TenantRouter::init(&Attachment::for_test(Role::Router, config)).unwrap()
    }

    #[test]
    fn tenants_stay_in_their_ranges_and_keys_keep_their_queue() {
        let mut r = router(&[("tenants", "acme=0-3,globex=4-5")]);
        for i in 0..200 {
            let key = format!("k{i}");
            let a = r.route(&MessageBuf::new().property("tenant", "acme").key(&key).view(), 8);
            let g = r.route(&MessageBuf::new().property("tenant", "globex").key(&key).view(), 8);
            assert!(matches!(a, Route::Queue(0..=3)), "{a:?}");
            assert!(matches!(g, Route::Queue(4..=5)), "{g:?}");
            assert_eq!(a, r.route(&MessageBuf::new().property("tenant", "acme").key(&key).view(), 8));
        }
    }

    #[test]
    fn unknown_and_missing_tenants_are_rejected_or_defaulted() {
        let mut r = router(&[("tenants", "acme=0-1")]);
        assert!(matches!(r.route(&MessageBuf::new().property("tenant", "evil").view(), 4), Route::Reject(s) if s.contains("evil")));
        assert!(matches!(r.route(&MessageBuf::new().view(), 4), Route::Reject(_)));
        let mut r = router(&[("tenants", "acme=0-1"), ("unknown", "default")]);
        assert_eq!(r.route(&MessageBuf::new().property("tenant", "evil").view(), 4), Route::DefaultRouting);
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        let e = TenantRouter::init(&Attachment::for_test(Role::Router, &[("tenants", "acme=3-1")])).err().unwrap();
        assert!(e.contains("empty range"), "{e}");
        assert!(TenantRouter::init(&Attachment::for_test(Role::Router, &[("unknown", "maybe")])).is_err());
    }
}
