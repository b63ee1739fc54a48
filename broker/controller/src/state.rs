//! The replicated state and how commands change it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use wasmq_controller_api::{BrokerSet, Command, Election, Outcome};

/// Most broker sets one controller holds (a Register of another is refused).
pub const BROKER_SETS_MAX: usize = 1024;
/// Most members of one broker set (a master and as many slaves as one master serves).
pub const MEMBERS_PER_SET_MAX: usize = 17;

/// Every broker set the controller knows, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub sets: BTreeMap<String, BrokerSet>,
}

impl ControllerState {
    /// Applies `command`. Every controller node applies the same commands in the same order and
    /// ends in the same state.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Register { set, id, addr } => {
                if !self.sets.contains_key(set) && self.sets.len() >= BROKER_SETS_MAX {
                    return Outcome::Refused(format!("the controller holds {BROKER_SETS_MAX} broker sets already; {set} cannot join"));
                }
                if self.sets.get(set).is_some_and(|s| !s.members.contains_key(id) && s.members.len() >= MEMBERS_PER_SET_MAX) {
                    return Outcome::Refused(format!("{set} has {MEMBERS_PER_SET_MAX} members already; broker {id} cannot join"));
                }
                let s = self.sets.entry(set.clone()).or_default();
                s.members.insert(*id, addr.clone());
                if s.epoch == 0 {
                    s.master = Some(*id);
                    s.epoch = 1;
                    s.in_sync = BTreeSet::from([*id]);
                }
                Outcome::Applied(s.clone())
            }
            Command::AlterInSync { set, master, epoch, in_sync } => {
                let Some(s) = self.sets.get_mut(set) else { return Outcome::Refused(format!("no broker set {set}")) };
                if let Err(why) = current(s, set, *epoch) {
                    return Outcome::Refused(why);
                }
                if s.master != Some(*master) {
                    return Outcome::Refused(format!("broker {master} is not the master of {set} in epoch {epoch}"));
                }
                if !in_sync.contains(master) {
                    return Outcome::Refused(format!("the in-sync set of {set} must hold its master {master}"));
                }
                if let Some(stranger) = in_sync.iter().find(|id| !s.members.contains_key(id)) {
                    return Outcome::Refused(format!("broker {stranger} is not a member of {set}"));
                }
                s.in_sync.clone_from(in_sync);
                Outcome::Applied(s.clone())
            }
            Command::Elect { set, epoch, how } => {
                let Some(s) = self.sets.get_mut(set) else { return Outcome::Refused(format!("no broker set {set}")) };
                if let Err(why) = current(s, set, *epoch) {
                    return Outcome::Refused(why);
                }
                let chosen = match how {
                    Election::Failover { log_ends } => {
                        let candidates = s.in_sync.iter().filter(|id| Some(**id) != s.master);
                        // The furthest log end; among equals the lowest id (ids compared
                        // reversed).
                        let best = candidates
                            .filter_map(|id| log_ends.get(id).map(|end| (*end, std::cmp::Reverse(*id))))
                            .max()
                            .map(|(_, std::cmp::Reverse(id))| id);
                        match best {
                            Some(id) => id,
                            None => {
                                return Outcome::Refused(format!(
                                    "no in-sync member of {set} besides its master to elect (in sync: {:?}); an unclean election \
                                     would lose acknowledged messages",
                                    s.in_sync
                                ));
                            }
                        }
                    }
                    Election::To(id) => {
                        if Some(*id) == s.master {
                            return Outcome::Refused(format!("broker {id} is the master of {set} already"));
                        }
                        if !s.in_sync.contains(id) {
                            return Outcome::Refused(format!(
                                "broker {id} is not in sync with the master of {set} (in sync: {:?}); wait for it to catch up",
                                s.in_sync
                            ));
                        }
                        *id
                    }
                    Election::Unclean(id) => {
                        if !s.members.contains_key(id) {
                            return Outcome::Refused(format!("broker {id} is not a member of {set}"));
                        }
                        *id
                    }
                };
                // The other in-sync members hold every acknowledged message (an acknowledgement
                // waited for each of them) and stay in sync, as in Kafka's ISR: the new master's
                // acknowledgements wait for them from the start. The old master leaves it (it may
                // hold a tail nobody acknowledged, and rejoins once it has cut it); after an
                // unclean election nobody is known to hold what the new master has.
                let old = s.master;
                s.master = Some(chosen);
                s.epoch += 1;
                if matches!(how, Election::Unclean(_)) {
                    s.in_sync = BTreeSet::from([chosen]);
                } else {
                    s.in_sync.retain(|id| Some(*id) != old);
                    s.in_sync.insert(chosen);
                }
                Outcome::Applied(s.clone())
            }
        }
    }
}

/// A command decided in `epoch` still applies to `s` (of set `name`).
fn current(s: &BrokerSet, name: &str, epoch: u64) -> Result<(), String> {
    if epoch == s.epoch { Ok(()) } else { Err(format!("epoch {epoch} of {name} is stale: it is in epoch {}", s.epoch)) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use wasmq_controller_api::BrokerId;

    fn register(state: &mut ControllerState, id: BrokerId) -> Outcome {
        state.apply(&Command::Register { set: "a".into(), id, addr: format!("10.0.0.{id}:7070") })
    }

    fn set(state: &ControllerState) -> &BrokerSet {
        &state.sets["a"]
    }

    fn in_sync(ids: &[BrokerId]) -> BTreeSet<BrokerId> {
        ids.iter().copied().collect()
    }

    fn alter(state: &mut ControllerState, master: BrokerId, epoch: u64, ids: &[BrokerId]) -> Outcome {
        state.apply(&Command::AlterInSync { set: "a".into(), master, epoch, in_sync: in_sync(ids) })
    }

    fn failover(state: &mut ControllerState, epoch: u64, ends: &[(BrokerId, u64)]) -> Outcome {
        state.apply(&Command::Elect { set: "a".into(), epoch, how: Election::Failover { log_ends: ends.iter().copied().collect() } })
    }

    #[test]
    fn the_first_member_is_master_and_a_failover_takes_the_most_advanced_in_sync_slave() {
        let mut s = ControllerState::default();
        for id in [0, 1, 2] {
            assert!(matches!(register(&mut s, id), Outcome::Applied(_)));
        }
        assert_eq!((set(&s).master, set(&s).epoch, &set(&s).in_sync), (Some(0), 1, &in_sync(&[0])));
        assert!(matches!(alter(&mut s, 0, 1, &[0, 1, 2]), Outcome::Applied(_)));
        // 2 is further ahead than 1; 9 is no member, 0 is the master that is gone.
        assert!(matches!(failover(&mut s, 1, &[(0, 900), (1, 500), (2, 700), (9, 999)]), Outcome::Applied(_)));
        assert_eq!((set(&s).master, set(&s).epoch, &set(&s).in_sync), (Some(2), 2, &in_sync(&[1, 2])), "the old master leaves");
        // The same failover decided again (the leader retrying) is stale now.
        let Outcome::Refused(why) = failover(&mut s, 1, &[(1, 500)]) else { panic!("a second election for epoch 1") };
        assert!(why.contains("epoch 1 of a is stale: it is in epoch 2"), "{why}");
        // The old master returns: a member again, not a master, out of sync until it catches up.
        register(&mut s, 0);
        assert_eq!((set(&s).master, set(&s).epoch), (Some(2), 2));
        let Outcome::Refused(why) = alter(&mut s, 0, 1, &[0, 1]) else { panic!("the fenced master altered the set") };
        assert!(why.contains("stale"), "{why}");
        assert!(matches!(alter(&mut s, 2, 2, &[2, 0]), Outcome::Applied(_)));
    }

    #[test]
    fn no_failover_leaves_the_in_sync_set_unless_an_operator_forces_it() {
        let mut s = ControllerState::default();
        for id in [0, 1, 2] {
            register(&mut s, id);
        }
        alter(&mut s, 0, 1, &[0, 1]);
        // 1 is in sync but unheard of; 2 is heard of but not in sync.
        let Outcome::Refused(why) = failover(&mut s, 1, &[(2, 1_000)]) else { panic!("elected outside the in-sync set") };
        assert!(why.contains("no in-sync member of a besides its master"), "{why}");
        assert_eq!((set(&s).master, set(&s).epoch), (Some(0), 1), "nothing changed");
        let Outcome::Refused(why) = s.apply(&Command::Elect { set: "a".into(), epoch: 1, how: Election::To(2) }) else { panic!() };
        assert!(why.contains("not in sync"), "{why}");
        let Outcome::Refused(_) = s.apply(&Command::Elect { set: "a".into(), epoch: 1, how: Election::Unclean(7) }) else { panic!() };
        assert!(matches!(s.apply(&Command::Elect { set: "a".into(), epoch: 1, how: Election::Unclean(2) }), Outcome::Applied(_)));
        assert_eq!((set(&s).master, set(&s).epoch, &set(&s).in_sync), (Some(2), 2, &in_sync(&[2])));
    }

    #[test]
    fn sets_and_members_beyond_their_limits_are_refused() {
        let mut s = ControllerState::default();
        for id in 0..MEMBERS_PER_SET_MAX as BrokerId {
            assert!(matches!(register(&mut s, id), Outcome::Applied(_)));
        }
        let Outcome::Refused(why) = register(&mut s, 99) else { panic!("a member past the limit") };
        assert!(why.contains(&format!("a has {MEMBERS_PER_SET_MAX} members already; broker 99")), "{why}");
        assert!(matches!(register(&mut s, 3), Outcome::Applied(_)), "a member again is not a new one");
        for n in 1..BROKER_SETS_MAX {
            s.apply(&Command::Register { set: format!("s{n}"), id: 0, addr: "h:1".into() });
        }
        let Outcome::Refused(why) = s.apply(&Command::Register { set: "late".into(), id: 0, addr: "h:1".into() }) else { panic!() };
        assert!(why.contains(&format!("holds {BROKER_SETS_MAX} broker sets already; late")), "{why}");
        assert_eq!(s.sets.len(), BROKER_SETS_MAX);
    }

    #[test]
    fn a_switchover_goes_to_an_in_sync_member_and_ties_go_to_the_lowest_id() {
        let mut s = ControllerState::default();
        for id in [0, 1, 2] {
            register(&mut s, id);
        }
        alter(&mut s, 0, 1, &[0, 1, 2]);
        assert!(matches!(s.apply(&Command::Elect { set: "a".into(), epoch: 1, how: Election::To(0) }), Outcome::Refused(_)));
        assert!(matches!(s.apply(&Command::Elect { set: "a".into(), epoch: 1, how: Election::To(1) }), Outcome::Applied(_)));
        assert_eq!(set(&s).master, Some(1));
        alter(&mut s, 1, 2, &[0, 1, 2]);
        failover(&mut s, 2, &[(0, 40), (2, 40)]);
        assert_eq!(set(&s).master, Some(0), "equal log ends: the lowest id");
        let Outcome::Refused(why) = alter(&mut s, 0, 3, &[0, 5]) else { panic!() };
        assert!(why.contains("broker 5 is not a member of a"), "{why}");
        let Outcome::Refused(why) = alter(&mut s, 0, 3, &[1]) else { panic!() };
        assert!(why.contains("must hold its master 0"), "{why}");
        let Outcome::Refused(why) = s.apply(&Command::AlterInSync { set: "b".into(), master: 0, epoch: 1, in_sync: in_sync(&[0]) }) else {
            panic!()
        };
        assert!(why.contains("no broker set b"), "{why}");
    }

    fn command() -> impl Strategy<Value = Command> {
        let id = 0u32..4;
        let ids = proptest::collection::btree_set(0u32..5, 0..4);
        let epoch = 0u64..6;
        prop_oneof![
            id.clone().prop_map(|id| Command::Register { set: "a".into(), id, addr: format!("h{id}:1") }),
            (id.clone(), epoch.clone(), ids).prop_map(|(master, epoch, in_sync)| Command::AlterInSync {
                set: "a".into(),
                master,
                epoch,
                in_sync
            }),
            (epoch.clone(), proptest::collection::btree_map(0u32..5, 0u64..100, 0..4)).prop_map(|(epoch, log_ends)| Command::Elect {
                set: "a".into(),
                epoch,
                how: Election::Failover { log_ends }
            }),
            (epoch.clone(), id.clone()).prop_map(|(epoch, id)| Command::Elect { set: "a".into(), epoch, how: Election::To(id) }),
            (epoch, id).prop_map(|(epoch, id)| Command::Elect { set: "a".into(), epoch, how: Election::Unclean(id) }),
        ]
    }

    proptest! {
        /// Whatever the commands: the master is an in-sync member, the in-sync set holds only
        /// members, the epoch never goes down and goes up with every change of master, a refused
        /// command changes nothing, and two nodes applying the same commands agree.
        #[test]
        fn commands_keep_the_invariants(commands in proptest::collection::vec(command(), 1..40)) {
            let (mut s, mut replica) = (ControllerState::default(), ControllerState::default());
            for c in &commands {
                let before = s.clone();
                let outcome = s.apply(c);
                prop_assert_eq!(&replica.apply(c), &outcome);
                let (b, a) = (before.sets.get("a").cloned().unwrap_or_default(), s.sets.get("a").cloned().unwrap_or_default());
                match &outcome {
                    Outcome::Refused(_) => prop_assert_eq!(&before, &s),
                    Outcome::Applied(now) => prop_assert_eq!(now, &a),
                }
                prop_assert!(a.epoch >= b.epoch);
                if a.master != b.master {
                    prop_assert!(a.epoch > b.epoch, "a new master without a new epoch: {:?} -> {:?}", b, a);
                }
                if let Some(m) = a.master {
                    prop_assert!(a.in_sync.contains(&m));
                }
                prop_assert!(a.in_sync.iter().all(|id| a.members.contains_key(id)));
                if let (Command::Elect { how: Election::Failover { .. }, .. }, Outcome::Applied(now)) = (c, &outcome) {
                    prop_assert!(b.in_sync.contains(&now.master.unwrap()) && now.master != b.master, "failover outside the in-sync set");
                }
            }
            prop_assert_eq!(s, replica);
        }
    }
}
