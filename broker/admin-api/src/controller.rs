//! `GET /api/v1/controller`: the failover controller as this broker's configured nodes answer
//! (the leader's status), for the console and tools.

use axum::Json;
use axum::extract::State;
use wasmq_admin_types::{ControllerMember, ControllerNode, ControllerSet, ControllerView};
use wasmq_controller_api::rpc::{Answer, Call, Status};

use crate::admin::AdminState;

pub(crate) async fn controller(State(s): State<AdminState>) -> Json<ControllerView> {
    let Some(client) = &s.controller else {
        return Json(view(&[], Err("this broker is not under a failover controller".into())));
    };
    let status = match client.call(&Call::Status).await {
        Ok(Answer::Status(status)) => Ok(status),
        Ok(other) => Err(format!("the controller answered {other:?}")),
        Err(e) => Err(format!("no controller leader answered: {e}")),
    };
    Json(view(client.addrs(), status))
}

/// The view of `status` (or of why there is none) for a broker configured with `configured`.
fn view(configured: &[String], status: Result<Status, String>) -> ControllerView {
    let status = match status {
        Ok(s) => s,
        Err(error) => {
            let nodes = configured.iter().map(|a| ControllerNode { id: None, addr: a.clone(), role: "unknown".into() }).collect();
            return ControllerView { nodes, leader: None, term: None, error: Some(error), sets: Vec::new() };
        }
    };
    let mut nodes: Vec<ControllerNode> = status
        .nodes
        .iter()
        .map(|(id, addr)| ControllerNode { id: Some(*id), addr: addr.clone(), role: status.node_role(*id).into() })
        .collect();
    // A configured address the controller does not list (a misconfiguration to see).
    for a in configured.iter().filter(|a| !status.nodes.values().any(|n| n == *a)) {
        nodes.push(ControllerNode { id: None, addr: a.clone(), role: "unknown".into() });
    }
    let sets = status
        .sets
        .into_iter()
        .map(|(broker_name, s)| {
            let master_end = s.set.master.and_then(|m| s.heard.get(&m)).map(|h| h.log_end);
            let members = s
                .set
                .members
                .iter()
                .map(|(id, addr)| {
                    let heard = s.heard.get(id);
                    ControllerMember {
                        broker_id: *id,
                        addr: addr.clone(),
                        role: if s.set.master == Some(*id) { "master" } else { "slave" }.into(),
                        in_sync: s.set.in_sync.contains(id),
                        log_end_offset: heard.map(|h| h.log_end),
                        lag_bytes: heard.zip(master_end).map(|(h, m)| m.saturating_sub(h.log_end)),
                        heard_ms_ago: heard.map(|h| h.ms_ago),
                    }
                })
                .collect();
            ControllerSet {
                broker_name,
                master: s.set.master,
                epoch: s.set.epoch,
                in_sync: s.set.in_sync.iter().copied().collect(),
                members,
            }
        })
        .collect();
    ControllerView { nodes, leader: Some(status.node), term: Some(status.term), error: None, sets }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use wasmq_controller_api::BrokerSet;
    use wasmq_controller_api::rpc::{Heard, SetStatus};

    use super::*;

    #[test]
    fn nodes_roles_and_each_members_lag_behind_the_master() {
        let set = BrokerSet {
            members: BTreeMap::from([(0, "h:1".into()), (1, "h:2".into()), (2, "h:3".into())]),
            master: Some(1),
            epoch: 3,
            in_sync: BTreeSet::from([0, 1]),
        };
        let heard =
            BTreeMap::from([(0, Heard { ms_ago: 120, log_end: 900, epoch: 3 }), (1, Heard { ms_ago: 80, log_end: 1000, epoch: 3 })]);
        let status = Status {
            node: 2,
            term: 7,
            nodes: BTreeMap::from([(1, "c:1".into()), (2, "c:2".into()), (3, "c:3".into())]),
            nodes_up: BTreeSet::from([1, 2]),
            sets: BTreeMap::from([("a".into(), SetStatus { set, heard })]),
        };
        let configured = ["c:1".to_owned(), "c:2".into(), "c:3".into(), "c:9".into()];
        let v = view(&configured, Ok(status));
        let roles: Vec<(Option<u64>, &str)> = v.nodes.iter().map(|n| (n.id, n.role.as_str())).collect();
        assert_eq!(roles, [(Some(1), "follower"), (Some(2), "leader"), (Some(3), "down"), (None, "unknown")]);
        assert_eq!((v.leader, v.term, v.error.as_deref()), (Some(2), Some(7), None));
        let s = &v.sets[0];
        assert_eq!((s.broker_name.as_str(), s.master, s.epoch, s.in_sync.as_slice()), ("a", Some(1), 3, &[0, 1][..]));
        let m: Vec<String> =
            s.members.iter().map(|m| format!("{} {} {} {:?} {:?}", m.broker_id, m.role, m.in_sync, m.lag_bytes, m.heard_ms_ago)).collect();
        assert_eq!(m, ["0 slave true Some(100) Some(120)", "1 master true Some(0) Some(80)", "2 slave false None None"]);

        let down = view(&configured[..1], Err("no controller leader answered: refused".into()));
        assert_eq!((down.nodes[0].role.as_str(), down.leader, down.sets.len()), ("unknown", None, 0));
        assert_eq!(down.error.as_deref(), Some("no controller leader answered: refused"));
    }
}
