//! Login rate limiting: failed attempts counted per user name from one address and per address;
//! past [`LOGIN_FAILURES_PER_USER_MAX`] (or, for an address, [`LOGIN_FAILURES_PER_ADDRESS_MAX`]:
//! many clients may share one behind NAT) within [`LOGIN_WINDOW`] every attempt of that key is
//! refused until the window of its oldest counted failure has passed. Failures from one address
//! do not lock a user out of another. Successful logins cost nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins a user name may have from one address within [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES_PER_USER_MAX: usize = 5;
/// Failed logins a peer address may have within [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES_PER_ADDRESS_MAX: usize = 30;
/// How long a failed login counts.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Most keys (user names and addresses) tracked; the oldest are forgotten first.
pub const LIMITER_KEYS_MAX: usize = 65_536;

#[derive(Debug, Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    /// `Err(wait)` when one of `keys` has used up its failures (each key with its maximum).
    ///
    /// # Errors
    /// How long until the next attempt may be made.
    pub fn check(&self, keys: &[(&str, usize)], now: Instant) -> Result<(), Duration> {
        let mut map = crate::lock(&self.failures);
        let mut wait = Duration::ZERO;
        for (k, max) in keys {
            if let Some(q) = map.get_mut(*k) {
                while q.front().is_some_and(|t| now.duration_since(*t) >= LOGIN_WINDOW) {
                    q.pop_front();
                }
                if q.len() >= *max {
                    wait = wait.max(LOGIN_WINDOW - now.duration_since(q[q.len() - max]));
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Counts a failed attempt against each of `keys`.
    pub fn failed(&self, keys: &[(&str, usize)], now: Instant) {
        let mut map = crate::lock(&self.failures);
        if map.len() + keys.len() > LIMITER_KEYS_MAX {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < LOGIN_WINDOW));
            while map.len() + keys.len() > LIMITER_KEYS_MAX {
                let Some(oldest) = map.iter().min_by_key(|(_, q)| q.back().copied()).map(|(k, _)| k.clone()) else { break };
                map.remove(&oldest);
            }
        }
        for (k, max) in keys {
            let q = map.entry((*k).to_owned()).or_default();
            q.push_back(now);
            while q.len() > *max {
                q.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_maximum_lock_the_key_for_the_window() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let (bob, ip) = (("user:bob", 5), ("ip:10.0.0.1", 8));
        for i in 0..5 {
            assert!(l.check(&[bob, ip], t0).is_ok(), "attempt {i}");
            l.failed(&[bob, ip], t0);
        }
        let wait = l.check(&[bob], t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, LOGIN_WINDOW - Duration::from_secs(10));
        assert!(l.check(&[ip], t0).is_ok(), "the address has room for more");
        for _ in 0..3 {
            l.failed(&[("user:carol", 5), ip], t0);
        }
        assert!(l.check(&[("user:dave", 5), ip], t0).is_err(), "an address past its own maximum is held for every user");
        assert!(l.check(&[("user:alice", 5), ("ip:10.0.0.2", 8)], t0).is_ok(), "others are not held");
        assert!(l.check(&[bob], t0 + LOGIN_WINDOW).is_ok(), "free again after the window");
    }
}
