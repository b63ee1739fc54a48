//! `wasmq`: manage topics, send and consume messages, and benchmark a broker.

/// mimalloc: the client's per-message allocations (ids, messages, frames) cost less than with
/// glibc's allocator (docs/benchmarks/2026-12.md). The broker keeps glibc's: its consume path was slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_grpc;
mod plugin;
mod users;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use wasmq_client::admin_types::{CreateTopic, TopicMessageType};
use wasmq_client::{Admin, Connection, ConnectionOptions, OutgoingMessage, Producer, PullConsumer, TransactionProducer, TxDecision};

#[derive(Debug, Parser)]
#[command(name = "wasmq", version, about = "wasmq command line")]
pub(crate) struct Cli {
    /// Broker protocol address.
    #[arg(long, global = true, env = "WASMQ_SERVER", default_value = "127.0.0.1:7070")]
    server: String,
    /// Broker admin (HTTPS) address.
    #[arg(long, global = true, env = "WASMQ_ADMIN", default_value = "127.0.0.1:7071")]
    admin: String,
    /// CA certificate (PEM) the broker's certificate is signed by.
    #[arg(long, global = true, env = "WASMQ_CA", default_value = "data/tls/ca.pem")]
    ca: PathBuf,
    /// Admin API token: an API token (`wasmq token create`) or the broker's configured admin
    /// token (default, without --user: the contents of data/admin-token).
    #[arg(long, global = true, env = "WASMQ_TOKEN")]
    token: Option<String>,
    /// The user to log in as, on the protocol port (Hello) and the admin API.
    #[arg(long, global = true, env = "WASMQ_USER")]
    user: Option<String>,
    /// The user's password (better in the environment than on a command line).
    #[arg(long, global = true, env = "WASMQ_PASSWORD", hide_env_values = true, requires = "user")]
    password: Option<String>,
    /// How reports print: tables for people, JSON for scripts.
    #[arg(long, global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Send messages: the arguments, or each line of standard input.
    Send {
        topic: String,
        messages: Vec<String>,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        tags: Option<String>,
        /// Same ordering key → same queue, in order.
        #[arg(long)]
        ordering_key: Option<String>,
        /// A user property, `name=value` (repeatable).
        #[arg(long = "property", value_name = "NAME=VALUE")]
        properties: Vec<String>,
        #[arg(long, default_value = "wasmq-cli")]
        group: String,
        /// Deliver no earlier than this many ms from now (a scheduled message).
        #[arg(long, conflicts_with = "deliver_at")]
        delay_ms: Option<u64>,
        /// Deliver no earlier than this time, in ms since the epoch.
        #[arg(long)]
        deliver_at: Option<u64>,
        /// Send each message as a transaction of the producer group: a half message, then
        /// `--decision`.
        #[arg(long, conflicts_with_all = ["delay_ms", "deliver_at"])]
        transactional: bool,
        /// The local transaction's outcome; `unknown` leaves it to the broker's check-back.
        #[arg(long, value_enum, default_value = "commit", requires = "transactional")]
        decision: DecisionArg,
        /// Then stay connected this long, answering the broker's checks for the group with
        /// `--check-answer` (a second instance of a producer group).
        #[arg(long, default_value_t = 0, requires = "transactional")]
        answer_checks_secs: u64,
        #[arg(long, value_enum, default_value = "commit", requires = "transactional")]
        check_answer: DecisionArg,
    },
    /// Undecided transactions by topic and producer group, and what became of the others.
    Transactions,
    /// Find stored messages: by id, by key, or page through a queue.
    Message {
        #[command(subcommand)]
        command: MessageCommand,
    },
    /// Broker sets: roles, log ends, replication lag.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Scheduled messages not yet delivered, by due time.
    Scheduled,
    /// Print the messages of a topic's queues.
    Consume {
        topic: String,
        /// `earliest`, `latest`, or a queue offset.
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Only this queue (default: all).
        #[arg(long)]
        queue: Option<u32>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Keep waiting for new messages instead of stopping at the end.
        #[arg(long)]
        follow: bool,
        /// Consume as a member of this consumer group (clustering: offsets kept by the broker;
        /// runs until ctrl-c or --count; --from applies to a group's first run).
        #[arg(long)]
        group: Option<String>,
        /// With --group: only messages whose tag matches (`A || B`).
        #[arg(long, default_value = "*")]
        filter: String,
        /// With --group: answer every message "reconsume later" (it comes back through the
        /// group's retry topic, then goes to its dead-letter topic): for trying retries out.
        #[arg(long, requires = "group")]
        reconsume_later: bool,
        /// With --group: reconsumes before a message goes to the dead-letter topic (default:
        /// the broker's).
        #[arg(long, requires = "group")]
        max_reconsume_times: Option<u32>,
        /// With --group: orderly, each queue locked to this member and read in order, a failed
        /// message retried in place.
        #[arg(long, requires = "group", conflicts_with = "broadcast")]
        orderly: bool,
        /// With --group: broadcasting, every member gets every message (this member's place is
        /// its own, not the group's).
        #[arg(long, requires = "group")]
        broadcast: bool,
    },
    /// List and describe consumer groups, reset their offsets, delete them.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Upload WebAssembly plugins and attach them to topics and groups.
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
    /// Measure throughput and latency against a running broker.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Users: create, delete, passwords, roles, access keys, certificate names.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// Policies: who may do what on which topics, groups and the cluster.
    Acl {
        #[command(subcommand)]
        command: users::AclCommand,
    },
    /// API tokens for scripts and tools.
    Token {
        #[command(subcommand)]
        command: users::TokenCommand,
    },
    /// The audit log: admin changes, refused requests, failed logins (newest first).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum MessageCommand {
    /// The newest message with this unique id.
    Get { id: String },
    /// A topic's messages with this key, newest first.
    Find {
        topic: String,
        #[arg(long)]
        key: String,
    },
    /// A page of one queue, from an offset (default: the queue's start) or a time.
    Browse {
        topic: String,
        queue: u32,
        #[arg(long, conflicts_with = "time")]
        offset: Option<u64>,
        /// From the first message stored at or after this time (ms since the epoch).
        #[arg(long)]
        time: Option<u64>,
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// The broker at --admin and its slaves (or, for a slave, its master): role, address, log
    /// end, replication lag in bytes and seconds, connection state.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Every broker set the name servers know (comma-separated addresses), instead of the
        /// one at --admin.
        #[arg(long, value_delimiter = ',')]
        namesrv: Vec<String>,
        /// The controller's view instead (comma-separated controller node addresses): its nodes
        /// and leader, and per broker set the master, epoch, in-sync set and each member's lag.
        #[arg(long, value_delimiter = ',', env = "WASMQ_CONTROLLER", conflicts_with = "namesrv")]
        controller: Vec<String>,
    },
    /// Elect a new master for a broker set through the controller: a planned switchover to an
    /// in-sync member (the most advanced one without --to), or, with --unclean, to any member
    /// (what it lacks of acknowledged messages is lost).
    Elect {
        /// The broker set (broker name).
        set: String,
        /// The member to elect (its broker id).
        #[arg(long)]
        to: Option<u32>,
        /// Allow a member outside the in-sync set (needs --to): acknowledged messages it lacks
        /// are lost.
        #[arg(long, requires = "to")]
        unclean: bool,
        /// Controller node addresses, comma-separated.
        #[arg(long, value_delimiter = ',', env = "WASMQ_CONTROLLER", required = true)]
        controller: Vec<String>,
    },
    /// Every broker of the cluster as the broker at --admin sees it (through its name servers):
    /// role, addresses, version, uptime, log end, lag, disk use.
    Brokers {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DecisionArg {
    Commit,
    Rollback,
    Unknown,
}

impl From<DecisionArg> for TxDecision {
    fn from(d: DecisionArg) -> Self {
        match d {
            DecisionArg::Commit => TxDecision::Commit,
            DecisionArg::Rollback => TxDecision::Rollback,
            DecisionArg::Unknown => TxDecision::Unknown,
        }
    }
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    List,
    /// Mode, members, assignments, per-queue committed offset and lag.
    Describe {
        name: String,
    },
    /// Move the group's offsets of a topic.
    ResetOffset {
        name: String,
        topic: String,
        /// `earliest`, `latest`, or a timestamp in ms since the epoch.
        #[arg(long)]
        to: String,
    },
    /// Set the group's own settings (creating it): `--fifo true` for in-order consumption by
    /// RocketMQ 5 consumers, one batch of a queue in flight at a time.
    Set {
        name: String,
        #[arg(long, action = clap::ArgAction::Set)]
        fifo: bool,
    },
    Delete {
        name: String,
    },
    /// List the group's dead letters.
    Dlq {
        name: String,
    },
    /// Send a dead letter (or all of them) back to its origin topic.
    Resend {
        name: String,
        /// Its offset in the dead-letter queue (see `group dlq`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        offset: Option<u64>,
        /// Every dead letter of the group.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    Create {
        name: String,
        #[arg(long, default_value_t = 8)]
        queues: u32,
        /// Keep messages readable this long, in ms (default: as long as the log keeps them).
        #[arg(long)]
        retention_ms: Option<u64>,
        /// The kind of message the topic takes: NORMAL, FIFO, DELAY, TRANSACTION or MIXED (any);
        /// a send of another kind is refused.
        #[arg(long, default_value = "MIXED")]
        message_type: TopicMessageType,
    },
    /// Change a topic's message type.
    Update {
        name: String,
        #[arg(long)]
        message_type: TopicMessageType,
    },
    List,
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
}

impl Cli {
    /// The admin API client: with `--token`, that token; with `--user`, a login; else the
    /// development token in `data/admin-token`.
    pub(crate) async fn admin(&self) -> Result<Admin> {
        self.admin_at(&self.admin).await
    }

    /// [`Cli::admin`] for the broker whose admin API is at `addr` (a login is per broker).
    async fn admin_at(&self, addr: &str) -> Result<Admin> {
        let read_ca = || format!("reading the CA certificate {} (--ca)", self.ca.display());
        match (&self.token, &self.user) {
            (None, Some(user)) => {
                let password = self.password.as_deref().context("--user needs --password (or WASMQ_PASSWORD)")?;
                Admin::login(addr, &self.ca, user, password).await.with_context(|| format!("logging in as {user} at {addr}"))
            }
            _ => Admin::new(addr, &self.ca, self.admin_token()?).with_context(read_ca),
        }
    }

    /// `--token`, or the development token in `data/admin-token`.
    fn admin_token(&self) -> Result<String> {
        match &self.token {
            Some(t) => Ok(t.clone()),
            None => std::fs::read_to_string("data/admin-token").map(|t| t.trim().to_owned()).context(
                "no --token given, and no development token (data/admin-token) here: run from the folder where the broker keeps its data, or pass --token",
            ),
        }
    }

    pub(crate) async fn connect(&self) -> Result<Connection> {
        Ok(Connection::connect(self.connection_options()?).await?)
    }

    /// The protocol port's options, logging in as `--user` when given.
    pub(crate) fn connection_options(&self) -> Result<ConnectionOptions> {
        let options = ConnectionOptions::new(&self.server, &self.ca);
        Ok(match &self.user {
            Some(user) => options.login(user, self.password.as_deref().context("--user needs --password (or WASMQ_PASSWORD)")?),
            None => options,
        })
    }

    /// What went wrong, said first: a missing or wrong CA file, a broker that is not there.
    fn headline(&self, e: &anyhow::Error) -> Option<String> {
        let ca = self.ca.display();
        e.chain().find_map(|cause| {
            let text = cause.to_string();
            let client = cause.downcast_ref::<wasmq_client::ClientError>();
            if text.contains("No such file") && text.contains(&*self.ca.to_string_lossy()) {
                return Some(format!(
                    "no such file: {ca} — run from the folder where the broker keeps its data (its data/tls/ca.pem), or pass --ca"
                ));
            }
            match client {
                Some(wasmq_client::ClientError::Connect { addr, reason })
                    if reason.contains("UnknownIssuer") || reason.contains("BadSignature") =>
                {
                    Some(format!("the certificate of the broker at {addr} is not signed by {ca} (pass the CA it was made with: --ca)"))
                }
                Some(wasmq_client::ClientError::Connect { addr, reason }) if reason.contains("refused") => {
                    Some(format!("no broker is listening on {addr} (connection refused): start one, or pass --server / --admin"))
                }
                _ => None,
            }
        })
    }
}

/// Splits a `key=value` argument of `flag`.
pub(crate) fn key_value(kv: &str, flag: &str) -> Result<(String, String)> {
    kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).with_context(|| format!("{flag} {kv:?} is not key=value"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause first, then the chain; never a stack trace (RUST_BACKTRACE or not):
            // these are the user's errors, not the program's.
            match cli.headline(&e) {
                Some(h) => eprintln!("error: {h}\n  ({e:#})"),
                None => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Topic { command } => topic(cli, command).await,
        Command::Send {
            topic,
            messages,
            key,
            tags,
            ordering_key,
            properties,
            group,
            delay_ms,
            deliver_at,
            transactional,
            decision,
            answer_checks_secs,
            check_answer,
        } => {
            let properties = properties.iter().map(|kv| key_value(kv, "--property")).collect::<Result<Vec<_>>>()?;
            let conn = cli.connect().await?;
            let check_answer = TxDecision::from(*check_answer);
            let tx_producer = if *transactional {
                Some(
                    TransactionProducer::start(conn.clone(), group.clone(), move |c| {
                        println!("check-back for transaction {} (check {}): answering {check_answer:?}", c.log_offset, c.checks + 1);
                        check_answer
                    })
                    .await?,
                )
            } else {
                None
            };
            let producer = Producer::new(conn, group);
            let lines: Vec<String> =
                if messages.is_empty() { std::io::stdin().lines().collect::<Result<_, _>>()? } else { messages.clone() };
            for line in lines {
                let mut m = OutgoingMessage::new(line.into_bytes());
                m.keys.extend(key.clone());
                m.tags.clone_from(tags);
                m.ordering_key.clone_from(ordering_key);
                m.properties.clone_from(&properties);
                if let Some(d) = delay_ms {
                    m = m.with_delay(Duration::from_millis(*d));
                } else if let Some(at) = deliver_at {
                    m = m.with_delivery_at(*at);
                }
                if let Some(tp) = &tx_producer {
                    let t = tp.send(topic, m, |_| TxDecision::from(*decision)).await?;
                    let r = &t.receipt;
                    let ended = match &t.ended {
                        Ok(e) => format!("{:?}", e.state),
                        Err(e) => format!("not ended ({e}); the broker will check back"),
                    };
                    println!("transaction {} ({}) for queue {}: {:?} → {ended}", r.log_offset, r.message_id, r.queue_id, t.decision);
                } else if delay_ms.is_some() || deliver_at.is_some() {
                    // Held until due: its queue offset is given when it is delivered.
                    let due = m.delivery_ms;
                    let r = producer.send(topic, m).await?;
                    println!(
                        "scheduled {} for queue {}, due at {due} ms (its queue offset is given when it is delivered)",
                        r.message_id, r.queue_id
                    );
                } else {
                    let r = producer.send(topic, m).await?;
                    println!("sent {} to queue {} at offset {}", r.message_id, r.queue_id, r.queue_offset);
                }
            }
            if *answer_checks_secs > 0 {
                println!("answering check-backs for group {group} for {answer_checks_secs} s");
                tokio::time::sleep(Duration::from_secs(*answer_checks_secs)).await;
            }
            Ok(())
        }
        Command::Cluster { command: ClusterCommand::Status { json, controller, .. } } if !controller.is_empty() => {
            controller_status(cli, *json || cli.output == Output::Json, controller).await
        }
        Command::Cluster { command: ClusterCommand::Status { json, namesrv, .. } } => {
            cluster_status(cli, *json || cli.output == Output::Json, namesrv).await
        }
        Command::Cluster { command: ClusterCommand::Elect { set, to, unclean, controller } } => {
            controller_elect(cli, set, *to, *unclean, controller).await
        }
        Command::Cluster { command: ClusterCommand::Brokers { json } } => cluster_brokers(cli, *json || cli.output == Output::Json).await,
        Command::Message { command } => message(cli, command).await,
        Command::Transactions => transactions(cli).await,
        Command::Scheduled => scheduled(cli).await,
        Command::Consume {
            topic,
            from,
            group: Some(group),
            filter,
            count,
            reconsume_later,
            max_reconsume_times,
            orderly,
            broadcast,
            ..
        } => {
            let answer = if *reconsume_later { wasmq_client::ConsumeResult::ReconsumeLater } else { wasmq_client::ConsumeResult::Success };
            let how = GroupHow {
                filter,
                from,
                count: *count,
                answer,
                max_reconsume_times: *max_reconsume_times,
                orderly: *orderly,
                broadcast: *broadcast,
            };
            consume_group(cli, topic, group, &how).await
        }
        Command::Consume { topic, from, queue, count, follow, group: None, .. } => consume(cli, topic, from, *queue, *count, *follow).await,
        Command::Group { command } => group(cli, command).await,
        Command::Plugin { command } => plugin::run(cli, command).await,
        Command::Bench { command } => bench::run(cli, command).await,
        Command::User { command } => users::user(cli, command).await,
        Command::Acl { command } => users::acl(cli, command).await,
        Command::Token { command } => users::token(cli, command).await,
        Command::Audit { limit } => users::audit(cli, *limit).await,
    }
}

/// One line per message: where it is, its id, key, tags and body (as text when it is UTF-8).
fn print_message(m: &wasmq_client::admin_types::MessageView) {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.decode(&m.body_base64).unwrap_or_default();
    let text = String::from_utf8(body).unwrap_or_else(|b| format!("<{} bytes>", b.as_bytes().len()));
    let properties: Vec<String> = m.properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "{}/{} @{} id={} keys={:?} tags={} properties={{{}}} born={} stored={} reconsumed={}{} | {}{}",
        m.topic,
        m.queue_id,
        m.queue_offset,
        m.unique_id.as_deref().unwrap_or("-"),
        m.keys,
        m.tags.as_deref().unwrap_or("-"),
        properties.join(", "),
        m.born_ms,
        m.store_ms,
        m.reconsume_times,
        m.delivery_ms.map_or(String::new(), |d| format!(" due={d}")),
        text,
        if m.body_truncated { " …" } else { "" }
    );
}

async fn transactions(cli: &Cli) -> Result<()> {
    let t = cli.admin().await?.transactions().await?;
    if printed_json(cli, &t)? {
        return Ok(());
    }
    println!(
        "committed {}, rolled back {}, discarded {}; checks sent {}, unknown answers {}, late ends {}",
        t.committed, t.rolled_back, t.discarded, t.checks_sent, t.unknown_answers, t.late_ends
    );
    println!("{:<24} {:<24} {:>8} {:>16} {:>8} {:>11}", "producer group", "topic", "pending", "oldest stored", "checks", "most checks");
    for p in &t.pending {
        println!(
            "{:<24} {:<24} {:>8} {:>16} {:>8} {:>11}",
            p.producer_group, p.topic, p.pending, p.oldest_stored_ms, p.checks, p.most_checks
        );
    }
    println!("{:<24} {:>11}", "producer group", "connections");
    for p in &t.producers {
        println!("{:<24} {:>11}", p.producer_group, p.connections);
    }
    Ok(())
}

async fn scheduled(cli: &Cli) -> Result<()> {
    let s = cli.admin().await?.scheduled().await?;
    if printed_json(cli, &s)? {
        return Ok(());
    }
    println!(
        "pending {}, overdue {}, next due {}; released {}, dropped {} since start",
        s.pending,
        s.overdue,
        s.next_due_ms.map_or("-".to_owned(), |d| format!("at {d} ms")),
        s.released,
        s.dropped
    );
    println!("{:>14} {:>10}", "due within", "messages");
    for d in &s.due_within {
        println!("{:>14} {:>10}", format!("{} s", d.within_ms / 1000), d.count);
    }
    Ok(())
}

async fn message(cli: &Cli, command: &MessageCommand) -> Result<()> {
    let admin = cli.admin().await?;
    let json = cli.output == Output::Json;
    match command {
        MessageCommand::Get { id } if json => println!("{}", serde_json::to_string_pretty(&admin.message(id).await?)?),
        MessageCommand::Get { id } => print_message(&admin.message(id).await?),
        MessageCommand::Find { topic, key } if json => {
            println!("{}", serde_json::to_string_pretty(&admin.messages_by_key(topic, key).await?)?)
        }
        MessageCommand::Find { topic, key } => admin.messages_by_key(topic, key).await?.iter().for_each(print_message),
        MessageCommand::Browse { topic, queue, offset, time, count } => {
            let from = match (offset, time) {
                (_, Some(t)) => wasmq_client::Browse::Time(*t),
                (Some(o), None) => wasmq_client::Browse::Offset(*o),
                (None, None) => wasmq_client::Browse::Time(0),
            };
            let page = admin.browse(topic, *queue, from, *count).await?;
            if printed_json(cli, &page)? {
                return Ok(());
            }
            page.messages.iter().for_each(print_message);
            println!("next offset {} (queue holds {}..{})", page.next_offset, page.min_offset, page.max_offset);
        }
    }
    Ok(())
}

async fn cluster_brokers(cli: &Cli, json: bool) -> Result<()> {
    let c = cli.admin().await?.cluster().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    match (&c.source[..], &c.error) {
        ("namesrv", _) => println!("cluster {} (name servers {})", c.cluster, c.name_servers.join(", ")),
        (_, Some(e)) => println!("cluster {}: this broker set only ({e})", c.cluster),
        _ => println!("cluster {}: this broker set only (no name servers)", c.cluster),
    }
    let dash = || "-".to_owned();
    println!(
        "{:<12} {:>3} {:<7} {:<16} {:<22} {:<22} {:<8} {:>10} {:>14} {:>10} {:>6}",
        "broker", "id", "role", "status", "address", "admin", "version", "uptime s", "log end", "lag bytes", "disk %"
    );
    for set in &c.broker_sets {
        for b in &set.brokers {
            println!(
                "{:<12} {:>3} {:<7} {:<16} {:<22} {:<22} {:<8} {:>10} {:>14} {:>10} {:>6}",
                set.broker_name,
                b.broker_id,
                b.role,
                status_text(&b.status, b.down_since_ms),
                b.addr.clone().unwrap_or_else(dash),
                b.admin_addr,
                b.version.clone().unwrap_or_else(dash),
                b.uptime_ms.map_or_else(dash, |ms| (ms / 1000).to_string()),
                b.log_end_offset,
                b.lag_bytes.map_or_else(dash, |l| l.to_string()),
                match (b.disk_used_bytes, b.disk_total_bytes) {
                    (Some(u), Some(t)) if t > 0 => format!("{:.0}", u as f64 * 100.0 / t as f64),
                    _ => dash(),
                }
            );
        }
    }
    Ok(())
}

/// With `--output json`: prints `value` as JSON and says so (the caller then prints nothing).
fn printed_json(cli: &Cli, value: &impl serde::Serialize) -> Result<bool> {
    if cli.output != Output::Json {
        return Ok(false);
    }
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(true)
}

/// `up`, or `down` with how long since the broker was last heard from.
fn status_text(status: &str, down_since_ms: Option<u64>) -> String {
    match (status, down_since_ms) {
        ("down", Some(at)) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            format!("down {:.0} s", now.saturating_sub(at) as f64 / 1000.0)
        }
        ("", _) => "-".into(),
        (s, _) => s.into(),
    }
}

/// The controller's view: its nodes and leader, each broker set's master, epoch and in-sync set,
/// and what each member last said (log end, lag behind the master).
async fn controller_status(cli: &Cli, json: bool, nodes: &[String]) -> Result<()> {
    use wasmq_controller_api::rpc::{Answer, Call};
    let client = wasmq_controller_api::Client::new(nodes.to_vec(), &cli.ca);
    let status = match client.call(&Call::Status).await.with_context(|| format!("asking the controller ({})", nodes.join(", ")))? {
        Answer::Status(s) => s,
        other => anyhow::bail!("the controller answered {other:?}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("controller: leader node {} (term {})", status.node, status.term);
    for (id, addr) in &status.nodes {
        println!("  node {id} {addr} {}", status.node_role(*id));
    }
    for (name, s) in &status.sets {
        let master = s.set.master.map_or_else(|| "none".to_owned(), |m| m.to_string());
        let in_sync: Vec<String> = s.set.in_sync.iter().map(u32::to_string).collect();
        println!("broker set {name}: master {master}, epoch {}, in sync [{}]", s.set.epoch, in_sync.join(", "));
        let master_end = s.set.master.and_then(|m| s.heard.get(&m)).map(|h| h.log_end);
        println!("  {:>3} {:<7} {:<22} {:>14} {:>12} {:>8} {:>10}", "id", "role", "address", "log end", "lag bytes", "in sync", "heard");
        for (id, addr) in &s.set.members {
            let role = if s.set.master == Some(*id) { "master" } else { "slave" };
            let sync = if s.set.in_sync.contains(id) { "yes" } else { "no" };
            let (end, lag, heard) = match s.heard.get(id) {
                Some(h) => (
                    h.log_end.to_string(),
                    master_end.map_or_else(|| "-".to_owned(), |m| m.saturating_sub(h.log_end).to_string()),
                    format!("{:.1} s ago", h.ms_ago as f64 / 1000.0),
                ),
                None => ("-".into(), "-".into(), "never".into()),
            };
            println!("  {id:>3} {role:<7} {addr:<22} {end:>14} {lag:>12} {sync:>8} {heard:>10}");
        }
    }
    Ok(())
}

/// `wasmq cluster elect`: a new master for `set` through the controller.
async fn controller_elect(cli: &Cli, set: &str, to: Option<u32>, unclean: bool, nodes: &[String]) -> Result<()> {
    use wasmq_controller_api::Outcome;
    use wasmq_controller_api::rpc::{Answer, Call};
    if unclean {
        eprintln!("UNCLEAN election: acknowledged messages broker {} lacks are lost", to.unwrap_or_default());
    }
    let client = wasmq_controller_api::Client::new(nodes.to_vec(), &cli.ca);
    let call = Call::Elect { set: set.to_owned(), to, unclean };
    match client.call(&call).await.with_context(|| format!("asking the controller ({})", nodes.join(", ")))? {
        Answer::Elected(Outcome::Applied(s)) => {
            let master = s.master.map_or_else(|| "none".to_owned(), |m| m.to_string());
            println!("broker set {set}: master {master} in epoch {}", s.epoch);
            Ok(())
        }
        Answer::Elected(Outcome::Refused(why)) => anyhow::bail!("election refused: {why}"),
        Answer::Failed(why) => anyhow::bail!("election failed: {why}"),
        other => anyhow::bail!("the controller answered {other:?}"),
    }
}

async fn cluster_status(cli: &Cli, json: bool, namesrvs: &[String]) -> Result<()> {
    // Who to ask: the master at --admin (and its slaves), or every broker the name servers know
    // — each asked on its own, so one that is down is shown down and the others as they are.
    let mut all = Vec::new();
    // (broker set, id, protocol address, why) of those that did not answer.
    let mut down: Vec<(String, u32, String, String)> = Vec::new();
    let mut lags = std::collections::HashMap::new();
    let mut ask = Vec::new();
    if namesrvs.is_empty() {
        let first = cli.admin().await?.replicas().await.with_context(|| format!("broker at {}", cli.admin))?;
        for s in &first.slaves {
            let seen = if s.connected { 0 } else { s.last_seen_ms_ago };
            ask.push((first.broker_name.clone(), s.broker_id, s.admin_addr.clone(), s.admin_addr.clone(), seen));
        }
        all.push(first);
    } else {
        let brokers = wasmq_client::Cluster::new(namesrvs.to_vec(), &cli.ca).brokers().await.context("asking the name servers")?;
        for b in brokers {
            ask.push((b.broker_name, b.broker_id, b.addr, b.admin_addr, b.last_seen_ms_ago));
        }
    }
    for (name, id, addr, admin_addr, last_seen_ms_ago) in ask {
        let asked = async { cli.admin_at(&admin_addr).await?.replicas().await.map_err(anyhow::Error::from) };
        match asked.await {
            Ok(r) => {
                for s in &r.slaves {
                    lags.insert((r.broker_name.clone(), s.broker_id), s.lag_ms);
                }
                all.push(r);
            }
            Err(e) => {
                let seen = format!("down (last seen {:.0} s ago)", last_seen_ms_ago as f64 / 1000.0);
                down.push((name, id, addr, format!("{seen}: {e}")));
            }
        }
    }
    all.sort_by(|a, b| (&a.broker_name, a.broker_id).cmp(&(&b.broker_name, b.broker_id)));
    if json {
        let down: Vec<serde_json::Value> = down
            .iter()
            .map(|(name, id, addr, why)| serde_json::json!({"broker_name": name, "broker_id": id, "admin_addr": addr, "down": why}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"brokers": all, "down": down}))?);
        return Ok(());
    }
    println!(
        "{:<12} {:>3} {:<7} {:<22} {:>14} {:>12} {:>9} {:<10} replication",
        "broker", "id", "role", "address", "log end", "lag bytes", "lag s", "link"
    );
    for r in &all {
        let (lag_bytes, lag_s, link) = match &r.master {
            Some(m) => {
                let lag_ms = lags.get(&(r.broker_name.clone(), r.broker_id)).copied().unwrap_or(0);
                (
                    m.lag_bytes.to_string(),
                    format!("{:.1}", lag_ms as f64 / 1000.0),
                    if m.connected { "connected" } else { "down" }.to_owned(),
                )
            }
            None => ("-".into(), "-".into(), format!("{} slave(s)", r.slaves.iter().filter(|s| s.connected).count())),
        };
        println!(
            "{:<12} {:>3} {:<7} {:<22} {:>14} {:>12} {:>9} {:<10} {}",
            r.broker_name, r.broker_id, r.role, r.listen, r.log_end_offset, lag_bytes, lag_s, link, r.replication
        );
    }
    for (name, id, addr, why) in &down {
        println!("{name:<12} {id:>3} {:<7} {addr:<22} {why}", if *id == 0 { "master" } else { "slave" });
    }
    Ok(())
}

async fn group(cli: &Cli, command: &GroupCommand) -> Result<()> {
    let admin = cli.admin().await?;
    let json = cli.output == Output::Json;
    let print = |g: wasmq_client::admin_types::GroupDetail| {
        if json {
            println!("{}", serde_json::to_string_pretty(&g).unwrap_or_default());
            return;
        }
        println!("group {} ({} mode, generation {}{})", g.name, g.mode, g.generation, if g.fifo { ", FIFO" } else { "" });
        for m in &g.members {
            // A RocketMQ 5 client says what it is; it receives from every queue, message by message.
            let client = [m.protocol.as_str(), m.language.as_str(), m.version.as_str()].join(" ");
            let queues = if m.queues.is_empty() { "every queue, message by message".to_owned() } else { m.queues.join(" ") };
            println!("member {} ({}): {queues}", m.client_id, client.trim());
        }
        println!("topic\tqueue\tcommitted\tmax\tlag\tlag_ms\towner");
        for q in g.queues {
            let committed = q.committed.map_or("-".to_owned(), |c| c.to_string());
            println!(
                "{}\t{}\t{committed}\t{}\t{}\t{}\t{}",
                q.topic,
                q.queue_id,
                q.max_offset,
                q.lag,
                q.lag_ms,
                q.owner.as_deref().unwrap_or("-")
            );
        }
    };
    match command {
        GroupCommand::List => {
            let groups = admin.list_groups().await?;
            if printed_json(cli, &groups)? {
                return Ok(());
            }
            for g in groups {
                println!("{}\t{}\t{} members", g.name, g.mode, g.members);
            }
        }
        GroupCommand::Describe { name } => print(admin.describe_group(name).await?),
        GroupCommand::ResetOffset { name, topic, to } => print(admin.reset_group_offsets(name, topic, to).await?),
        GroupCommand::Set { name, fifo } => {
            let s = admin.set_group_settings(name, wasmq_client::admin_types::GroupSettings { fifo: *fifo }).await?;
            println!("group {name}: fifo {}", s.fifo);
        }
        GroupCommand::Delete { name } => {
            admin.delete_group(name).await?;
            println!("deleted group {name}");
        }
        GroupCommand::Dlq { name } => {
            let dead = admin.dead_letters(name).await?;
            if printed_json(cli, &dead)? {
                return Ok(());
            }
            println!("offset\tmessage id\torigin\treconsumes\tbody");
            for d in dead {
                println!("{}\t{}\t{}\t{}\t{}", d.queue_offset, d.message_id, d.origin_topic, d.reconsume_times, d.body_preview);
            }
        }
        GroupCommand::Resend { name, offset: Some(offset), .. } => {
            let r = admin.resend_dead_letter(name, *offset).await?;
            println!("resent to {} queue {} at offset {}", r.topic, r.queue_id, r.queue_offset);
        }
        GroupCommand::Resend { name, offset: None, .. } => {
            let r = admin.resend_all_dead_letters(name).await?;
            println!("resent {} dead letters", r.resent);
            for e in &r.errors {
                eprintln!("not resent: {e}");
            }
            if !r.errors.is_empty() {
                bail!("{} dead letters could not be resent", r.errors.len());
            }
        }
    }
    Ok(())
}

/// ", FIFO messages only" for a topic with a message type.
fn type_text(t: TopicMessageType) -> String {
    if t == TopicMessageType::Mixed { String::new() } else { format!(", {t} messages only") }
}

/// ", retention 3600000 ms" for a topic with its own retention.
fn retention_text(retention_ms: Option<u64>) -> String {
    retention_ms.map(|r| format!(", retention {r} ms")).unwrap_or_default()
}

async fn topic(cli: &Cli, command: &TopicCommand) -> Result<()> {
    let admin = cli.admin().await?;
    match command {
        TopicCommand::Create { name, queues, retention_ms, message_type } => {
            let create = CreateTopic { name: name.clone(), queues: *queues, retention_ms: *retention_ms, message_type: *message_type };
            let t = admin.create_topic_with(&create).await?;
            println!("created topic {} with {} queues{}{}", t.name, t.queues, retention_text(t.retention_ms), type_text(t.message_type));
        }
        TopicCommand::Update { name, message_type } => {
            let t = admin.set_topic_message_type(name, *message_type).await?;
            println!("topic {} takes {} messages", t.name, t.message_type);
        }
        TopicCommand::List => {
            let topics = admin.list_topics().await?;
            if printed_json(cli, &topics)? {
                return Ok(());
            }
            for t in topics {
                println!("{}\t{} queues{}{}", t.name, t.queues, retention_text(t.retention_ms), type_text(t.message_type));
            }
        }
        TopicCommand::Describe { name } => {
            let t = admin.describe_topic(name).await?;
            if printed_json(cli, &t)? {
                return Ok(());
            }
            println!("topic {}{}{}", t.name, retention_text(t.retention_ms), type_text(t.message_type));
            println!("queue\tmin\tmax");
            for q in t.queues {
                println!("{}\t{}\t{}", q.queue_id, q.min_offset, q.max_offset);
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

/// How `consume --group` consumes.
struct GroupHow<'a> {
    filter: &'a str,
    from: &'a str,
    count: Option<u64>,
    answer: wasmq_client::ConsumeResult,
    max_reconsume_times: Option<u32>,
    orderly: bool,
    broadcast: bool,
}

async fn consume_group(cli: &Cli, topic: &str, group: &str, how: &GroupHow<'_>) -> Result<()> {
    let GroupHow { filter, from, count, answer, max_reconsume_times, orderly, broadcast } = *how;
    let mut options = wasmq_client::GroupOptions::new(group, topic);
    options.subscriptions = vec![(topic.to_owned(), filter.to_owned())];
    if let Some(n) = max_reconsume_times {
        options.max_reconsume_times = n;
    }
    options.orderly = orderly;
    if broadcast {
        options.mode = wasmq_client::GroupMode::Broadcasting;
    }
    options.start_from = match from {
        "earliest" => wasmq_client::StartFrom::Earliest,
        "latest" => wasmq_client::StartFrom::Latest,
        ms => {
            wasmq_client::StartFrom::Timestamp(ms.parse().with_context(|| format!("--from {ms}: earliest, latest or a timestamp in ms"))?)
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Messages handled (printed). Past `count` the rest are released, not printed nor
    // committed: the group gets them again.
    let printed = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    let handler: wasmq_client::Handler = std::sync::Arc::new(move |_t: &str, q: u32, m: &wasmq_client::PulledMessage| {
        let mut n = printed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if count.is_some_and(|c| *n >= c) {
            return wasmq_client::ConsumeResult::Release;
        }
        *n += 1;
        let key = m.message.keys.first().map_or("-", String::as_str);
        println!("{q}\t{}\t{key}\t{}", m.queue_offset, String::from_utf8_lossy(&m.message.body));
        let _ = tx.send(());
        answer
    });
    let member = wasmq_client::GroupConsumer::start(cli.connect().await?, options, handler).await?;
    let mut seen = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            got = rx.recv() => {
                if got.is_none() {
                    break;
                }
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
            () = &mut stop => break,
        }
    }
    // Leaves the group, so its queues move to the other members at once.
    member.shutdown().await;
    Ok(())
}

/// `consume --follow`: the pause before pulling again after a failed pull (the connection
/// reconnects meanwhile).
const FOLLOW_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Ctrl-C or SIGTERM (systemd, `timeout`, Kubernetes): consumers stop and leave their group.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn consume(cli: &Cli, topic: &str, from: &str, queue: Option<u32>, count: Option<u64>, follow: bool) -> Result<()> {
    let conn = cli.connect().await?;
    let queues = Producer::new(conn.clone(), "wasmq-cli").queues(topic).await?;
    let consumer = PullConsumer::new(conn);
    let ids: Vec<u32> = match queue {
        Some(q) if q < queues => vec![q],
        Some(q) => bail!("topic {topic} has {queues} queues; there is no queue {q}"),
        None => (0..queues).collect(),
    };
    let mut offsets = Vec::new();
    for &q in &ids {
        let probe = consumer.pull(topic, q, 0, 1, Duration::ZERO).await?;
        offsets.push(match from {
            "earliest" => probe.min_offset,
            "latest" => probe.max_offset,
            n => n.parse().with_context(|| format!("--from {n}: earliest, latest or a number"))?,
        });
    }
    let mut printed = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let mut got_any = false;
        for (i, &q) in ids.iter().enumerate() {
            let wait = if follow && ids.len() == 1 { Duration::from_secs(5) } else { Duration::ZERO };
            let pulled = tokio::select! {
                p = consumer.pull(topic, q, offsets[i], 256, wait) => p,
                () = &mut stop => return Ok(()),
            };
            let p = match pulled {
                Ok(p) => p,
                // Following, a lost broker is waited for (the connection reconnects).
                Err(e) if follow && e.is_retryable() => {
                    eprintln!("pull failed ({e}); retrying");
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOW_RETRY_PAUSE) => {}
                        () = &mut stop => return Ok(()),
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            offsets[i] = p.next_offset.max(offsets[i]);
            for m in p.messages {
                got_any = true;
                let key = m.message.keys.first().map_or("-", String::as_str);
                println!("{q}\t{}\t{key}\t{}", m.queue_offset, String::from_utf8_lossy(&m.message.body));
                printed += 1;
                if count.is_some_and(|c| printed >= c) {
                    return Ok(());
                }
            }
        }
        if !got_any {
            if !follow {
                return Ok(());
            }
            if ids.len() > 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
