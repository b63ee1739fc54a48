//! The group coordinator for consumer groups (clustering and broadcasting), as a plain state
//! machine over time passed in by the caller (`now_ms`), so it is tested without sleeping.
//!
//! Clustering: a group's queues of each subscribed topic are shared out among its live members,
//! averagely (RocketMQ's `AllocateMessageQueueAveragely`: members and queues sorted, contiguous
//! ranges, the first `queues % members` members one more). Any change in membership or
//! subscriptions bumps the group's **generation**; an offset commit carries the generation and
//! is refused from a member that no longer owns the queue, so a stale member cannot commit over
//! the new owner. Broadcasting: every member gets every queue and keeps its own offsets.
//! A member that has not heartbeated within the session timeout is removed.

use std::collections::{BTreeMap, BTreeSet};

/// Most members in one group.
pub const GROUP_MEMBERS_MAX: usize = 1024;
/// Most topics one group subscribes to.
pub const GROUP_TOPICS_MAX: usize = 64;

/// How a group consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupMode {
    /// Queues are shared out among members.
    Clustering,
    /// Every member reads every queue.
    Broadcasting,
}

/// A subscription's tag filter: `*` (everything) or `A || B || …`, matched on the tag hashes the
/// consume queue holds, so filtering never reads the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    All,
    Tags(BTreeSet<u64>),
}

impl TagFilter {
    /// Parses `*`, an empty string (both: everything) or tags separated by `||`.
    ///
    /// # Errors
    /// An empty tag between separators.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        if expr.is_empty() || expr == "*" {
            return Ok(Self::All);
        }
        let mut hashes = BTreeSet::new();
        for tag in expr.split("||") {
            let tag = tag.trim();
            if tag.is_empty() {
                return Err(format!("empty tag in filter {expr:?}"));
            }
            hashes.insert(wasmq_store::tag_hash(tag));
        }
        Ok(Self::Tags(hashes))
    }

    /// Whether a message with this consume-queue tag hash (0: no tag) passes.
    pub fn matches(&self, tag_hash: u64) -> bool {
        match self {
            Self::All => true,
            Self::Tags(t) => t.contains(&tag_hash),
        }
    }
}

/// A member's view after a join or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub generation: u64,
    /// (topic, queue id) this member reads.
    pub queues: Vec<(String, u32)>,
}

/// A group as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub mode: GroupMode,
    pub generation: u64,
    /// Member id → its assignment.
    pub members: Vec<(String, Assignment)>,
}

/// Why a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    #[error("group {0} has no member {1} (rejoin)")]
    NotMember(String, String),
    #[error("generation {given} is stale; the group is at {current} (rejoin)")]
    StaleGeneration { given: u64, current: u64 },
    #[error("queue {topic}/{queue_id} is not assigned to this member")]
    NotOwner { topic: String, queue_id: u32 },
}

#[derive(Debug, Clone)]
struct Member {
    last_seen_ms: u64,
    subscriptions: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Group {
    mode: GroupMode,
    generation: u64,
    members: BTreeMap<String, Member>,
    /// Clustering: (topic, queue) → owner.
    owners: BTreeMap<(String, u32), String>,
}

/// All groups of a broker.
#[derive(Debug, Clone)]
pub struct Coordinator {
    session_timeout_ms: u64,
    groups: BTreeMap<String, Group>,
}

impl Coordinator {
    pub fn new(session_timeout_ms: u64) -> Self {
        Self { session_timeout_ms, groups: BTreeMap::new() }
    }

    /// A member joins or heartbeats with its subscriptions (topic → tag filter). `queues_of`
    /// gives a topic's queue count (`None`: unknown topic, ignored). Returns its assignment.
    ///
    /// # Errors
    /// Too many members or topics, a bad filter, or a mode different from the group's.
    pub fn heartbeat(
        &mut self,
        group: &str,
        member: &str,
        mode: GroupMode,
        subscriptions: BTreeMap<String, String>,
        now_ms: u64,
        queues_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<Assignment, String> {
        if subscriptions.len() > GROUP_TOPICS_MAX {
            return Err(format!("{} topics: a group subscribes to at most {GROUP_TOPICS_MAX}", subscriptions.len()));
        }
        for expr in subscriptions.values() {
            TagFilter::parse(expr)?;
        }
        self.expire(now_ms, &queues_of);
        let g = self.groups.entry(group.to_owned()).or_insert_with(|| Group {
            mode,
            generation: 0,
            members: BTreeMap::new(),
            owners: BTreeMap::new(),
        });
        if g.members.is_empty() {
            g.mode = mode;
        } else if g.mode != mode {
            return Err(format!("group {group} consumes in {:?} mode, not {mode:?}", g.mode));
        }
        if !g.members.contains_key(member) && g.members.len() >= GROUP_MEMBERS_MAX {
            return Err(format!("group {group} has the maximum of {GROUP_MEMBERS_MAX} members"));
        }
        let changed = match g.members.get_mut(member) {
            Some(m) => {
                m.last_seen_ms = now_ms;
                if m.subscriptions != subscriptions {
                    m.subscriptions = subscriptions;
                    true
                } else {
                    false
                }
            }
            None => {
                g.members.insert(member.to_owned(), Member { last_seen_ms: now_ms, subscriptions });
                true
            }
        };
        if changed {
            rebalance(g, &queues_of);
        }
        Ok(assignment_of(g, member, &queues_of))
    }

    /// A member leaves (clean shutdown): its queues move at once.
    pub fn leave(&mut self, group: &str, member: &str, queues_of: impl Fn(&str) -> Option<u32>) {
        if let Some(g) = self.groups.get_mut(group)
            && g.members.remove(member).is_some()
        {
            rebalance(g, &queues_of);
        }
    }

    /// Removes members silent for longer than the session timeout; returns how many.
    pub fn expire(&mut self, now_ms: u64, queues_of: &impl Fn(&str) -> Option<u32>) -> usize {
        let timeout = self.session_timeout_ms;
        let mut removed = 0;
        for g in self.groups.values_mut() {
            let before = g.members.len();
            g.members.retain(|_, m| now_ms.saturating_sub(m.last_seen_ms) <= timeout);
            if g.members.len() != before {
                removed += before - g.members.len();
                rebalance(g, queues_of);
            }
        }
        removed
    }

    /// Checks that `member` at `generation` may commit for (topic, queue).
    ///
    /// # Errors
    /// [`FenceError`]: not a member, stale generation, or not the queue's owner.
    pub fn check_commit(&self, group: &str, member: &str, generation: u64, topic: &str, queue_id: u32) -> Result<(), FenceError> {
        let g = self.groups.get(group).ok_or_else(|| FenceError::NotMember(group.to_owned(), member.to_owned()))?;
        if !g.members.contains_key(member) {
            return Err(FenceError::NotMember(group.to_owned(), member.to_owned()));
        }
        if generation != g.generation {
            return Err(FenceError::StaleGeneration { given: generation, current: g.generation });
        }
        if g.mode == GroupMode::Clustering && g.owners.get(&(topic.to_owned(), queue_id)).map(String::as_str) != Some(member) {
            return Err(FenceError::NotOwner { topic: topic.to_owned(), queue_id });
        }
        Ok(())
    }

    /// A member's subscription filter for a topic.
    pub fn filter(&self, group: &str, member: &str, topic: &str) -> Option<TagFilter> {
        let expr = self.groups.get(group)?.members.get(member)?.subscriptions.get(topic)?;
        TagFilter::parse(expr).ok()
    }

    /// A group's mode, generation and members with their assignments (for the admin API).
    pub fn describe(&self, group: &str, queues_of: impl Fn(&str) -> Option<u32>) -> Option<GroupView> {
        let g = self.groups.get(group)?;
        let members = g.members.keys().map(|m| (m.clone(), assignment_of(g, m, &queues_of))).collect();
        Some(GroupView { mode: g.mode, generation: g.generation, members })
    }

    pub fn groups(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }
}

fn rebalance(g: &mut Group, queues_of: &impl Fn(&str) -> Option<u32>) {
    g.generation += 1;
    g.owners.clear();
    if g.mode == GroupMode::Broadcasting {
        return;
    }
    // Each topic's queues are shared among the members subscribed to that topic.
    let topics: BTreeSet<&String> = g.members.values().flat_map(|m| m.subscriptions.keys()).collect();
    for topic in topics {
        let Some(n_queues) = queues_of(topic) else { continue };
        let members: Vec<&String> = g.members.iter().filter(|(_, m)| m.subscriptions.contains_key(topic)).map(|(id, _)| id).collect();
        let n = members.len() as u32;
        let (per, extra) = (n_queues / n, n_queues % n);
        let mut q = 0;
        for (i, id) in members.iter().enumerate() {
            let take = per + u32::from((i as u32) < extra);
            for _ in 0..take {
                g.owners.insert((topic.clone(), q), (*id).clone());
                q += 1;
            }
        }
    }
}

fn assignment_of(g: &Group, member: &str, queues_of: &impl Fn(&str) -> Option<u32>) -> Assignment {
    let queues = match (g.mode, g.members.get(member)) {
        (_, None) => Vec::new(),
        (GroupMode::Broadcasting, Some(m)) => {
            m.subscriptions.keys().flat_map(|t| (0..queues_of(t).unwrap_or(0)).map(move |q| (t.clone(), q))).collect()
        }
        (GroupMode::Clustering, Some(_)) => g.owners.iter().filter(|(_, o)| o.as_str() == member).map(|(k, _)| k.clone()).collect(),
    };
    Assignment { generation: g.generation, queues }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(topics: &[(&str, &str)]) -> BTreeMap<String, String> {
        topics.iter().map(|(t, f)| (t.to_string(), f.to_string())).collect()
    }

    fn queues(t: &str) -> Option<u32> {
        match t {
            "orders" => Some(8),
            "audit" => Some(3),
            _ => None,
        }
    }

    #[test]
    fn clustering_shares_queues_averagely_and_rebalances() {
        let mut c = Coordinator::new(10_000);
        let a = c.heartbeat("g", "a", GroupMode::Clustering, subs(&[("orders", "*")]), 0, queues).unwrap();
        assert_eq!(a.queues.len(), 8, "a lone member reads every queue");
        c.heartbeat("g", "b", GroupMode::Clustering, subs(&[("orders", "*")]), 1, queues).unwrap();
        let c3 = c.heartbeat("g", "c", GroupMode::Clustering, subs(&[("orders", "*")]), 2, queues).unwrap();
        let a = c.heartbeat("g", "a", GroupMode::Clustering, subs(&[("orders", "*")]), 3, queues).unwrap();
        let b = c.heartbeat("g", "b", GroupMode::Clustering, subs(&[("orders", "*")]), 3, queues).unwrap();
        assert_eq!((a.queues.len(), b.queues.len(), c3.queues.len()), (3, 3, 2), "8 queues over 3 members");
        let mut all: Vec<u32> = a.queues.iter().chain(&b.queues).chain(&c3.queues).map(|(_, q)| *q).collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>(), "each queue exactly once");
        assert_eq!(a.generation, c3.generation);

        // b goes silent: after the session timeout its queues move to a and c.
        c.heartbeat("g", "c", GroupMode::Clustering, subs(&[("orders", "*")]), 10_000, queues).unwrap();
        c.heartbeat("g", "a", GroupMode::Clustering, subs(&[("orders", "*")]), 10_004, queues).unwrap();
        let a2 = c.heartbeat("g", "a", GroupMode::Clustering, subs(&[("orders", "*")]), 10_005, queues).unwrap();
        assert_eq!(a2.queues.len(), 4);
        assert!(a2.generation > a.generation);

        // Fencing: the old generation, a non-member, and a non-owner cannot commit.
        let (q_of_a, q_not_a) = (a2.queues[0].1, (0..8).find(|q| !a2.queues.iter().any(|(_, x)| x == q)).unwrap());
        assert_eq!(c.check_commit("g", "a", a2.generation, "orders", q_of_a), Ok(()));
        assert!(matches!(c.check_commit("g", "a", a.generation, "orders", q_of_a), Err(FenceError::StaleGeneration { .. })));
        assert!(matches!(c.check_commit("g", "b", a2.generation, "orders", q_of_a), Err(FenceError::NotMember(..))));
        assert!(matches!(c.check_commit("g", "a", a2.generation, "orders", q_not_a), Err(FenceError::NotOwner { .. })));

        c.leave("g", "c", queues);
        let a3 = c.heartbeat("g", "a", GroupMode::Clustering, subs(&[("orders", "*")]), 10_006, queues).unwrap();
        assert_eq!(a3.queues.len(), 8, "c left: everything back to a at once");
    }

    #[test]
    fn broadcasting_gives_everyone_everything_and_modes_do_not_mix() {
        let mut c = Coordinator::new(10_000);
        for m in ["a", "b", "c"] {
            c.heartbeat("bg", m, GroupMode::Broadcasting, subs(&[("orders", "*"), ("audit", "x")]), 0, queues).unwrap();
        }
        let b = c.heartbeat("bg", "b", GroupMode::Broadcasting, subs(&[("orders", "*"), ("audit", "x")]), 1, queues).unwrap();
        assert_eq!(b.queues.len(), 11);
        assert!(c.check_commit("bg", "b", b.generation, "orders", 5).is_ok());
        assert!(c.heartbeat("bg", "d", GroupMode::Clustering, subs(&[("orders", "*")]), 1, queues).is_err());
        assert!(c.heartbeat("bg", "d", GroupMode::Broadcasting, subs(&[("orders", "a || ")]), 1, queues).is_err(), "bad filter");
    }

    #[test]
    fn tag_filters() {
        let f = TagFilter::parse("A || B").unwrap();
        assert!(f.matches(wasmq_store::tag_hash("A")) && f.matches(wasmq_store::tag_hash("B")));
        assert!(!f.matches(wasmq_store::tag_hash("C")) && !f.matches(0));
        assert!(TagFilter::parse("*").unwrap().matches(0));
        assert!(TagFilter::parse("A ||").is_err());
    }
}
