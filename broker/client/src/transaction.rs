//! The transactional producer: a half message, the application's local transaction, then
//! commit or rollback; and the checker the broker calls back when no decision arrived.

use std::sync::Arc;

use wasmq_protocol::{
    CheckTransactionRequest, EndTransactionRequest, EndTransactionResponse, HeartbeatRequest, Message, Request, Response,
};
pub use wasmq_protocol::{TxDecision, TxState};

use crate::{ClientError, Connection, OutgoingMessage, Producer, SendReceipt};

/// A broker asking how a transaction ended: the half message as it was sent.
#[derive(Debug, Clone)]
pub struct TransactionCheck {
    pub topic: String,
    pub queue_id: u32,
    /// The transaction's id on the broker (the half message's log offset).
    pub log_offset: u64,
    /// Checks sent before this one.
    pub checks: u32,
    pub message: Message,
}

/// The application's answer to a check: commit, rollback, or unknown (asked again later, up
/// to the broker's maximum).
pub type Checker = dyn Fn(&TransactionCheck) -> TxDecision + Send + Sync;

/// A sent transaction.
#[derive(Debug)]
pub struct Transaction {
    /// The half message: `log_offset` is the transaction's id.
    pub receipt: SendReceipt,
    /// What the local transaction decided.
    pub decision: TxDecision,
    /// The broker's answer to the end (`Err`: it did not arrive; the broker will check back).
    pub ended: Result<EndTransactionResponse, ClientError>,
}

/// Sends transactional messages for a producer group and answers the broker's checks for it.
/// Any running instance of the group may be asked about any of the group's transactions.
#[derive(Debug)]
pub struct TransactionProducer {
    producer: Producer,
    checks: tokio::task::JoinHandle<()>,
    check_after_ms: u32,
}

impl Drop for TransactionProducer {
    fn drop(&mut self) {
        self.checks.abort();
    }
}

impl TransactionProducer {
    /// Registers with the broker as a member of `group` and starts answering its checks with
    /// `checker` (run on a blocking thread).
    ///
    /// # Errors
    /// An invalid group name or a connection failure.
    pub async fn start(
        conn: Connection,
        group: impl Into<String>,
        checker: impl Fn(&TransactionCheck) -> TxDecision + Send + Sync + 'static,
    ) -> Result<Self, ClientError> {
        let group = group.into();
        let requests = conn.broker_requests();
        let register = Request::Heartbeat(HeartbeatRequest {
            client_id: conn.options().client_id.clone(),
            producer_groups: vec![group.clone()],
            consumer_groups: Vec::new(),
        });
        conn.call(&register).await?;
        // A restarted broker knows the group's producers by the sockets they registered on.
        conn.on_reconnect(register);
        let checks = tokio::spawn(answer_checks(conn.clone(), group.clone(), requests, Arc::new(checker)));
        Ok(Self { producer: Producer::new(conn, group), checks, check_after_ms: 0 })
    }

    /// Asks the broker to check this producer's transactions after `ms` without a decision
    /// (instead of the broker's check interval).
    #[must_use]
    pub fn with_check_after_ms(mut self, ms: u32) -> Self {
        self.check_after_ms = ms;
        self
    }

    /// The plain producer underneath (same group and connection).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Sends `message` as a half message, runs `local` (the local transaction) with its
    /// receipt, and ends the transaction with its decision. An `Unknown` decision, or an end
    /// that does not arrive, is settled by the broker's check-back.
    ///
    /// # Errors
    /// The half message was not stored (after the producer's retries).
    pub async fn send(
        &self,
        topic: &str,
        message: OutgoingMessage,
        local: impl FnOnce(&SendReceipt) -> TxDecision,
    ) -> Result<Transaction, ClientError> {
        let receipt = self.producer.send_batch_as(topic, vec![message], Some(self.check_after_ms)).await?.remove(0);
        let decision = local(&receipt);
        let ended = self.end(&receipt, decision).await;
        if let Err(e) = &ended {
            tracing::warn!(log_offset = receipt.log_offset, error = %e, "ending a transaction failed; the broker will check back");
        }
        Ok(Transaction { receipt, decision, ended })
    }

    /// Ends the transaction of a half message sent by this group.
    ///
    /// # Errors
    /// The broker's error answer or a connection failure.
    pub async fn end(&self, receipt: &SendReceipt, decision: TxDecision) -> Result<EndTransactionResponse, ClientError> {
        end(self.producer.connection(), self.producer.group(), receipt.log_offset, &receipt.message_id, decision, false).await
    }
}

async fn end(
    conn: &Connection,
    group: &str,
    log_offset: u64,
    unique_id: &str,
    decision: TxDecision,
    from_check: bool,
) -> Result<EndTransactionResponse, ClientError> {
    let req = Request::EndTransaction(EndTransactionRequest {
        producer_group: group.to_owned(),
        log_offset,
        unique_id: unique_id.to_owned(),
        decision,
        from_check,
    });
    match conn.call(&req).await? {
        Response::EndTransaction(r) => Ok(r),
        _ => Err(ClientError::Malformed("EndTransaction answered with another response".into())),
    }
}

async fn answer_checks(conn: Connection, group: String, mut requests: tokio::sync::mpsc::Receiver<Request>, checker: Arc<Checker>) {
    while let Some(req) = requests.recv().await {
        let Request::CheckTransaction(CheckTransactionRequest { producer_group, log_offset, checks, topic, queue_id, message }) = req
        else {
            continue;
        };
        if producer_group != group {
            continue;
        }
        let (conn, group, checker) = (conn.clone(), group.clone(), Arc::clone(&checker));
        tokio::spawn(async move {
            let unique_id = message.unique_id.clone();
            let check = TransactionCheck { topic, queue_id, log_offset, checks, message };
            let Ok(decision) = tokio::task::spawn_blocking(move || checker(&check)).await else {
                tracing::error!(log_offset, "the transaction checker panicked; the broker will ask again");
                return;
            };
            if let Err(e) = end(&conn, &group, log_offset, &unique_id, decision, true).await {
                tracing::warn!(log_offset, error = %e, "answering a transaction check failed; the broker will ask again");
            }
        });
    }
}
