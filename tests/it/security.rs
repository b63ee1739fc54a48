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
        let own = wasmq_client::admin_types::UpdateUser { password: Some("viewer-password-2".into()), ..Default::default() };
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
