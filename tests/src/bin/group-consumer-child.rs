//! Child process for the consumer-group tests: one member of a group (clustering, or orderly)
//! that prints `MSG <queue> <queue offset> <message id> <unix time ns> <body>` for every message
//! it handles, until it is killed (or, as a bound, after 120 s). The time lets the test order
//! its handlings among those of members in other processes.
//!
//! Usage: `group-consumer-child <broker addr> <ca.pem> <group> <topic> [orderly]`

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use wasmq_client::{Connection, ConnectionOptions, ConsumeResult, GroupConsumer, GroupOptions, PulledMessage};

const RUN_TIME_MAX: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, ca, group, topic, orderly) = match args.as_slice() {
        [_, addr, ca, group, topic] => (addr, ca, group, topic, false),
        [_, addr, ca, group, topic, mode] if mode == "orderly" => (addr, ca, group, topic, true),
        _ => {
            eprintln!("usage: group-consumer-child <broker addr> <ca.pem> <group> <topic> [orderly]");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async {
        let conn = Connection::connect(ConnectionOptions::new(addr, ca)).await.expect("connect");
        let mut options = GroupOptions::new(group, topic);
        options.heartbeat_interval = Duration::from_millis(300);
        options.pull_wait = Duration::from_millis(500);
        options.batch = if orderly { 32 } else { 256 };
        options.orderly = orderly;
        let handler: wasmq_client::Handler = Arc::new(|_topic: &str, queue: u32, m: &PulledMessage| {
            let mut out = std::io::stdout().lock();
            let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
            let body = String::from_utf8_lossy(&m.message.body);
            let _ = writeln!(out, "MSG {queue} {} {} {at} {body}", m.queue_offset, m.message.unique_id);
            let _ = out.flush();
            ConsumeResult::Success
        });
        let _member = GroupConsumer::start(conn, options, handler).await.expect("join group");
        println!("JOINED");
        std::io::stdout().flush().expect("stdout");
        tokio::time::sleep(RUN_TIME_MAX).await;
    });
}
