//! The producer: queue choice, retries, unique ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wasmq_protocol::{ErrorCode, Message, Request, Response, RouteRequest, SendRequest, SendStatus};

use crate::{ClientError, Connection};

/// Tries per send after the first, as RocketMQ's `retryTimesWhenSendFailed`.
pub const RETRIES_DEFAULT: u32 = 2;
/// How long a topic's queue count is cached before it is asked again.
const ROUTE_TTL: Duration = Duration::from_secs(30);

/// A message to send. `unique_id` is generated if empty.
#[derive(Debug, Clone, Default)]
pub struct OutgoingMessage {
    pub body: Bytes,
    pub tags: Option<String>,
    pub keys: Vec<String>,
    /// Messages with the same ordering key go to the same queue, in send order.
    pub ordering_key: Option<String>,
    pub properties: Vec<(String, String)>,
    pub delivery_ms: u64,
    pub unique_id: String,
}

impl OutgoingMessage {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self { body: body.into(), ..Self::default() }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.tags = Some(tags.into());
        self
    }

    pub fn with_ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Delivers the message no earlier than `delay` from now (a scheduled message).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delivery_ms = now_ms() + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2);
        self
    }

    /// Delivers the message no earlier than `at_ms` (ms since the epoch).
    pub fn with_delivery_at(mut self, at_ms: u64) -> Self {
        self.delivery_ms = at_ms;
        self
    }

    /// Adds a user property (plugins and consumers see it).
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }
}

/// Where a sent message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    pub message_id: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub log_offset: u64,
    /// `Ok`, or (synchronous replication) stored on the master but not known on enough slaves:
    /// `FlushSlaveTimeout`, `SlaveNotAvailable`. Not retried: the message is stored.
    pub status: SendStatus,
}

/// Strings travel with 16-bit lengths; longer ones are refused here rather than cut on the wire.
fn check_lengths(m: &OutgoingMessage) -> Result<(), ClientError> {
    let max = usize::from(u16::MAX);
    let too_long = [m.tags.as_deref(), m.ordering_key.as_deref(), Some(m.unique_id.as_str())]
        .into_iter()
        .flatten()
        .chain(m.keys.iter().map(String::as_str))
        .chain(m.properties.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
        .find(|s| s.len() > max);
    match too_long {
        Some(s) => Err(ClientError::Invalid(format!("a key, tag, id or property of {} bytes is longer than {max}", s.len()))),
        None => Ok(()),
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) use wasmq_net::random_hex;

/// Sends messages. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

#[derive(Debug)]
struct ProducerInner {
    conn: Connection,
    group: String,
    retries: u32,
    id_prefix: String,
    counter: AtomicU64,
    round_robin: AtomicU32,
    routes: Mutex<HashMap<String, (u32, std::time::Instant)>>,
}

/// The queue for an ordering key: FNV-1a of the key, modulo the queue count (stable across
/// clients and versions).
pub fn queue_for_key(key: &str, queues: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(queues.max(1))) as u32
}

impl Producer {
    pub fn new(conn: Connection, group: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(ProducerInner {
                conn,
                group: group.into(),
                retries: RETRIES_DEFAULT,
                id_prefix: random_hex(6),
                counter: AtomicU64::new(0),
                round_robin: AtomicU32::new(rand::random::<u32>() % 1024),
                routes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sets the retries after a failed send (default 2).
    pub fn with_retries(self, retries: u32) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|a| ProducerInner {
            conn: a.conn.clone(),
            group: a.group.clone(),
            retries: a.retries,
            id_prefix: random_hex(6),
            counter: AtomicU64::new(0),
            round_robin: AtomicU32::new(0),
            routes: Mutex::new(HashMap::new()),
        });
        Self { inner: Arc::new(ProducerInner { retries, ..inner }) }
    }

    /// The producer group.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    pub fn connection(&self) -> &Connection {
        &self.inner.conn
    }

    /// A new unique message id: producer prefix, milliseconds, counter (32 hex characters).
    pub fn new_message_id(&self) -> String {
        self.message_id(now_ms())
    }

    fn message_id(&self, ms: u64) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(32);
        id.push_str(&self.inner.id_prefix);
        for v in [ms as u32, n as u32] {
            for shift in (0..8).rev() {
                id.push(HEX[((v >> (shift * 4)) & 0xF) as usize] as char);
            }
        }
        id
    }

    /// The number of queues of `topic` (cached).
    ///
    /// # Errors
    /// Unknown topic or a connection failure.
    pub async fn queues(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some((n, at)) = self.inner.routes.lock().unwrap_or_else(|p| p.into_inner()).get(topic)
            && at.elapsed() < ROUTE_TTL
        {
            return Ok(*n);
        }
        let Response::Route(r) = self.inner.conn.call(&Request::Route(RouteRequest { topic: topic.to_owned() })).await? else {
            return Err(ClientError::Malformed("Route answered with another response".into()));
        };
        self.inner.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(topic.to_owned(), (r.queues, std::time::Instant::now()));
        Ok(r.queues)
    }

    fn forget_route(&self, topic: &str) {
        self.inner.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(topic);
    }

    fn to_wire(&self, m: OutgoingMessage, born_ms: u64) -> Message {
        Message {
            unique_id: if m.unique_id.is_empty() { self.message_id(born_ms) } else { m.unique_id },
            tags: m.tags,
            keys: m.keys,
            ordering_key: m.ordering_key,
            delivery_ms: m.delivery_ms,
            born_ms,
            flags: 0,
            properties: m.properties,
            body: m.body,
        }
    }

    /// Sends one message and waits for the broker's answer (sync send).
    ///
    /// # Errors
    /// After the retries, the last error.
    pub async fn send(&self, topic: &str, message: OutgoingMessage) -> Result<SendReceipt, ClientError> {
        Ok(self.send_batch(topic, vec![message]).await?.remove(0))
    }

    /// Sends a batch to one queue (chosen by the first message's ordering key, else round
    /// robin); all or none are stored. Retries on another queue when the failure allows it
    /// (keyed batches retry on their own queue, to keep order).
    ///
    /// # Errors
    /// After the retries, the last error.
    pub async fn send_batch(&self, topic: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<SendReceipt>, ClientError> {
        self.send_batch_as(topic, messages, None).await
    }

    /// [`Producer::send_batch`]; `transaction: Some(check_after_ms)` sends half messages.
    pub(crate) async fn send_batch_as(
        &self,
        topic: &str,
        messages: Vec<OutgoingMessage>,
        transaction: Option<u32>,
    ) -> Result<Vec<SendReceipt>, ClientError> {
        if messages.is_empty() {
            return Err(ClientError::Invalid("empty batch".into()));
        }
        for m in &messages {
            check_lengths(m)?;
        }
        let key = messages[0].ordering_key.clone();
        let born_ms = now_ms();
        let wire: Vec<Message> = messages.into_iter().map(|m| self.to_wire(m, born_ms)).collect();
        let mut req = Request::Send(SendRequest {
            topic: topic.to_owned(),
            queue_id: 0,
            producer_group: self.inner.group.clone(),
            messages: wire,
            transactional: transaction.is_some(),
            check_after_ms: transaction.unwrap_or(0),
        });
        let mut last = None;
        for attempt in 0..=self.inner.retries {
            let queues = match self.queues(topic).await {
                Ok(q) => q,
                Err(e) if e.is_retryable() && attempt < self.inner.retries => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let queue_id = match &key {
                Some(k) => queue_for_key(k, queues),
                None => self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % queues,
            };
            if let Request::Send(s) = &mut req {
                s.queue_id = queue_id;
            }
            match self.inner.conn.call(&req).await {
                Ok(Response::Send(r)) => return Ok(receipts(req, r)),
                Ok(_) => return Err(ClientError::Malformed("Send answered with another response".into())),
                Err(e) => {
                    if matches!(e.code(), Some(ErrorCode::InvalidQueue | ErrorCode::UnknownTopic)) {
                        self.forget_route(topic);
                    }
                    // A flush timeout means stored-but-not-known-durable: sending again would
                    // duplicate, so it is reported, as RocketMQ's FLUSH_DISK_TIMEOUT is.
                    let retry = e.is_retryable() && e.code() != Some(ErrorCode::FlushTimeout);
                    if !retry {
                        return Err(e);
                    }
                    tracing::debug!(attempt, error = %e, "send failed; retrying");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Closed("no attempt made".into())))
    }

    /// Sends a batch to one given queue, once (no retry, no route lookup): for callers that
    /// choose queues and brokers themselves, as the cluster producer does.
    ///
    /// # Errors
    /// The broker's answer or a connection failure.
    pub async fn send_batch_to(&self, topic: &str, queue_id: u32, messages: Vec<OutgoingMessage>) -> Result<Vec<SendReceipt>, ClientError> {
        if messages.is_empty() {
            return Err(ClientError::Invalid("empty batch".into()));
        }
        for m in &messages {
            check_lengths(m)?;
        }
        let born_ms = now_ms();
        let wire: Vec<Message> = messages.into_iter().map(|m| self.to_wire(m, born_ms)).collect();
        let req = Request::Send(SendRequest {
            topic: topic.to_owned(),
            queue_id,
            producer_group: self.inner.group.clone(),
            messages: wire,
            transactional: false,
            check_after_ms: 0,
        });
        match self.inner.conn.call(&req).await? {
            Response::Send(r) => Ok(receipts(req, r)),
            _ => Err(ClientError::Malformed("Send answered with another response".into())),
        }
    }

    /// Sends in the background; the returned handle yields the receipt (async send).
    pub fn send_async(&self, topic: &str, message: OutgoingMessage) -> tokio::task::JoinHandle<Result<SendReceipt, ClientError>> {
        let (p, t) = (self.clone(), topic.to_owned());
        tokio::spawn(async move { p.send(&t, message).await })
    }

    /// Sends without waiting for, or getting, an answer (one-way): fastest, and a lost message
    /// is never known.
    ///
    /// # Errors
    /// Unknown topic (from the route lookup) or a closed connection.
    pub async fn send_one_way(&self, topic: &str, message: OutgoingMessage) -> Result<(), ClientError> {
        check_lengths(&message)?;
        let queues = self.queues(topic).await?;
        let queue_id = match &message.ordering_key {
            Some(k) => queue_for_key(k, queues),
            None => self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % queues,
        };
        let m = self.to_wire(message, now_ms());
        self.inner
            .conn
            .send_one_way(Request::Send(SendRequest {
                topic: topic.to_owned(),
                queue_id,
                producer_group: self.inner.group.clone(),
                messages: vec![m],
                transactional: false,
                check_after_ms: 0,
            }))
            .await
    }
}

/// The receipts of an answered send: message ids taken from the request (it is not sent again).
fn receipts(req: Request, r: wasmq_protocol::SendResponse) -> Vec<SendReceipt> {
    let Request::Send(sent) = req else { unreachable!("receipts are made for Send requests") };
    sent.messages
        .into_iter()
        .zip(r.results)
        .map(|(m, s)| SendReceipt {
            message_id: m.unique_id,
            queue_id: s.queue_id,
            queue_offset: s.queue_offset,
            log_offset: s.log_offset,
            status: r.status,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_hash_is_stable() {
        assert_eq!(super::queue_for_key("order-1", 8), super::queue_for_key("order-1", 8));
        let spread: std::collections::HashSet<u32> = (0..100).map(|i| super::queue_for_key(&format!("k{i}"), 8)).collect();
        assert_eq!(spread.len(), 8, "keys spread over every queue");
    }
}
