//! The failover checker: from what producers were told (their acknowledgements) and what the
//! brokers hold (reads of every queue, possibly from several brokers and at several times), the
//! four ways a replicated log goes wrong — an acknowledged message lost, one queue offset holding
//! two different messages, one message stored twice, and a key's messages out of the order they
//! were sent in (Jepsen's queue checkers, RocketMQ's OpenChaos checkers).

use std::collections::{BTreeMap, BTreeSet};

/// A queue offset: (queue, offset).
type Place = (u32, u64);

/// A send the broker acknowledged as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The message's unique id.
    pub id: String,
    pub queue: u32,
    pub offset: u64,
    /// Its ordering key and its place among the key's sends (for per-key order), if any.
    pub key: Option<(String, u64)>,
}

/// A message found at a queue offset by a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub queue: u32,
    pub offset: u64,
    pub id: String,
}

/// What a run's reads say about its acknowledgements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub acked: usize,
    /// Distinct messages read.
    pub read: usize,
    /// Acknowledged, and found nowhere.
    pub lost: Vec<String>,
    /// Acknowledged at one offset and found at another.
    pub moved: Vec<(String, u32, u64)>,
    /// Offsets read with two or more different messages: (queue, offset, the ids).
    pub conflicting: Vec<(u32, u64, Vec<String>)>,
    /// Messages stored at more than one offset.
    pub duplicated: Vec<String>,
    /// Keys whose messages are stored out of their send order: (key, a send number, a later
    /// send number stored before it).
    pub out_of_order: Vec<(String, u64, u64)>,
}

impl Report {
    /// Nothing lost, moved, conflicting, duplicated or out of order.
    #[must_use]
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.moved.is_empty()
            && self.conflicting.is_empty()
            && self.duplicated.is_empty()
            && self.out_of_order.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged, {} read: {} lost, {} moved, {} conflicting offsets, {} duplicated, {} out of order",
            self.acked,
            self.read,
            self.lost.len(),
            self.moved.len(),
            self.conflicting.len(),
            self.duplicated.len(),
            self.out_of_order.len()
        )
    }
}

/// Checks `acks` against `reads`. A duplicate is only reported for messages stored at two
/// offsets (a producer's retry after a lost answer stores a message twice, which at-least-once
/// allows: pass `allow_duplicates` to count them without failing [`Report::clean`]).
#[must_use]
pub fn check(acks: &[Ack], reads: &[Seen], allow_duplicates: bool) -> Report {
    let mut at: BTreeMap<Place, BTreeSet<&str>> = BTreeMap::new();
    for s in reads {
        at.entry((s.queue, s.offset)).or_default().insert(&s.id);
    }
    let mut places: BTreeMap<&str, BTreeSet<Place>> = BTreeMap::new();
    for (place, ids) in &at {
        for id in ids {
            places.entry(id).or_default().insert(*place);
        }
    }
    let mut report = Report { acked: acks.len(), read: places.len(), ..Report::default() };
    for ((q, o), ids) in &at {
        if ids.len() > 1 {
            report.conflicting.push((*q, *o, ids.iter().map(|s| (*s).to_owned()).collect()));
        }
    }
    for a in acks {
        if at.get(&(a.queue, a.offset)).is_some_and(|ids| ids.contains(a.id.as_str())) {
            continue;
        }
        if places.contains_key(a.id.as_str()) {
            report.moved.push((a.id.clone(), a.queue, a.offset));
        } else {
            // Nowhere: its offset never read, or read holding another message (overwritten).
            report.lost.push(a.id.clone());
        }
    }
    if !allow_duplicates {
        report.duplicated = places.iter().filter(|(_, p)| p.len() > 1).map(|(id, _)| (*id).to_owned()).collect();
    }
    // Per key, the acknowledged sends in the order they are stored (queue, offset) must keep
    // their send numbers increasing.
    let mut by_key: BTreeMap<&str, Vec<(Place, u64)>> = BTreeMap::new();
    for a in acks {
        if let Some((key, n)) = &a.key {
            by_key.entry(key).or_default().push(((a.queue, a.offset), *n));
        }
    }
    for (key, mut stored) in by_key {
        stored.sort_unstable();
        for w in stored.windows(2) {
            if w[1].1 < w[0].1 {
                report.out_of_order.push((key.to_owned(), w[1].1, w[0].1));
            }
        }
    }
    report
}

/// What an orderly consumer's deliveries say: the acknowledged messages it never got, and per
/// key the messages it got for the first time after a later message of their key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consumed {
    pub delivered: usize,
    /// Distinct messages delivered.
    pub distinct: usize,
    /// Acknowledged, and never delivered.
    pub missed: Vec<String>,
    /// (key, a send number, a later send number delivered first).
    pub out_of_order: Vec<(String, u64, u64)>,
}

impl std::fmt::Display for Consumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} deliveries of {} messages: {} acknowledged never delivered, {} delivered out of key order",
            self.delivered,
            self.distinct,
            self.missed.len(),
            self.out_of_order.len()
        )
    }
}

/// Checks an orderly consumer's `deliveries` (message id, key and send number, in the order
/// the handler saw them) against `acks`. At-least-once allows a message again (a redelivery
/// from the last committed offset after a failover): only first deliveries must keep each
/// key's send numbers increasing, and every acknowledged message must have been delivered.
#[must_use]
pub fn check_consumed(acks: &[Ack], deliveries: &[(String, String, u64)]) -> Consumed {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut report = Consumed { delivered: deliveries.len(), ..Consumed::default() };
    for (id, key, n) in deliveries {
        if !seen.insert(id) {
            continue;
        }
        match last.get(key.as_str()) {
            Some(&before) if before > *n => report.out_of_order.push((key.clone(), *n, before)),
            _ => {
                last.insert(key, *n);
            }
        }
    }
    report.distinct = seen.len();
    report.missed = acks.iter().filter(|a| !seen.contains(a.id.as_str())).map(|a| a.id.clone()).collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: &str, queue: u32, offset: u64, key: Option<(&str, u64)>) -> Ack {
        Ack { id: id.into(), queue, offset, key: key.map(|(k, n)| (k.into(), n)) }
    }

    fn seen(queue: u32, offset: u64, id: &str) -> Seen {
        Seen { queue, offset, id: id.into() }
    }

    #[test]
    fn a_clean_run_is_clean_and_each_fault_is_named() {
        let acks = [ack("a", 0, 0, Some(("k", 1))), ack("b", 0, 1, Some(("k", 2))), ack("c", 1, 0, None)];
        let reads = [seen(0, 0, "a"), seen(0, 1, "b"), seen(1, 0, "c"), seen(1, 1, "unacked")];
        let r = check(&acks, &reads, false);
        assert!(r.clean(), "{r}");
        assert_eq!((r.acked, r.read), (3, 4));

        // c lost; b's offset read holding another message after a failover (two values), and b
        // itself found elsewhere; a stored twice.
        let reads = [seen(0, 0, "a"), seen(0, 1, "b"), seen(0, 1, "x"), seen(0, 2, "a")];
        let r = check(&acks, &reads, false);
        assert_eq!(r.lost, ["c"]);
        assert_eq!(r.conflicting, [(0, 1, vec!["b".to_owned(), "x".to_owned()])]);
        assert_eq!(r.duplicated, ["a"]);
        assert!(r.moved.is_empty(), "b was found where it was acknowledged");
        assert!(!r.clean());
        assert!(check(&acks[..2], &[seen(0, 0, "a"), seen(0, 1, "b"), seen(0, 2, "a")], true).clean(), "duplicates allowed");

        // Acknowledged at one offset, found at another: moved, not lost.
        let r = check(&[ack("m", 0, 5, None)], &[seen(0, 6, "m")], false);
        assert_eq!((r.moved.len(), r.lost.len()), (1, 0));
        // Its offset holding another message, and it nowhere: lost (overwritten).
        let r = check(&[ack("m", 0, 5, None)], &[seen(0, 5, "other")], false);
        assert_eq!((r.lost.as_slice(), r.moved.len()), (&["m".to_owned()][..], 0));
    }

    #[test]
    fn a_keys_later_send_stored_before_an_earlier_one_is_out_of_order() {
        let acks = [ack("a", 2, 7, Some(("k", 2))), ack("b", 2, 8, Some(("k", 1))), ack("c", 2, 9, Some(("j", 1)))];
        let reads = [seen(2, 7, "a"), seen(2, 8, "b"), seen(2, 9, "c")];
        let r = check(&acks, &reads, false);
        assert_eq!(r.out_of_order, [("k".to_owned(), 1, 2)]);
        assert_eq!(r.to_string(), "3 acknowledged, 3 read: 0 lost, 0 moved, 0 conflicting offsets, 0 duplicated, 1 out of order");
    }

    #[test]
    fn redeliveries_are_allowed_but_a_first_delivery_after_a_later_one_is_not() {
        let d = |id: &str, n: u64| (id.to_owned(), "k".to_owned(), n);
        let acks = [ack("a", 0, 0, Some(("k", 1))), ack("b", 0, 1, Some(("k", 2))), ack("c", 0, 2, Some(("k", 3)))];
        // a, b, then a and b again from an older offset, then c: clean.
        let r = check_consumed(&acks, &[d("a", 1), d("b", 2), d("a", 1), d("b", 2), d("c", 3)]);
        assert!(r.missed.is_empty() && r.out_of_order.is_empty(), "{r}");
        assert_eq!((r.delivered, r.distinct), (5, 3));
        // c before b (b's first delivery after a later one), and no other key mixed in.
        let r = check_consumed(&acks, &[d("a", 1), d("c", 3), d("b", 2), ("x".into(), "j".into(), 1)]);
        assert_eq!(r.out_of_order, [("k".to_owned(), 2, 3)]);
        // b never delivered.
        let r = check_consumed(&acks, &[d("a", 1), d("c", 3)]);
        assert_eq!(r.missed, ["b"]);
        assert_eq!(r.to_string(), "2 deliveries of 2 messages: 1 acknowledged never delivered, 0 delivered out of key order");
    }
}
