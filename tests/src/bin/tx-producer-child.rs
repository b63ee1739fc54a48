//! Child process for the transaction tests: a transactional producer of a group that sends `n`
//! half messages (bodies `tx-<i>`), leaves every one undecided (its local transaction says
//! unknown), prints `HALF <log offset> <message id> <body>` for each and then `SENT`, and waits
//! to be killed (or, as a bound, 120 s). Its checker answers unknown.
//!
//! Usage: `tx-producer-child <broker addr> <ca.pem> <group> <topic> <n>`

use std::io::Write;
use std::time::Duration;

use wasmq_client::{Connection, ConnectionOptions, OutgoingMessage, TransactionProducer, TxDecision};

const RUN_TIME_MAX: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, ca, group, topic, n] = args.as_slice() else {
        eprintln!("usage: tx-producer-child <broker addr> <ca.pem> <group> <topic> <n>");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("n");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async {
        let conn = Connection::connect(ConnectionOptions::new(addr, ca)).await.expect("connect");
        let producer = TransactionProducer::start(conn, group.as_str(), |_| TxDecision::Unknown).await.expect("start");
        for i in 0..n {
            let t =
                producer.send(topic, OutgoingMessage::new(format!("tx-{i}").into_bytes()), |_| TxDecision::Unknown).await.expect("half");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "HALF {} {} tx-{i}", t.receipt.log_offset, t.receipt.message_id);
        }
        println!("SENT");
        std::io::stdout().flush().expect("stdout");
        tokio::time::sleep(RUN_TIME_MAX).await;
    });
}
