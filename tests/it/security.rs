//! Users, logins and policies through the real broker over TLS: the native protocol's Hello and
//! every request, the admin API's logins, roles and user management.

use std::time::Duration;

use wasmq_client::admin_types::PolicyView;
use wasmq_client::{Connection, OutgoingMessage, Producer, PullConsumer};
use wasmq_protocol::ErrorCode;
use wasmq_tests::broker::Broker;

const ROOT: (&str, &str) = ("root", "root-password-1");
const PASSWORD: &str = "user-password-1";

fn policy(subject: &str, resource: &str, actions: &[&str], effect: &str) -> PolicyView {
    PolicyView {
        subject: subject.into(),
        resource: resource.into(),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        effect: effect.into(),
    }
}

/// A broker with topics `orders`, `orders.eu`, `billing` and `audit`, an admin `root`, and
/// users: `app` (produce to and consume `orders*`, consume `billing`, as group `g1`), `viewer`
/// and `operator` with those built-in roles.
fn broker_with_users(dir: &std::path::Path) -> Broker {
    let broker = Broker::start(dir, &[]);
    for t in ["orders", "orders.eu", "billing", "audit"] {
        broker.cli(&["topic", "create", t, "--queues", "2"]);
    }
    let admin = broker.admin();
    wasmq_tests::runtime().block_on(async {
        admin.create_user(ROOT.0, ROOT.1, &["admin"]).await.unwrap();
        admin.create_user("app", PASSWORD, &[]).await.unwrap();
        admin.create_user("viewer", PASSWORD, &["viewer"]).await.unwrap();
        admin.create_user("operator", PASSWORD, &["operator"]).await.unwrap();
        admin.add_policy(&policy("user:app", "topic:orders*", &["produce", "consume"], "allow")).await.unwrap();
        admin.add_policy(&policy("user:app", "topic:billing", &["consume"], "allow")).await.unwrap();
        admin.add_policy(&policy("user:app", "group:g1", &["consume"], "allow")).await.unwrap();
    });
    broker
}

fn broker_code(e: &wasmq_client::ClientError) -> Option<ErrorCode> {
    e.code()
}

/// Hello logs in: anonymous, a wrong password and an unknown user are refused once users
/// exist; a user is then allowed exactly what its policies say, each refusal naming the user,
/// the action and the resource, and the connection carries on after one.
#[test]
fn the_native_protocol_logs_in_and_checks_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_users(dir.path());
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        let anonymous = Connection::connect(broker.options()).await.unwrap_err();
        assert_eq!(broker_code(&anonymous), Some(ErrorCode::NotAuthenticated), "{anonymous}");
        assert!(anonymous.to_string().contains("requires a user"), "{anonymous}");
        let wrong = Connection::connect(broker.options().login("app", "not-the-password")).await.unwrap_err();
        assert_eq!(broker_code(&wrong), Some(ErrorCode::NotAuthenticated), "{wrong}");
        assert!(wrong.to_string().contains("wrong user name or password") && !wrong.to_string().contains("not-the-password"));
        let unknown = Connection::connect(broker.options().login("ghost", PASSWORD)).await.unwrap_err();
        assert_eq!(wrong.to_string().replace("app", "ghost"), unknown.to_string(), "an unknown user is answered as a wrong password");

        let conn = Connection::connect(broker.options().login("app", PASSWORD)).await.unwrap();
        let producer = Producer::new(conn.clone(), "app-producer");
        producer.send("orders", OutgoingMessage::new("o-1")).await.unwrap();
        producer.send("orders.eu", OutgoingMessage::new("o-2")).await.unwrap();
        let denied = producer.send("billing", OutgoingMessage::new("b-1")).await.unwrap_err();
        assert_eq!(broker_code(&denied), Some(ErrorCode::NotAuthorized), "{denied}");
        assert!(denied.to_string().contains("not authorized: user app may not produce on topic billing"), "{denied}");
        // The same connection carries on.
        producer.send("orders", OutgoingMessage::new("o-3")).await.unwrap();

        let as_g1 = PullConsumer::for_group(conn.clone(), "g1");
        let pulled = as_g1.pull("orders", 0, 0, 10, Duration::ZERO).await.unwrap();
        let pulled_1 = as_g1.pull("orders", 1, 0, 10, Duration::ZERO).await.unwrap();
        assert_eq!(pulled.messages.len() + pulled_1.messages.len(), 2);
        let as_g2 = PullConsumer::for_group(conn.clone(), "g2");
        let denied = as_g2.pull("orders", 0, 0, 10, Duration::ZERO).await.unwrap_err();
        assert!(denied.to_string().contains("not authorized: user app may not consume on group g2"), "{denied}");
        let denied = as_g1.pull("audit", 0, 0, 10, Duration::ZERO).await.unwrap_err();
        assert!(denied.to_string().contains("not authorized: user app may not consume on topic audit"), "{denied}");
        // Nothing allowed on a topic: not even its route.
        let denied = producer.send("audit", OutgoingMessage::new("a-1")).await.unwrap_err();
        assert!(denied.to_string().contains("not authorized: user app may not describe on topic audit"), "{denied}");
        // The group's retry topic is the group's.
        let retry = as_g1.pull("%RETRY%g1", 0, 0, 10, Duration::ZERO).await;
        assert!(retry.as_ref().err().and_then(broker_code) != Some(ErrorCode::NotAuthorized), "{retry:?}");
        let retry = as_g2.pull("%RETRY%g2", 0, 0, 10, Duration::ZERO).await.unwrap_err();
        assert!(retry.to_string().contains("may not consume on group g2"), "{retry}");

        // A policy taken away takes effect on the open connection; a deny wins over an allow.
        let admin = broker.admin();
        admin.add_policy(&policy("user:app", "topic:orders.eu", &["produce"], "deny")).await.unwrap();
        let denied = producer.send("orders.eu", OutgoingMessage::new("o-4")).await.unwrap_err();
        assert!(denied.to_string().contains("may not produce on topic orders.eu"), "{denied}");
        producer.send("orders", OutgoingMessage::new("o-5")).await.unwrap();
        admin.delete_user("app").await.unwrap();
        let gone = producer.send("orders", OutgoingMessage::new("o-6")).await.unwrap_err();
        assert_eq!(broker_code(&gone), Some(ErrorCode::NotAuthorized), "a deleted user's connection is refused: {gone}");

        // Nothing refused was stored.
        let root = Connection::connect(broker.options().login(ROOT.0, ROOT.1)).await.unwrap();
        let bodies = |topic: &'static str| {
            let root = root.clone();
            async move {
                wasmq_tests::drain(&root, topic, 2)
                    .await
                    .into_iter()
                    .map(|(_, m)| String::from_utf8_lossy(&m.message.body).into_owned())
                    .collect::<Vec<_>>()
            }
        };
        assert!(bodies("billing").await.is_empty() && bodies("audit").await.is_empty());
        let mut orders = bodies("orders").await;
        orders.sort();
        assert_eq!(orders, ["o-1", "o-3", "o-5"]);

        // The audit log has the refusals (who, from where, what), the failed logins and the
        // admin changes; never a password.
        let audit = admin.audit(10_000).await.unwrap();
        let has = |f: &dyn Fn(&wasmq_client::admin_types::AuditEntry) -> bool| audit.iter().any(f);
        assert!(
            has(&|e| e.via == "native"
                && e.user == "app"
                && e.from.as_deref() == Some("127.0.0.1")
                && e.what == "produce"
                && e.result == "denied: not authorized: user app may not produce on topic billing"),
            "{audit:#?}"
        );
        assert!(has(&|e| e.via == "native" && e.what == "login" && e.user == "ghost" && e.result.starts_with("denied: ")));
        assert!(has(&|e| e.via == "admin" && e.what == "POST /api/v1/policies" && e.result == "ok" && e.user == "admin token"));
        assert!(has(&|e| e.via == "admin" && e.what == "DELETE /api/v1/users/app" && e.result == "ok"));
        let text = std::fs::read_to_string(dir.path().join("audit").join("audit.log")).unwrap();
        for secret in [PASSWORD, ROOT.1, "not-the-password"] {
            assert!(!text.contains(secret), "a password in the audit log");
        }
    });
}

/// The admin API: a login gives a session (cookie and bearer token); each built-in role sees
/// and does what it says; the refusals name the user; users and policies need an admin; a user
/// changes its own password; failed logins are rate limited.
#[test]
fn the_admin_api_logs_users_in_and_holds_them_to_their_roles() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_users(dir.path());
    let rt = wasmq_tests::runtime();
    let login = |user: &str, password: &str| rt.block_on(wasmq_client::Admin::login(&broker.admin_listen, &broker.ca, user, password));
    fn status<T>(r: Result<T, wasmq_client::ClientError>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(wasmq_client::ClientError::Admin { status, .. }) => status,
            Err(e) => panic!("{e}"),
        }
    }
    let viewer = login("viewer", PASSWORD).unwrap();
    let operator = login("operator", PASSWORD).unwrap();
    let root = login(ROOT.0, ROOT.1).unwrap();
    rt.block_on(async {
        let me = viewer.me().await.unwrap();
        assert_eq!((me.user.as_str(), me.console_role.as_deref()), ("viewer", Some("viewer")));
        assert_eq!(viewer.list_topics().await.unwrap().len(), 4);
        let refused = viewer.create_topic("new-topic", 2).await.unwrap_err();
        assert_eq!(status(Err::<(), _>(refused.clone())), 403);
        assert!(refused.to_string().contains("not authorized: user viewer may not create on topic new-topic"), "{refused}");
        assert_eq!(status(viewer.users().await), 403);
        let peek = viewer.browse("orders", 0, wasmq_client::Browse::Offset(0), 10).await.unwrap_err();
        assert!(peek.to_string().contains("may not consume on topic orders"), "a viewer reads no message: {peek}");
        operator.create_topic("new-topic", 2).await.unwrap();
        assert_eq!(status(operator.users().await), 403, "users are an admin's");
        assert_eq!(status(operator.create_user("x", PASSWORD, &[]).await), 403);
        let users: Vec<String> = root.users().await.unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(users, ["app", "operator", "root", "viewer"]);
        // A user changes its own password, not its roles.
        let mut own = wasmq_client::admin_types::UpdateUser { password: Some("viewer-password-2".into()), ..Default::default() };
        let missing = viewer.update_user("viewer", &own).await.unwrap_err();
        assert!(missing.to_string().contains("give current_password too"), "{missing}");
        own.current_password = Some("not-the-password".into());
        assert_eq!(status(viewer.update_user("viewer", &own).await), 403, "a wrong current password");
        own.current_password = Some(PASSWORD.into());
        viewer.update_user("viewer", &own).await.unwrap();
        let promote = wasmq_client::admin_types::UpdateUser { roles: Some(vec!["admin".into()]), ..Default::default() };
        assert_eq!(status(viewer.update_user("viewer", &promote).await), 403);
        // API tokens act as their user, and end with it.
        let token = root.create_token("ci", Some("operator"), None).await.unwrap();
        let by_token = wasmq_client::Admin::new(&broker.admin_listen, &broker.ca, &token.token).unwrap();
        assert_eq!(by_token.me().await.unwrap().user, "operator");
        assert!(!format!("{:?}", root.tokens().await.unwrap()).contains(&token.token), "a token's secret is shown once");
        root.delete_token(&token.view.id).await.unwrap();
        assert_eq!(status(by_token.me().await), 401);
        // No credentials, or a forged session: 401.
        let nobody = wasmq_client::Admin::new(&broker.admin_listen, &broker.ca, "").unwrap();
        assert_eq!(status(nobody.list_topics().await), 401);
        let forged = wasmq_client::Admin::new(&broker.admin_listen, &broker.ca, "0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(status(forged.list_topics().await), 401);
    });
    assert!(login("viewer", PASSWORD).is_err(), "the old password no longer works");
    assert!(login("viewer", "viewer-password-2").is_ok());
    // Five failures of a user and its next attempt is refused unchecked, right or wrong.
    for _ in 0..wasmq_auth::limiter::LOGIN_FAILURES_PER_USER_MAX {
        assert_eq!(status(login("operator", "wrong-password-x")), 401);
    }
    assert_eq!(status(login("operator", PASSWORD)), 429);
}

/// A slave logs in to its master as a user with admin on the cluster and takes the master's
/// users and policies: a user logs in at the slave as at the master and is held to the same
/// policies there; the slave refuses to change them itself. A slave without a login is refused
/// by the master, and says so.
#[test]
fn a_slave_logs_in_to_its_master_and_takes_its_users_and_policies() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let master = broker_with_users(dirs[0].path());
    let slave = Broker::start_slave(dirs[1].path(), &master, &[("WASMQ_REPLICATION_USER", ROOT.0), ("WASMQ_REPLICATION_PASSWORD", ROOT.1)]);
    let stranger = Broker::start_slave(dirs[2].path(), &master, &[("WASMQ_BROKER_ID", "2")]);
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        let app = Connection::connect(master.options().login("app", PASSWORD)).await.unwrap();
        Producer::new(app, "app-producer").send("orders", OutgoingMessage::new("o-1")).await.unwrap();
        // The users reach the slave with its next exchange with the master.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let at_slave = loop {
            match Connection::connect(slave.options().login("app", PASSWORD)).await {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert_eq!(broker_code(&e), Some(ErrorCode::NotAuthenticated), "{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the slave never took the master's users: {e}"),
            }
        };
        let as_g1 = PullConsumer::for_group(at_slave, "g1");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut got = 0;
            for q in 0..2 {
                got += as_g1.pull("orders", q, 0, 10, Duration::ZERO).await.unwrap().messages.len();
            }
            if got == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the message never reached the slave");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let denied = as_g1.pull("audit", 0, 0, 10, Duration::ZERO).await.unwrap_err();
        assert!(denied.to_string().contains("not authorized: user app may not consume on topic audit"), "{denied}");
        let root_at_slave = wasmq_client::Admin::login(&slave.admin_listen, &slave.ca, ROOT.0, ROOT.1).await.unwrap();
        let refused = root_at_slave.create_user("late", PASSWORD, &[]).await.unwrap_err();
        assert!(refused.to_string().contains("this broker is a slave"), "{refused}");
        // The one without a login: its link to the master is down, saying why.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let link = stranger.admin().replicas().await.unwrap().master.expect("a slave's master link");
            if link.error.as_deref().is_some_and(|e| e.contains("requires a user")) {
                assert!(!link.connected);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{link:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// The CLI: `user`, `acl`, `token` and `audit` manage and show what the admin API does, and
/// `--user` / `--password` log in on both ports.
#[test]
fn the_cli_manages_users_and_policies_and_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "cli-orders", "--queues", "1"]);
    broker.cli(&["topic", "create", "cli-billing", "--queues", "1"]);
    // A new password from standard input, or from the environment.
    let mut root = broker.cli_command(&["user", "create", ROOT.0, "--role", "admin"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut root.stdin.take().unwrap(), format!("{}\n", ROOT.1).as_bytes()).unwrap();
    assert!(root.wait().unwrap().success());
    let created = broker.cli_command(&["user", "create", "app"]).env("WASMQ_NEW_PASSWORD", PASSWORD).output().unwrap();
    assert!(created.status.success(), "{created:?}");
    assert!(String::from_utf8_lossy(&created.stdout).contains("created user app (roles: none)"));
    broker.cli(&["acl", "add", "--subject", "user:app", "--resource", "topic:cli-o*", "--action", "produce,consume"]);
    let acl = broker.cli(&["acl", "list"]);
    assert!(
        acl.lines().any(|l| l.contains("allow") && l.contains("user:app") && l.contains("topic:cli-o*") && l.contains("produce,consume")),
        "{acl}"
    );
    let users = broker.cli(&["user", "list"]);
    assert!(users.contains("app") && users.lines().any(|l| l.starts_with("root") && l.contains("admin")), "{users}");

    // Logged in as app, without the admin token: the protocol port and the admin API.
    let bare = || {
        let mut c = std::process::Command::new(wasmq_tests::broker::cli_binary());
        c.args(["--server", &broker.listen, "--admin", &broker.admin_listen, "--ca"]).arg(&broker.ca).env_remove("WASMQ_TOKEN");
        c
    };
    let as_user = |user: &str, password: &str, args: &[&str]| {
        bare().env("WASMQ_USER", user).env("WASMQ_PASSWORD", password).args(args).output().unwrap()
    };
    let sent = as_user("app", PASSWORD, &["send", "cli-orders", "hello"]);
    assert!(sent.status.success(), "{sent:?}");
    let refused = as_user("app", PASSWORD, &["send", "cli-billing", "hello"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not authorized: user app may not describe on topic cli-billing"),
        "{refused:?}"
    );
    let whoami = as_user(ROOT.0, ROOT.1, &["user", "whoami"]);
    assert_eq!(String::from_utf8_lossy(&whoami.stdout).trim(), "root (roles: admin)", "{whoami:?}");
    let wrong = as_user(ROOT.0, "not-the-password", &["user", "whoami"]);
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("wrong user name or password"), "{wrong:?}");

    // An access key, shown once; an API token that acts as its user.
    let key = broker.cli(&["user", "access-key", "app"]);
    assert!(key.contains("access key: app") && key.contains("secret key: "), "{key}");
    let token = broker.cli(&["token", "create", "ci", "--for-user", "app"]);
    let secret = token.split_whitespace().find(|w| w.starts_with("wqt_")).unwrap_or_else(|| panic!("{token}"));
    let by_token = bare().args(["--token", secret, "user", "whoami"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&by_token.stdout).trim(), "app (roles: none)", "{by_token:?}");
    assert!(broker.cli(&["user", "list"]).lines().any(|l| l.starts_with("app") && l.contains("yes")), "access key listed");

    let audit = broker.cli(&["audit", "--limit", "100"]);
    assert!(audit.contains("denied: not authorized: user app may not describe on topic cli-billing"), "{audit}");
    assert!(audit.contains("POST /api/v1/users") && audit.contains("POST /api/v1/policies"), "{audit}");
    assert!(!audit.contains(PASSWORD) && !audit.contains(ROOT.1) && !audit.contains(secret));
    broker.cli(&["user", "delete", "app"]);
    let gone = as_user("app", PASSWORD, &["send", "cli-orders", "again"]);
    assert!(!gone.status.success());
}

/// The users of the authorization matrices, whose rights [`may`] writes out.
const MATRIX_USERS: [&str; 5] = ["admin", "operator", "viewer", "app", "nobody"];

/// A broker with topics `m1` and `x1` and the [`MATRIX_USERS`] (password [`PASSWORD`]) with
/// the roles and policies [`may`] describes.
fn matrix_broker(dir: &std::path::Path) -> Broker {
    let broker = Broker::start(dir, &[]);
    for t in ["m1", "x1"] {
        broker.cli(&["topic", "create", t, "--queues", "1"]);
    }
    let admin = broker.admin();
    wasmq_tests::runtime().block_on(async {
        for u in MATRIX_USERS {
            let roles: &[&str] = match u {
                "admin" | "operator" | "viewer" => &[u],
                _ => &[],
            };
            admin.create_user(u, PASSWORD, roles).await.unwrap();
        }
        admin.add_policy(&policy("user:app", "topic:m*", &["produce", "consume"], "allow")).await.unwrap();
        admin.add_policy(&policy("user:app", "group:mg", &["consume"], "allow")).await.unwrap();
    });
    broker
}

/// What each test user may do, written out here (not asked of the broker): `admin`, `operator`
/// and `viewer` have the built-in roles; `app` may produce to and consume topics `m*` and consume
/// as group `mg`; `nobody` has nothing.
fn may(user: &str, action: wasmq_auth::Action, resource: &wasmq_auth::Resource) -> bool {
    use wasmq_auth::{Action as A, Resource as R};
    match (user, resource) {
        ("admin", _) => true,
        ("operator", R::Cluster) => action == A::Describe,
        ("operator", _) => action != A::Admin,
        ("viewer", _) => action == A::Describe,
        ("app", R::Topic(t)) if t.starts_with('m') => matches!(action, A::Produce | A::Consume | A::Describe),
        ("app", R::Group(g)) if g == "mg" => matches!(action, A::Consume | A::Describe),
        _ => false,
    }
}

/// A request of `op` on `topic` and `group` (every op has one: a new op does not compile here
/// until it gets one).
fn request_of(op: wasmq_protocol::Op, topic: &str, group: &str) -> wasmq_protocol::Request {
    use wasmq_protocol::{Op, Request as R};
    let (t, g) = (topic.to_owned(), group.to_owned());
    match op {
        Op::Hello => R::Hello(wasmq_protocol::HelloRequest { version_min: 1, version_max: 99, client_id: "m".into(), credentials: None }),
        Op::Send => R::Send(wasmq_protocol::SendRequest {
            topic: t,
            queue_id: 0,
            producer_group: "pg".into(),
            messages: vec![wasmq_protocol::Message { body: "x".into(), ..Default::default() }],
            transactional: false,
            check_after_ms: 0,
        }),
        Op::Pull => R::Pull(wasmq_protocol::PullRequest {
            topic: t,
            queue_id: 0,
            offset: 0,
            max_messages: 1,
            max_bytes: 1 << 20,
            wait_ms: 0,
            filter: None,
            group: Some(g),
        }),
        Op::Route => R::Route(wasmq_protocol::RouteRequest { topic: t }),
        Op::OffsetCommit => R::OffsetCommit(wasmq_protocol::OffsetCommitRequest { group: g, topic: t, queue_id: 0, offset: 0 }),
        Op::OffsetQuery => R::OffsetQuery(wasmq_protocol::OffsetQueryRequest { group: g, topic: t, queue_id: 0 }),
        Op::Heartbeat => {
            R::Heartbeat(wasmq_protocol::HeartbeatRequest { client_id: "m".into(), producer_groups: vec![], consumer_groups: vec![g] })
        }
        Op::GroupHeartbeat => R::GroupHeartbeat(wasmq_protocol::GroupHeartbeatRequest {
            group: g,
            client_id: "m".into(),
            mode: wasmq_protocol::GroupMode::Clustering,
            subscriptions: vec![(t, "*".into())],
        }),
        Op::GroupLeave => R::GroupLeave(wasmq_protocol::GroupLeaveRequest { group: g, client_id: "m".into() }),
        Op::GroupCommit => R::GroupCommit(wasmq_protocol::GroupCommitRequest {
            group: g,
            client_id: "m".into(),
            generation: 0,
            topic: t,
            queue_id: 0,
            offset: 0,
        }),
        Op::SendBack => R::SendBack(wasmq_protocol::SendBackRequest {
            group: g,
            topic: t,
            queue_id: 0,
            log_offset: 0,
            dead_letter: false,
            max_reconsume_times: 0,
        }),
        Op::LockQueue => {
            R::LockQueue(wasmq_protocol::LockQueueRequest { group: g, client_id: "m".into(), topic: t, queue_id: 0, unlock: false })
        }
        Op::EndTransaction => R::EndTransaction(wasmq_protocol::EndTransactionRequest {
            producer_group: "pg".into(),
            log_offset: 0,
            unique_id: "none".into(),
            decision: wasmq_protocol::TxDecision::Commit,
            from_check: false,
        }),
        Op::CheckTransaction => R::CheckTransaction(wasmq_protocol::CheckTransactionRequest {
            producer_group: "pg".into(),
            log_offset: 0,
            checks: 0,
            topic: t,
            queue_id: 0,
            message: wasmq_protocol::Message::default(),
        }),
        Op::ReplicaFetch => R::ReplicaFetch(wasmq_protocol::ReplicaFetchRequest {
            broker_name: "matrix".into(),
            broker_id: 9,
            from: 0,
            max_bytes: 1024,
            wait_ms: 0,
            admin_addr: "127.0.0.1:1".into(),
            epoch: 0,
        }),
        Op::ReplicaMeta => R::ReplicaMeta(wasmq_protocol::ReplicaMetaRequest { broker_id: 9, local_offsets_json: "{}".into() }),
        Op::RegisterBroker => R::RegisterBroker(wasmq_protocol::RegisterBrokerRequest {
            cluster: "c".into(),
            broker_name: "b".into(),
            broker_id: 0,
            addr: "127.0.0.1:1".into(),
            admin_addr: "127.0.0.1:2".into(),
            topics: vec![],
            live: wasmq_protocol::BrokerLive::default(),
            register_interval_ms: 1000,
            endpoints: vec![],
            master: true,
            epoch: 0,
        }),
        Op::GetRoute => R::GetRoute(wasmq_protocol::RouteRequest { topic: t }),
        Op::GetCluster => R::GetCluster,
        Op::Controller => R::Controller(bytes::Bytes::from_static(b"{}")),
    }
}

/// The authorization matrix of the native protocol: every op (`Op::ALL`) on resources `app` may
/// and may not use, as each of five users; each cell's answer (refused `NotAuthorized` or not)
/// must be what the op's decision (`wasmq_frontend_native::authz::required`) and the users'
/// rights written out above say — no unexpected allow, no unexpected refusal.
#[test]
fn the_native_authorization_matrix_holds_cell_by_cell() {
    let dir = tempfile::tempdir().unwrap();
    let broker = matrix_broker(dir.path());
    let users = MATRIX_USERS;
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        let (mut cells, mut refused, mut wrong) = (0, 0, Vec::new());
        for u in users {
            let conn = Connection::connect(broker.options().login(u, PASSWORD)).await.unwrap();
            for op in wasmq_protocol::Op::ALL {
                for (topic, group) in [("m1", "mg"), ("x1", "xg")] {
                    let req = request_of(op, topic, group);
                    let needs = wasmq_frontend_native::authz::required(&req);
                    let allowed = needs.iter().all(|(a, r)| may(u, *a, r));
                    let answer = tokio::time::timeout(Duration::from_secs(10), conn.call(&req)).await.expect("an answer");
                    let denied = answer.as_ref().err().and_then(broker_code) == Some(ErrorCode::NotAuthorized);
                    if denied {
                        refused += 1;
                        let text = answer.as_ref().unwrap_err().to_string();
                        assert!(text.contains(&format!("not authorized: user {u} may not ")), "{text}");
                    }
                    if denied == allowed {
                        wrong.push(format!(
                            "{u} {op:?} on {topic}/{group}: needs {needs:?}, {}",
                            if denied { "refused" } else { "allowed" }
                        ));
                    }
                    cells += 1;
                }
            }
        }
        eprintln!("native authorization matrix: {cells} cells, {refused} refused, {} wrong", wrong.len());
        assert!(wrong.is_empty(), "cells answered against their decision:\n{}", wrong.join("\n"));
        assert_eq!(cells, users.len() * wasmq_protocol::Op::ALL.len() * 2);
        assert!(refused > 0 && refused < cells);
    });
}

/// The authorization matrix of the admin API: every operation its OpenAPI document lists, as
/// each of five users (by API token), on resources `app` may and may not use; each cell's answer
/// (403 "not authorized" or not) must match the operation's documented need
/// (`x-wasmq-authorization`) and the users' rights written out above. Operations whose handler
/// decides (a user changing itself, its tokens, a message found by id) have their own cells.
#[test]
fn the_admin_authorization_matrix_holds_cell_by_cell() {
    use wasmq_auth::{Action, Resource};
    let dir = tempfile::tempdir().unwrap();
    let broker = matrix_broker(dir.path());
    let users = MATRIX_USERS;
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        let root = broker.admin();
        let mut tokens = std::collections::HashMap::new();
        for u in users {
            tokens.insert(u, root.create_token("matrix", Some(u), None).await.unwrap().token);
        }
        let doc: serde_json::Value = serde_json::from_str(&raw(&broker, "GET", "/api/v1/openapi.json", None, "").await.1).unwrap();
        let (mut cells, mut refused, mut wrong) = (0, 0, Vec::new());
        for u in users {
            for (path, ops) in doc["paths"].as_object().unwrap() {
                for (method, op) in ops.as_object().unwrap() {
                    let need = &op["x-wasmq-authorization"];
                    if need["action"].is_null() {
                        continue; // public, or decided by the handler: the cells below
                    }
                    let action = Action::parse(need["action"].as_str().unwrap()).unwrap();
                    for (topic, group) in [("m1", "mg"), ("x1", "xg")] {
                        let url = path
                            .replace("{name}", if path.starts_with("/api/v1/groups") { group } else { topic })
                            .replace("{topic}", topic)
                            .replace("{group}", group)
                            .replace("{role}", "router")
                            .replace("{queue}", "0");
                        let resource = match need["resource"].as_str().unwrap() {
                            "cluster" => Resource::Cluster,
                            r if r.starts_with("group:") => Resource::Group(group.into()),
                            _ => Resource::Topic(topic.into()),
                        };
                        // A created topic is named in the body; other bodies need not be valid.
                        let body = if need["resource"] == "topic:(the body's name)" {
                            format!(r#"{{"name":"{topic}-new","queues":1}}"#)
                        } else {
                            "{}".into()
                        };
                        let resource = match &resource {
                            Resource::Topic(_) if body.contains("-new") => Resource::Topic(format!("{topic}-new")),
                            _ => resource,
                        };
                        let (status, text) = raw(&broker, &method.to_uppercase(), &url, Some(&tokens[u]), &body).await;
                        let denied = status == 403 && text.contains("not authorized");
                        assert_ne!(status, 401, "{u} {method} {url}: {text}");
                        refused += usize::from(denied);
                        if denied == may(u, action, &resource) {
                            wrong.push(format!("{u} {method} {url}: {status} {text}"));
                        }
                        cells += 1;
                    }
                }
            }
        }
        // The handler's own decisions: a user's own password and tokens, not another's.
        for u in users {
            let own = raw(
                &broker,
                "PATCH",
                &format!("/api/v1/users/{u}"),
                Some(&tokens[u]),
                r#"{"password":"user-password-1","current_password":"user-password-1"}"#,
            )
            .await
            .0;
            // (The roles it has already: an allowed cell changes nothing for the next user.)
            let other = raw(&broker, "PATCH", "/api/v1/users/viewer", Some(&tokens[u]), r#"{"roles":["viewer"]}"#).await.0;
            let key = raw(&broker, "POST", "/api/v1/users/nobody/access-key", Some(&tokens[u]), "").await.0;
            let admin = u == "admin";
            for (cell, status, allowed) in
                [("own password", own, true), ("another's roles", other, admin), ("another's key", key, admin || u == "nobody")]
            {
                if (status == 403) == allowed {
                    wrong.push(format!("{u} {cell}: {status}"));
                }
                refused += usize::from(status == 403);
                cells += 1;
            }
        }
        eprintln!("admin authorization matrix: {cells} cells, {refused} refused, {} wrong", wrong.len());
        assert!(wrong.is_empty(), "cells answered against their decision:\n{}", wrong.join("\n"));
        assert!(cells > 400 && refused > 0 && refused < cells, "{cells} {refused}");
    });
}

/// One admin API request with an optional bearer token: (status, body).
async fn raw(broker: &Broker, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let admin = wasmq_client::Admin::new(&broker.admin_listen, &broker.ca, token.unwrap_or_default()).unwrap();
    match admin.raw(method, path, (!body.is_empty()).then(|| body.as_bytes().to_vec())).await {
        Ok(b) => (200, String::from_utf8_lossy(&b).into_owned()),
        Err(wasmq_client::ClientError::Admin { status, message }) => (status, message),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// A gRPC client over its own TLS + HTTP/2 connection (hyper's, driven on a task of its own).
mod grpc {
    use wasmq_rocketmq_api::client::H2;
    use wasmq_rocketmq_api::pb::messaging_service_client::MessagingServiceClient;

    pub(super) async fn connect(addr: &str, ca: &std::path::Path) -> MessagingServiceClient<H2> {
        let config = wasmq_client::client_config(ca, b"h2").unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        MessagingServiceClient::with_origin(H2(send), "https://localhost".parse().unwrap())
    }
}

/// A request signed by `user` with its access secret, as a RocketMQ 5 client sends it.
fn signed_as<T>(m: T, user: &str, secret: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert("x-mq-client-id", format!("matrix-{user}").parse().unwrap());
    wasmq_rocketmq_api::sign::sign(r.metadata_mut(), user, secret, "20261208T120000Z");
    r
}

/// The authorization matrix of the RocketMQ 5 gRPC port: every RPC of the table
/// (`wasmq_frontend_grpc::authz::RPCS`, held to the vendored `service.proto`) signed by each of
/// five users, on resources `app` may and may not use; each answer (the `FORBIDDEN` status or
/// not) held to the RPC's needs and the users' rights written out above. Telemetry carries a
/// producer's Settings, which need produce on its topics.
#[test]
fn the_grpc_authorization_matrix_holds_cell_by_cell() {
    use wasmq_auth::{Action, Resource};
    use wasmq_frontend_grpc::authz::{On, RPCS};
    use wasmq_rocketmq_api::pb;
    let dir = tempfile::tempdir().unwrap();
    let broker = matrix_broker(dir.path());
    let users = MATRIX_USERS;
    let forbidden = pb::Code::Forbidden as i32;
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        let root = broker.admin();
        let mut secrets = std::collections::HashMap::new();
        for u in users {
            secrets.insert(u, root.new_access_key(u).await.unwrap().secret_key);
        }
        let mut client = grpc::connect(&broker.grpc_listen, &broker.ca).await;
        let res = |n: &str| Some(pb::Resource { resource_namespace: String::new(), name: n.to_owned() });
        let (mut cells, mut refused, mut wrong) = (0, 0, Vec::new());
        for u in users {
            let sk = secrets[u].clone();
            macro_rules! signed {
                ($m:expr) => {
                    signed_as($m, u, &sk)
                };
            }
            for (rpc, needs) in RPCS {
                for (topic, group) in [("m1", "mg"), ("x1", "xg")] {
                    let (t, g) = (res(topic), res(group));
                    let mq = Some(pb::MessageQueue { topic: t.clone(), ..Default::default() });
                    let handle = "not-a-handle".to_owned();
                    // The status in the answer; None: the call failed (not served).
                    let status: Option<i32> = match *rpc {
                        "QueryRoute" => client
                            .query_route(signed!(pb::QueryRouteRequest { topic: t, endpoints: None }))
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().status)
                            .map(|s| s.code),
                        "Heartbeat" => client
                            .heartbeat(signed!(pb::HeartbeatRequest { group: g, client_type: pb::ClientType::SimpleConsumer as i32 }))
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().status)
                            .map(|s| s.code),
                        "SendMessage" => {
                            let m = pb::Message {
                                topic: t,
                                system_properties: Some(pb::SystemProperties {
                                    message_id: format!("m-{u}-{topic}"),
                                    ..Default::default()
                                }),
                                body: bytes::Bytes::from_static(b"x"),
                                ..Default::default()
                            };
                            client
                                .send_message(signed!(pb::SendMessageRequest { messages: vec![m] }))
                                .await
                                .ok()
                                .and_then(|r| r.into_inner().status)
                                .map(|s| s.code)
                        }
                        "QueryAssignment" => client
                            .query_assignment(signed!(pb::QueryAssignmentRequest { topic: t, group: g, endpoints: None }))
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().status)
                            .map(|s| s.code),
                        "ReceiveMessage" => {
                            let req = pb::ReceiveMessageRequest {
                                group: g,
                                message_queue: mq,
                                batch_size: 1,
                                invisible_duration: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
                                long_polling_timeout: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
                                ..Default::default()
                            };
                            match client.receive_message(signed!(req)).await {
                                Ok(r) => {
                                    let mut s = r.into_inner();
                                    match futures_util::StreamExt::next(&mut s).await {
                                        Some(Ok(pb::ReceiveMessageResponse {
                                            content: Some(pb::receive_message_response::Content::Status(st)),
                                        })) => Some(st.code),
                                        _ => None,
                                    }
                                }
                                Err(_) => None,
                            }
                        }
                        "AckMessage" => {
                            let e = pb::AckMessageEntry { message_id: "m".into(), receipt_handle: handle, lite_topic: None };
                            client
                                .ack_message(signed!(pb::AckMessageRequest { group: g, topic: t, entries: vec![e] }))
                                .await
                                .ok()
                                .and_then(|r| r.into_inner().status)
                                .map(|s| s.code)
                        }
                        "ForwardMessageToDeadLetterQueue" => {
                            let req = pb::ForwardMessageToDeadLetterQueueRequest {
                                group: g,
                                topic: t,
                                receipt_handle: handle,
                                ..Default::default()
                            };
                            client
                                .forward_message_to_dead_letter_queue(signed!(req))
                                .await
                                .ok()
                                .and_then(|r| r.into_inner().status)
                                .map(|s| s.code)
                        }
                        "PullMessage" => client
                            .pull_message(signed!(pb::PullMessageRequest { group: g, message_queue: mq, ..Default::default() }))
                            .await
                            .ok()
                            .map(|_| 0),
                        "UpdateOffset" => client
                            .update_offset(signed!(pb::UpdateOffsetRequest { group: g, message_queue: mq, offset: 0 }))
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().status)
                            .map(|s| s.code),
                        "GetOffset" => client
                            .get_offset(signed!(pb::GetOffsetRequest { group: g, message_queue: mq }))
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().status)
                            .map(|s| s.code),
                        "QueryOffset" => client
                            .query_offset(signed!(pb::QueryOffsetRequest { message_queue: mq, ..Default::default() }))
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().status)
                            .map(|s| s.code),
                        "EndTransaction" => {
                            let req = pb::EndTransactionRequest {
                                topic: t,
                                message_id: "m".into(),
                                transaction_id: "0000000000000000".into(),
                                ..Default::default()
                            };
                            client.end_transaction(signed!(req)).await.ok().and_then(|r| r.into_inner().status).map(|s| s.code)
                        }
                        "Telemetry" => {
                            let settings = pb::Settings {
                                client_type: Some(pb::ClientType::Producer as i32),
                                pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                                    topics: vec![t.clone().unwrap()],
                                    ..Default::default()
                                })),
                                ..Default::default()
                            };
                            let cmd =
                                pb::TelemetryCommand { status: None, command: Some(pb::telemetry_command::Command::Settings(settings)) };
                            match client.telemetry(signed!(futures_util::stream::iter(vec![cmd]))).await {
                                Ok(r) => match futures_util::StreamExt::next(&mut r.into_inner()).await {
                                    Some(Ok(c)) => c.status.map(|s| s.code),
                                    _ => None,
                                },
                                Err(_) => None,
                            }
                        }
                        "NotifyClientTermination" => client
                            .notify_client_termination(signed!(pb::NotifyClientTerminationRequest { group: g }))
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().status)
                            .map(|s| s.code),
                        "ChangeInvisibleDuration" => {
                            let req = pb::ChangeInvisibleDurationRequest {
                                group: g,
                                topic: t,
                                receipt_handle: handle,
                                invisible_duration: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
                                ..Default::default()
                            };
                            client.change_invisible_duration(signed!(req)).await.ok().and_then(|r| r.into_inner().status).map(|s| s.code)
                        }
                        "RecallMessage" => client
                            .recall_message(signed!(pb::RecallMessageRequest { topic: t, recall_handle: handle }))
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().status)
                            .map(|s| s.code),
                        "SyncLiteSubscription" => {
                            client.sync_lite_subscription(signed!(pb::SyncLiteSubscriptionRequest::default())).await.ok().map(|_| 0)
                        }
                        other => panic!("no request for the RPC {other}: add one here"),
                    };
                    let needs: Vec<(Action, Resource)> = if *rpc == "Telemetry" {
                        vec![(Action::Produce, Resource::Topic(topic.into()))]
                    } else {
                        needs
                            .iter()
                            .map(|(a, on)| {
                                (
                                    *a,
                                    match on {
                                        On::Topic => Resource::Topic(topic.into()),
                                        On::Group => Resource::Group(group.into()),
                                    },
                                )
                            })
                            .collect()
                    };
                    let allowed = needs.iter().all(|(a, r)| may(u, *a, r));
                    let denied = status == Some(forbidden);
                    refused += usize::from(denied);
                    if denied == allowed {
                        wrong.push(format!("{u} {rpc} on {topic}/{group}: needs {needs:?}, status {status:?}"));
                    }
                    cells += 1;
                }
            }
        }
        eprintln!("gRPC authorization matrix: {cells} cells, {refused} refused, {} wrong", wrong.len());
        assert!(wrong.is_empty(), "cells answered against their decision:\n{}", wrong.join("\n"));
        assert_eq!(cells, users.len() * RPCS.len() * 2);
        assert!(refused > 0 && refused < cells);
    });
}
