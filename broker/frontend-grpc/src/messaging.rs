//! `apache.rocketmq.v2.MessagingService`: each RPC decoded into the service's terms and answered
//! by it. Business outcomes travel as the API's `Status` inside an OK gRPC response (as the
//! reference proxy answers); gRPC statuses are for what is not a RocketMQ request at all.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use wasmq_engine::{Decided, Decision, Engine, TopicConfig};
use wasmq_service::{Action, Asker, Resource, Send, Service, TransactionSend, TxOutcome};

use crate::authz;
use crate::clients::Clients;
use crate::pb::{self, Code, MessageType, messaging_service_server::MessagingService};
use crate::wire::{self, status};

/// The retry policy producers are given (as the reference proxy's): 3 attempts, backing off
/// exponentially from 10 ms to 1 s.
const PRODUCER_MAX_ATTEMPTS: i32 = 3;
const PRODUCER_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
const PRODUCER_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Messages a consumer is told to take per receive, and how long the broker holds a receive
/// open when nothing is there (the reference proxy's defaults).
const RECEIVE_BATCH_SIZE: i32 = 32;
const LONG_POLLING_TIMEOUT: Duration = Duration::from_secs(20);
/// A consumer's invisible time: at least this (shorter would redeliver before a client could
/// answer) and at most that.
pub const INVISIBLE_MIN: Duration = Duration::from_secs(1);
pub const INVISIBLE_MAX: Duration = Duration::from_secs(12 * 3600);
/// The invisible time of a receive that asks the broker to choose (`auto_renew` with none).
pub const INVISIBLE_DEFAULT: Duration = Duration::from_secs(60);
/// The longest a receive waits for messages (clients wait the long-polling time plus their
/// request timeout for the answer).
pub const LONG_POLLING_MAX: Duration = Duration::from_secs(30);
/// Commands queued for one client's Telemetry stream before the broker stops waiting for it.
const TELEMETRY_QUEUE: usize = 16;
/// The longest a route waits for the name servers before answering with this broker alone (a
/// client gives QueryRoute a few seconds; an unreachable name server takes longer to give up on).
pub const ROUTE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// The `protocol` label of this front end's metrics, and its name among a broker's registered
/// endpoints.
pub const PROTOCOL: &str = "grpc";

/// What every RPC needs.
#[derive(Debug)]
pub struct Shared {
    pub service: Arc<Service>,
    pub clients: Arc<Clients>,
    /// The largest body a producer may send (the store's message limit).
    pub max_body_size: u32,
    /// Long polls end when the broker shuts down.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The cluster's name servers: routes name every broker set's master (none: this broker
    /// alone).
    pub names: Option<Arc<wasmq_namesrv::NameServers>>,
}

/// The transaction id of a half message: its log offset.
#[must_use]
pub fn transaction_id(log_offset: u64) -> String {
    format!("{log_offset:016X}")
}

fn parse_transaction_id(id: &str) -> Option<u64> {
    (id.len() == 16).then(|| u64::from_str_radix(id, 16).ok()).flatten()
}

/// The client id a request carries (`x-mq-client-id`), and its language and version.
fn client<T>(req: &Request<T>) -> Result<(String, String, String), Status> {
    let get = |k: &str| req.metadata().get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let id = get("x-mq-client-id");
    if id.is_empty() {
        return Err(Status::invalid_argument("the request has no x-mq-client-id header"));
    }
    Ok((id, get("x-mq-language"), get("x-mq-client-version")))
}

fn resource_name(r: Option<&pb::Resource>) -> &str {
    r.map_or("", |r| r.name.as_str())
}

/// The message types a topic of type `t` accepts, as the reference proxy lists them (MIXED: all).
fn accepted_types(t: wasmq_engine::MessageType) -> Vec<i32> {
    use wasmq_engine::MessageType as T;
    let one = |m: MessageType| vec![m as i32];
    match t {
        T::Normal => one(MessageType::Normal),
        T::Fifo => one(MessageType::Fifo),
        T::Delay => one(MessageType::Delay),
        T::Transaction => one(MessageType::Transaction),
        T::Mixed => [MessageType::Normal, MessageType::Fifo, MessageType::Delay, MessageType::Transaction].map(|m| m as i32).to_vec(),
    }
}

/// One status for a request of several entries: theirs when all agree, else MULTIPLE_RESULTS.
fn overall<'a>(mut statuses: impl Iterator<Item = Option<&'a pb::Status>>) -> pb::Status {
    let first = statuses.next().flatten().cloned().unwrap_or_else(wire::ok);
    if statuses.all(|s| s.map_or(Code::Ok as i32, |s| s.code) == first.code) {
        first
    } else {
        status(Code::MultipleResults, "the entries had different results")
    }
}

/// The service behind the gRPC server.
#[derive(Debug, Clone)]
pub struct Messaging(pub Arc<Shared>);

impl Messaging {
    fn seen<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let (id, language, version) = client(req)?;
        self.0.clients.seen(&id, &language, &version).map_err(Status::resource_exhausted)?;
        Ok(id)
    }

    /// Tells the service a client is alive, with its groups: a consumer's group (from its
    /// Settings or its heartbeat), a producer's per published topic.
    fn client_alive(&self, (id, language, version): (String, String, String), consumer_group: Option<&str>) {
        let settings = self.0.clients.settings_of(&id);
        let mut consumer_groups: Vec<String> = consumer_group.filter(|g| !g.is_empty()).map(str::to_owned).into_iter().collect();
        let mut producer_groups = Vec::new();
        match settings.and_then(|s| s.pub_sub) {
            Some(pb::settings::PubSub::Subscription(sub)) => {
                if let Some(g) = sub.group.map(|g| g.name).filter(|g| !g.is_empty() && !consumer_groups.contains(g)) {
                    consumer_groups.push(g);
                }
            }
            Some(pb::settings::PubSub::Publishing(p)) => {
                producer_groups = p.topics.iter().map(|t| crate::clients::producer_group(&t.name)).collect();
            }
            None => {}
        }
        let about = wasmq_engine::ClientAbout { protocol: PROTOCOL.into(), language, version };
        if let Err(e) = self.0.service.client_heartbeat(&id, about, producer_groups, consumer_groups) {
            tracing::debug!(client_id = id, error = %e, "client heartbeat not recorded");
        }
    }

    /// Whether `who` may do each of `needs`; the status refusing it if not.
    fn allow(&self, who: &Asker, needs: &[(Action, Resource)]) -> Result<(), pb::Status> {
        needs.iter().try_for_each(|(a, r)| self.0.service.authorize(who, *a, r).map_err(|e| wire::service_error(&e)))
    }

    fn record(&self, op: &'static str, ok: bool, started: Instant) {
        self.0.service.metrics().request(PROTOCOL, op, ok, started.elapsed());
    }

    /// The Settings the broker answers a client's Settings with: the client's own, completed
    /// with the broker's policies.
    fn settings_reply(&self, mut s: pb::Settings) -> pb::Settings {
        match s.pub_sub.as_mut() {
            Some(pb::settings::PubSub::Publishing(p)) => {
                p.max_body_size = i32::try_from(self.0.max_body_size).unwrap_or(i32::MAX);
                p.validate_message_type = true;
                s.backoff_policy = Some(pb::RetryPolicy {
                    max_attempts: PRODUCER_MAX_ATTEMPTS,
                    strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
                        initial: Some(wire::proto_duration(PRODUCER_BACKOFF_INITIAL)),
                        max: Some(wire::proto_duration(PRODUCER_BACKOFF_MAX)),
                        multiplier: 2.0,
                    })),
                });
            }
            Some(pb::settings::PubSub::Subscription(sub)) => {
                sub.receive_batch_size = Some(RECEIVE_BATCH_SIZE);
                sub.long_polling_timeout = Some(wire::proto_duration(LONG_POLLING_TIMEOUT));
                // The group's setting, not the client's: FIFO is a group attribute in RocketMQ.
                let group = sub.group.as_ref().map_or("", |g| g.name.as_str());
                sub.fifo = Some(self.0.service.engine().group_settings(group).fifo);
                let (delays, max_reconsume) = self.0.service.engine().retry_policy();
                s.backoff_policy = Some(pb::RetryPolicy {
                    max_attempts: i32::try_from(max_reconsume).unwrap_or(i32::MAX).saturating_add(1),
                    strategy: Some(pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff {
                        next: delays.into_iter().map(|ms| wire::proto_duration(Duration::from_millis(ms))).collect(),
                    })),
                });
            }
            None => {}
        }
        s.metric = Some(pb::Metric { on: false, endpoints: None });
        s
    }

    /// Queue 0 of every broker set serving a topic, with the set's queue count: this broker (at
    /// the endpoints the client reached it by) and, in a cluster, each other set whose master is
    /// up, at the gRPC address it registered with the name servers. A set without a live
    /// master, or whose master serves no gRPC, is left out (its queues take no sends). When the
    /// name servers cannot answer within [`ROUTE_LOOKUP_TIMEOUT`], or do not know the topic yet
    /// (they learn it at the next registration), this broker alone.
    async fn cluster_queues(
        &self,
        topic: Option<&pb::Resource>,
        endpoints: Option<pb::Endpoints>,
    ) -> Result<Vec<(u32, pb::MessageQueue)>, pb::Status> {
        let endpoints = endpoints.ok_or_else(|| status(Code::IllegalAccessPoint, "the request names no endpoints"))?;
        let local = self.queues_of(topic, Some(endpoints));
        let Some(names) = &self.0.names else { return local.map(|(c, q)| vec![(c.queues, q)]) };
        let name = resource_name(topic);
        let sets = match tokio::time::timeout(ROUTE_LOOKUP_TIMEOUT, names.route(name)).await {
            Ok(Ok(sets)) => sets,
            Ok(Err(e)) => {
                if e.code() != Some(wasmq_protocol::ErrorCode::UnknownTopic) {
                    tracing::debug!(topic = name, error = %e, "name servers unreachable: routing to this broker alone");
                }
                return local.map(|(c, q)| vec![(c.queues, q)]);
            }
            Err(_) => {
                tracing::debug!(topic = name, "no name server answered in time: routing to this broker alone");
                return local.map(|(c, q)| vec![(c.queues, q)]);
            }
        };
        let engine = self.0.service.engine();
        let me = engine.broker_name();
        let master_here = !self.0.service.replication().is_slave();
        // The topic's message types as this broker knows them; a set's own broker checks each
        // send against its own.
        let accepted =
            local.as_ref().map_or_else(|_| accepted_types(wasmq_engine::MessageType::Mixed), |(_, q)| q.accept_message_types.clone());
        let mut out = Vec::with_capacity(sets.len() + 1);
        for set in sets {
            if set.broker_name == me && master_here {
                continue; // answered from the local state below
            }
            let Some(addr) = wasmq_protocol::Endpoint::find(&set.master_endpoints, PROTOCOL) else { continue };
            let Some(at) = wire::endpoints(addr) else {
                tracing::warn!(broker = set.broker_name, addr, "a broker registered a gRPC address that is not host:port");
                continue;
            };
            let queue = pb::MessageQueue {
                topic: Some(pb::Resource { resource_namespace: String::new(), name: name.to_owned() }),
                id: 0,
                permission: pb::Permission::ReadWrite as i32,
                broker: Some(pb::Broker { name: set.broker_name, id: 0, endpoints: Some(at) }),
                accept_message_types: accepted.clone(),
            };
            out.push((set.queues, queue));
        }
        if master_here && let Ok((config, queue)) = &local {
            out.push((config.queues, queue.clone()));
        }
        if out.is_empty() {
            return local.map(|(c, q)| vec![(c.queues, q)]);
        }
        out.sort_by(|a, b| a.1.broker.as_ref().map(|b| &b.name).cmp(&b.1.broker.as_ref().map(|b| &b.name)));
        Ok(out)
    }

    /// A topic's configuration and its queue 0 as routes show it — READ_WRITE, on this broker,
    /// at the endpoints the client reached it by (as the reference proxy answers) — or the
    /// status refusing the request.
    fn queues_of(
        &self,
        topic: Option<&pb::Resource>,
        endpoints: Option<pb::Endpoints>,
    ) -> Result<(TopicConfig, pb::MessageQueue), pb::Status> {
        let name = resource_name(topic);
        let engine = self.0.service.engine();
        let endpoints = endpoints.ok_or_else(|| status(Code::IllegalAccessPoint, "the request names no endpoints"))?;
        let config = engine.topic(name).ok_or_else(|| wire::topic_not_found(name))?;
        let queue = pb::MessageQueue {
            topic: Some(pb::Resource { resource_namespace: String::new(), name: name.to_owned() }),
            id: 0,
            permission: pb::Permission::ReadWrite as i32,
            broker: Some(pb::Broker { name: engine.broker_name().to_owned(), id: 0, endpoints: Some(endpoints) }),
            accept_message_types: accepted_types(config.message_type),
        };
        Ok((config, queue))
    }

    /// A ReceiveMessage request in the service's terms, or the status refusing it.
    fn receive_request(&self, req: pb::ReceiveMessageRequest, client_id: String) -> Result<wasmq_service::Receive, pb::Status> {
        let group = resource_name(req.group.as_ref()).to_owned();
        if let Err(e) = wasmq_engine::validate_group(&group) {
            return Err(status(Code::IllegalConsumerGroup, format!("consumer group {group:?}: {e}")));
        }
        let topic = req.message_queue.as_ref().map(|q| resource_name(q.topic.as_ref()).to_owned()).unwrap_or_default();
        let filter = match req.filter_expression {
            None => None,
            Some(f) if f.r#type == pb::FilterType::Sql as i32 => {
                return Err(status(Code::IllegalFilterExpression, "SQL92 filters are not supported; use a TAG expression"));
            }
            Some(f) => Some(f.expression).filter(|e| !e.is_empty() && e != "*"),
        };
        let asked = req.invisible_duration.as_ref().map(wire::duration).unwrap_or_default();
        let invisible = if asked.is_zero() && req.auto_renew { INVISIBLE_DEFAULT } else { asked };
        if !(INVISIBLE_MIN..=INVISIBLE_MAX).contains(&invisible) {
            return Err(status(
                Code::IllegalInvisibleTime,
                format!("invisible duration {invisible:?}: between {INVISIBLE_MIN:?} and {INVISIBLE_MAX:?}"),
            ));
        }
        let wait = req.long_polling_timeout.as_ref().map(wire::duration).unwrap_or(LONG_POLLING_TIMEOUT).min(LONG_POLLING_MAX);
        let max_messages = usize::try_from(req.batch_size).unwrap_or(0).clamp(1, wasmq_service::RECEIVE_BATCH_MAX);
        let fifo = self.0.service.engine().group_settings(&group).fifo;
        let renew_for = req.auto_renew.then_some(client_id);
        Ok(wasmq_service::Receive { group, topics: vec![(topic, filter)], max_messages, invisible, wait, fifo, renew_for })
    }

    /// One message of a SendMessage request, stored.
    async fn send_one(&self, m: pb::Message) -> pb::SendResultEntry {
        let (topic, incoming) = match wire::incoming(m) {
            Ok(x) => x,
            Err(status) => return pb::SendResultEntry { status: Some(status), ..Default::default() },
        };
        let message_id = incoming.message.properties.unique_id.clone().unwrap_or_default();
        let engine = self.0.service.engine();
        let Some(config) = engine.topic(&topic) else {
            return pb::SendResultEntry { status: Some(wire::topic_not_found(&topic)), message_id, ..Default::default() };
        };
        // A FIFO message's group picks its queue on the broker (as the reference proxy does), by
        // the same hash as native ordering keys: one group, one queue, whichever client sent it.
        // Other messages go round robin: the queue id in a message is ignored, as the reference
        // proxy ignores it (Python and Node clients leave it 0).
        let queue = incoming.group.as_ref().map(|g| (wasmq_engine::key_hash(g.as_bytes()) % u64::from(config.queues)) as u32);
        let is_tx = incoming.kind == MessageType::Transaction;
        let recall_handle = if incoming.kind == MessageType::Delay { Engine::recall_handle(&incoming.message) } else { None };
        let send = Send {
            topic: topic.clone(),
            queue,
            messages: vec![incoming.message],
            transaction: is_tx.then(|| TransactionSend { producer_group: crate::clients::producer_group(&topic), check_after_ms: None }),
        };
        match self.0.service.send_gathered(send).await {
            Ok((sent, guarantee)) => {
                let m = &sent.appended.messages[0];
                pb::SendResultEntry {
                    status: Some(wire::guarantee(guarantee)),
                    message_id,
                    transaction_id: if is_tx { transaction_id(m.log_offset) } else { String::new() },
                    offset: i64::try_from(m.queue_offset).unwrap_or(i64::MAX),
                    recall_handle: recall_handle.unwrap_or_default(),
                }
            }
            Err(e) => pb::SendResultEntry { status: Some(wire::service_error(&e)), message_id, ..Default::default() },
        }
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + std::marker::Send>>;

#[tonic::async_trait]
impl MessagingService for Messaging {
    async fn query_route(&self, req: Request<pb::QueryRouteRequest>) -> Result<Response<pb::QueryRouteResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let who = authz::who(&req);
        let req = req.into_inner();
        if let Err(s) = self.allow(&who, &[authz::topic(Action::Describe, req.topic.as_ref())]) {
            self.record("query_route", false, started);
            return Ok(Response::new(pb::QueryRouteResponse { status: Some(s), message_queues: vec![] }));
        }
        let reply = match self.cluster_queues(req.topic.as_ref(), req.endpoints).await {
            Ok(sets) => pb::QueryRouteResponse {
                status: Some(wire::ok()),
                message_queues: sets
                    .into_iter()
                    .flat_map(|(queues, queue)| (0..queues).map(move |q| pb::MessageQueue { id: q as i32, ..queue.clone() }))
                    .collect(),
            },
            Err(s) => pb::QueryRouteResponse { status: Some(s), message_queues: vec![] },
        };
        self.record("query_route", reply.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32), started);
        Ok(Response::new(reply))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let consumer = req.get_ref().group.as_ref().filter(|g| !g.name.is_empty());
        if let Some(g) = consumer
            && let Err(s) = self.allow(&authz::who(&req), &[authz::group(Some(g))])
        {
            self.record("heartbeat", false, started);
            return Ok(Response::new(pb::HeartbeatResponse { status: Some(s) }));
        }
        self.client_alive(client(&req)?, req.get_ref().group.as_ref().map(|g| g.name.as_str()));
        self.record("heartbeat", true, started);
        Ok(Response::new(pb::HeartbeatResponse { status: Some(wire::ok()) }))
    }

    async fn send_message(&self, req: Request<pb::SendMessageRequest>) -> Result<Response<pb::SendMessageResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let who = authz::who(&req);
        let messages = req.into_inner().messages;
        if messages.is_empty() {
            self.record("send_message", false, started);
            return Ok(Response::new(pb::SendMessageResponse { status: Some(status(Code::BadRequest, "no messages")), entries: vec![] }));
        }
        let mut entries = Vec::with_capacity(messages.len());
        for m in messages {
            match self.allow(&who, &[authz::topic(Action::Produce, m.topic.as_ref())]) {
                Ok(()) => entries.push(self.send_one(m).await),
                Err(s) => entries.push(pb::SendResultEntry {
                    status: Some(s),
                    message_id: m.system_properties.map(|p| p.message_id).unwrap_or_default(),
                    ..Default::default()
                }),
            }
        }
        let code = |e: &pb::SendResultEntry| e.status.as_ref().map_or(Code::Ok as i32, |s| s.code);
        let first = entries[0].status.clone();
        let status = if entries.iter().all(|e| code(e) == code(&entries[0])) {
            first.unwrap_or_else(wire::ok)
        } else {
            status(Code::MultipleResults, "the messages had different results")
        };
        self.record("send_message", status.code == Code::Ok as i32, started);
        Ok(Response::new(pb::SendMessageResponse { status: Some(status), entries }))
    }

    async fn query_assignment(&self, req: Request<pb::QueryAssignmentRequest>) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let who = authz::who(&req);
        let req = req.into_inner();
        if let Err(s) = self.allow(&who, &[authz::group(req.group.as_ref()), authz::topic(Action::Consume, req.topic.as_ref())]) {
            self.record("query_assignment", false, started);
            return Ok(Response::new(pb::QueryAssignmentResponse { status: Some(s), assignments: vec![] }));
        }
        // Every push consumer of a group receives from the whole topic (messages are handed out
        // one by one): one assignment per broker set.
        let reply = match self.cluster_queues(req.topic.as_ref(), req.endpoints).await {
            Ok(sets) => pb::QueryAssignmentResponse {
                status: Some(wire::ok()),
                assignments: sets.into_iter().map(|(_, queue)| pb::Assignment { message_queue: Some(queue) }).collect(),
            },
            Err(s) => pb::QueryAssignmentResponse { status: Some(s), assignments: vec![] },
        };
        self.record("query_assignment", reply.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32), started);
        Ok(Response::new(reply))
    }

    type ReceiveMessageStream = Streamed<pb::ReceiveMessageResponse>;

    async fn receive_message(&self, req: Request<pb::ReceiveMessageRequest>) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let (client_id, _, _) = client(&req)?;
        let who = authz::who(&req);
        let req = req.into_inner();
        let allowed = self.allow(
            &who,
            &[authz::group(req.group.as_ref()), authz::topic(Action::Consume, req.message_queue.as_ref().and_then(|q| q.topic.as_ref()))],
        );
        let answer = |items: Vec<pb::receive_message_response::Content>| -> Result<Response<Self::ReceiveMessageStream>, Status> {
            let items: Vec<Result<pb::ReceiveMessageResponse, Status>> =
                items.into_iter().map(|c| Ok(pb::ReceiveMessageResponse { content: Some(c) })).collect();
            Ok(Response::new(Box::pin(tokio_stream::iter(items))))
        };
        use pb::receive_message_response::Content;
        let refuse = |s: pb::Status| vec![Content::Status(s), Content::DeliveryTimestamp(wire::timestamp(wire::now_ms()))];
        let r = match allowed.and_then(|()| self.receive_request(req, client_id)) {
            Ok(r) => r,
            Err(s) => {
                self.record("receive_message", false, started);
                return answer(refuse(s));
            }
        };
        let received = self.0.service.receive(&r, &self.0.shutdown).await;
        let store_host = self.0.service.engine().broker_name().to_owned();
        let items = match received {
            Ok(msgs) if msgs.is_empty() => refuse(status(Code::MessageNotFound, "no new message")),
            Ok(msgs) => {
                let mut items = vec![Content::Status(wire::ok())];
                items.extend(msgs.iter().map(|m| {
                    let mut out = wire::outgoing(
                        &m.message,
                        &store_host,
                        Some(m.receipt.handle()),
                        Some(i32::try_from(m.attempt).unwrap_or(i32::MAX)),
                    );
                    if let Some(sp) = out.system_properties.as_mut() {
                        sp.invisible_duration = Some(wire::proto_duration(r.invisible));
                    }
                    Content::Message(out)
                }));
                items.push(Content::DeliveryTimestamp(wire::timestamp(wire::now_ms())));
                items
            }
            Err(e) => refuse(wire::service_error(&e)),
        };
        self.record(
            "receive_message",
            matches!(items.first(), Some(Content::Status(s)) if s.code == Code::Ok as i32 || s.code == Code::MessageNotFound as i32),
            started,
        );
        answer(items)
    }

    async fn ack_message(&self, req: Request<pb::AckMessageRequest>) -> Result<Response<pb::AckMessageResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let who = authz::who(&req);
        let req = req.into_inner();
        let group = resource_name(req.group.as_ref()).to_owned();
        let results = match self.allow(&who, &[authz::group(req.group.as_ref()), authz::topic(Action::Consume, req.topic.as_ref())]) {
            Ok(()) => {
                let handles: Vec<&str> = req.entries.iter().map(|e| e.receipt_handle.as_str()).collect();
                self.0.service.ack(&group, &handles).await
            }
            Err(s) => req.entries.iter().map(|_| Err(wasmq_service::ServiceError::Denied(s.message.clone()))).collect(),
        };
        let entries: Vec<pb::AckMessageResultEntry> = req
            .entries
            .into_iter()
            .zip(results)
            .map(|(e, r)| {
                let status = match r {
                    Ok(()) => wire::ok(),
                    Err(err) => wire::service_error(&err),
                };
                pb::AckMessageResultEntry { message_id: e.message_id, receipt_handle: e.receipt_handle, status: Some(status) }
            })
            .collect();
        let status = overall(entries.iter().map(|e| e.status.as_ref()));
        self.record("ack_message", status.code == Code::Ok as i32, started);
        Ok(Response::new(pb::AckMessageResponse { status: Some(status), entries }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        req: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let who = authz::who(&req);
        let req = req.into_inner();
        let group = resource_name(req.group.as_ref());
        let status = match self.allow(&who, &[authz::group(req.group.as_ref()), authz::topic(Action::Consume, req.topic.as_ref())]) {
            Err(s) => s,
            Ok(()) => match self.0.service.forward_to_dead_letter(group, &req.receipt_handle).await {
                Ok(()) => wire::ok(),
                Err(e) => wire::service_error(&e),
            },
        };
        self.record("forward_to_dead_letter", status.code == Code::Ok as i32, started);
        Ok(Response::new(pb::ForwardMessageToDeadLetterQueueResponse { status: Some(status) }))
    }

    type PullMessageStream = Streamed<pb::PullMessageResponse>;

    async fn pull_message(&self, _: Request<pb::PullMessageRequest>) -> Result<Response<Self::PullMessageStream>, Status> {
        Err(Status::unimplemented("PullMessage is not served (as by RocketMQ's proxy): use ReceiveMessage"))
    }

    async fn update_offset(&self, _: Request<pb::UpdateOffsetRequest>) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
        Err(Status::unimplemented("UpdateOffset is not served (as by RocketMQ's proxy)"))
    }

    async fn get_offset(&self, _: Request<pb::GetOffsetRequest>) -> Result<Response<pb::GetOffsetResponse>, Status> {
        Err(Status::unimplemented("GetOffset is not served (as by RocketMQ's proxy)"))
    }

    async fn query_offset(&self, _: Request<pb::QueryOffsetRequest>) -> Result<Response<pb::QueryOffsetResponse>, Status> {
        Err(Status::unimplemented("QueryOffset is not served (as by RocketMQ's proxy)"))
    }

    async fn end_transaction(&self, req: Request<pb::EndTransactionRequest>) -> Result<Response<pb::EndTransactionResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let who = authz::who(&req);
        let req = req.into_inner();
        let reply = |s: pb::Status| Ok(Response::new(pb::EndTransactionResponse { status: Some(s) }));
        if let Err(s) = self.allow(&who, &[authz::topic(Action::Produce, req.topic.as_ref())]) {
            self.record("end_transaction", false, started);
            return reply(s);
        }
        let Some(log_offset) = parse_transaction_id(&req.transaction_id) else {
            self.record("end_transaction", false, started);
            return reply(status(Code::InvalidTransactionId, format!("{:?} is not a transaction id of this broker", req.transaction_id)));
        };
        // The topic the request names may not be the half's: its own topic decides.
        if let Err(e) = self.0.service.authorize_end_transaction(&who, log_offset, &req.message_id) {
            self.record("end_transaction", false, started);
            return reply(wire::service_error(&e));
        }
        let decision = match pb::TransactionResolution::try_from(req.resolution) {
            Ok(pb::TransactionResolution::Commit) => Decision::Commit,
            Ok(pb::TransactionResolution::Rollback) => Decision::Rollback,
            _ => Decision::Unknown,
        };
        let answer = match self.0.service.end_transaction(log_offset, &req.message_id, decision).await {
            Ok(TxOutcome::Applied(_) | TxOutcome::StillPending) => wire::ok(),
            Ok(TxOutcome::AlreadyDecided(d)) => {
                let was = match d {
                    Decided::Committed => "committed",
                    Decided::RolledBack => "rolled back",
                    Decided::Discarded => "discarded",
                };
                if matches!((d, decision), (Decided::Committed, Decision::Commit) | (Decided::RolledBack, Decision::Rollback)) {
                    wire::ok()
                } else {
                    status(Code::InvalidTransactionId, format!("transaction {} was {was} already", req.transaction_id))
                }
            }
            Err(e) => {
                let mut s = wire::service_error(&e);
                if s.code == Code::BadRequest as i32 {
                    s.code = Code::InvalidTransactionId as i32;
                }
                s
            }
        };
        self.record("end_transaction", answer.code == Code::Ok as i32, started);
        reply(answer)
    }

    type TelemetryStream = Streamed<pb::TelemetryCommand>;

    async fn telemetry(&self, req: Request<tonic::Streaming<pb::TelemetryCommand>>) -> Result<Response<Self::TelemetryStream>, Status> {
        let client_id = self.seen(&req)?;
        let who = client(&req)?;
        let identity = authz::who(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(TELEMETRY_QUEUE);
        let stream_id = self.0.clients.stream_id();
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(command) = inbound.next().await {
                let Ok(command) = command else { break };
                let Some(pb::telemetry_command::Command::Settings(settings)) = command.command else {
                    // Command results (thread stacks, message verification) are not asked for.
                    continue;
                };
                let command = match this.allow(&identity, &authz::settings(&settings)) {
                    Ok(()) => {
                        let reply = this.settings_reply(settings.clone());
                        this.0.clients.settings(&client_id, settings, Some((stream_id, tx.clone())));
                        this.client_alive(who.clone(), None);
                        pb::TelemetryCommand { status: Some(wire::ok()), command: Some(pb::telemetry_command::Command::Settings(reply)) }
                    }
                    // Not registered: no group membership, no check-backs of the topics' halves.
                    Err(s) => pb::TelemetryCommand { status: Some(s), command: None },
                };
                if tx.send(Ok(command)).await.is_err() {
                    break;
                }
            }
            this.0.clients.stream_closed(&client_id, stream_id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn notify_client_termination(
        &self,
        req: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        let (id, _, _) = client(&req)?;
        self.0.clients.remove(&id);
        self.0.service.forget_client(&id);
        Ok(Response::new(pb::NotifyClientTerminationResponse { status: Some(wire::ok()) }))
    }

    async fn change_invisible_duration(
        &self,
        req: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let who = authz::who(&req);
        let req = req.into_inner();
        let group = resource_name(req.group.as_ref());
        let invisible = req.invisible_duration.as_ref().map(wire::duration).unwrap_or_default();
        let allowed = self.allow(&who, &[authz::group(req.group.as_ref()), authz::topic(Action::Consume, req.topic.as_ref())]);
        // Zero is a negative acknowledgement (visible again at once); otherwise within bounds.
        let reply = if let Err(s) = allowed {
            pb::ChangeInvisibleDurationResponse { status: Some(s), receipt_handle: String::new() }
        } else if invisible > INVISIBLE_MAX {
            pb::ChangeInvisibleDurationResponse {
                status: Some(status(Code::IllegalInvisibleTime, format!("at most {INVISIBLE_MAX:?}"))),
                receipt_handle: String::new(),
            }
        } else {
            match self.0.service.change_invisible(group, &req.receipt_handle, invisible) {
                Ok(m) => pb::ChangeInvisibleDurationResponse { status: Some(wire::ok()), receipt_handle: m.receipt.handle() },
                Err(e) => pb::ChangeInvisibleDurationResponse { status: Some(wire::service_error(&e)), receipt_handle: String::new() },
            }
        };
        self.record("change_invisible_duration", reply.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32), started);
        Ok(Response::new(reply))
    }

    async fn recall_message(&self, req: Request<pb::RecallMessageRequest>) -> Result<Response<pb::RecallMessageResponse>, Status> {
        let started = Instant::now();
        self.seen(&req)?;
        let who = authz::who(&req);
        let req = req.into_inner();
        let topic = resource_name(req.topic.as_ref());
        let allowed = self.allow(&who, &[authz::topic(Action::Produce, req.topic.as_ref())]);
        let reply = match allowed {
            Err(s) => pb::RecallMessageResponse { status: Some(s), message_id: String::new() },
            Ok(()) => match self.0.service.recall(topic, &req.recall_handle).await {
                Ok(message_id) => pb::RecallMessageResponse { status: Some(wire::ok()), message_id },
                Err(e) => pb::RecallMessageResponse { status: Some(wire::service_error(&e)), message_id: String::new() },
            },
        };
        self.record("recall_message", reply.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32), started);
        Ok(Response::new(reply))
    }

    async fn sync_lite_subscription(
        &self,
        _: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
        Err(Status::unimplemented("lite topics are not supported"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_id_is_the_half_messages_log_offset() {
        assert_eq!(parse_transaction_id(&transaction_id(1_234_567)), Some(1_234_567));
        assert_eq!(parse_transaction_id("12AB"), None);
        assert_eq!(parse_transaction_id("zzzzzzzzzzzzzzzz"), None);
    }
}
