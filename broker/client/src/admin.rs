//! A client of the admin HTTPS API.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use wasmq_admin_types::{
    ApiError, AttachPlugin, AttachmentView, BrokerInfo, CreateTopic, DeadLetter, GroupDetail, GroupSettings, GroupSummary, PluginDetail,
    PluginVersion, Resend, Resent, ResetOffset, TopicDetail, TopicMessageType, TopicSummary, UpdateTopic,
};

use crate::ClientError;

/// Talks to `https://<addr>/api/v1` with a bearer token. Each call opens a connection (admin
/// calls are rare).
#[derive(Debug, Clone)]
pub struct Admin {
    addr: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Admin {
    /// # Errors
    /// The CA file cannot be read.
    pub fn new(addr: impl Into<String>, ca: &std::path::Path, token: impl Into<String>) -> Result<Self, ClientError> {
        Ok(Self { addr: addr.into(), token: token.into(), tls: wasmq_net::client_config(ca, b"http/1.1")? })
    }

    /// The same client with another bearer token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Option<T>, ClientError> {
        let bytes = self.request(method, &format!("/api/v1{path}"), body).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// The Prometheus metrics (`GET /metrics`, OpenMetrics text).
    ///
    /// # Errors
    /// Connection failure or the API's error.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let bytes = self.request("GET", "/metrics", None).await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// One request of `method` to `path` (the whole path: `/api/v1/…`, `/metrics`), for what
    /// this client has no call for; the body of a successful answer.
    ///
    /// # Errors
    /// Connection failure or the API's error (status and text).
    pub async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, ClientError> {
        self.request(method, path, body).await
    }

    /// One request; the body of a successful answer.
    async fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, ClientError> {
        let connect_err = |reason: String| ClientError::Connect { addr: self.addr.clone(), reason };
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.map_err(|e| connect_err(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(wasmq_net::server_name(&self.addr)?, tcp)
            .await
            .map_err(|e| connect_err(format!("TLS: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| connect_err(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder();
        if !self.token.is_empty() {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        let req = req
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| ClientError::Closed(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| ClientError::Closed(e.to_string()))?.to_bytes();
        if status >= 400 {
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Admin { status, message });
        }
        Ok(bytes)
    }

    /// # Errors
    /// Connection failure or the API's error.
    pub async fn broker_info(&self) -> Result<BrokerInfo, ClientError> {
        self.call("GET", "/broker", None).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// # Errors
    /// Exists, invalid name or queue count, connection failure.
    pub async fn create_topic(&self, name: &str, queues: u32) -> Result<TopicSummary, ClientError> {
        self.create_topic_with(&CreateTopic { name: name.to_owned(), queues, retention_ms: None, message_type: TopicMessageType::Mixed })
            .await
    }

    /// A topic with its own retention (messages readable for `retention_ms`; `None`: as long
    /// as the log keeps them) or message type.
    ///
    /// # Errors
    /// As [`Admin::create_topic`]; a retention of 0.
    pub async fn create_topic_with(&self, topic: &CreateTopic) -> Result<TopicSummary, ClientError> {
        let body = serde_json::to_vec(topic).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call("POST", "/topics", Some(body)).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// Changes a topic's message type.
    ///
    /// # Errors
    /// Unknown topic, connection failure.
    pub async fn set_topic_message_type(&self, name: &str, message_type: TopicMessageType) -> Result<TopicSummary, ClientError> {
        let body = serde_json::to_vec(&UpdateTopic { message_type }).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call("PATCH", &format!("/topics/{name}"), Some(body)).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// Undecided transactions by topic and producer group, with counters.
    ///
    /// # Errors
    /// Connection failure or the API's error.
    pub async fn transactions(&self) -> Result<wasmq_admin_types::Transactions, ClientError> {
        self.call("GET", "/transactions", None).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// The newest message with this unique id.
    ///
    /// # Errors
    /// None such (404), connection failure.
    pub async fn message(&self, id: &str) -> Result<wasmq_admin_types::MessageView, ClientError> {
        self.call("GET", &format!("/messages/{id}"), None).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// Sends one message through the admin API (as a producer's send: the topic's plugins,
    /// answered once as safe as the broker set promises).
    ///
    /// # Errors
    /// Unknown topic (404), a full disk (507), connection failure.
    pub async fn send_message(
        &self,
        topic: &str,
        message: &wasmq_admin_types::SendMessage,
    ) -> Result<wasmq_admin_types::SentMessage, ClientError> {
        let body = serde_json::to_vec(message).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call("POST", &format!("/topics/{topic}/messages"), Some(body))
            .await?
            .ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// A topic's messages carrying `key`, newest first.
    ///
    /// # Errors
    /// Unknown topic, connection failure.
    pub async fn messages_by_key(&self, topic: &str, key: &str) -> Result<Vec<wasmq_admin_types::MessageView>, ClientError> {
        let key = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
        Ok(self.call("GET", &format!("/topics/{topic}/messages?key={key}"), None).await?.unwrap_or_default())
    }

    /// A page of a queue from `offset`, or from the first message stored at or after `time_ms`.
    ///
    /// # Errors
    /// Unknown topic or queue, connection failure.
    pub async fn browse(
        &self,
        topic: &str,
        queue_id: u32,
        from: Browse,
        count: usize,
    ) -> Result<wasmq_admin_types::QueuePage, ClientError> {
        let at = match from {
            Browse::Offset(o) => format!("offset={o}"),
            Browse::Time(t) => format!("time={t}"),
        };
        self.call("GET", &format!("/topics/{topic}/queues/{queue_id}/messages?{at}&count={count}"), None)
            .await?
            .ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// This broker's role in its broker set and its replication state.
    ///
    /// # Errors
    /// Connection failure or the API's error.
    pub async fn replicas(&self) -> Result<wasmq_admin_types::ReplicaStatus, ClientError> {
        self.call("GET", "/replicas", None).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// Scheduled messages not yet delivered, by due time.
    ///
    /// # Errors
    /// Connection failure or the API's error.
    pub async fn scheduled(&self) -> Result<wasmq_admin_types::Scheduled, ClientError> {
        self.call("GET", "/scheduled", None).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// # Errors
    /// Connection failure or the API's error.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        Ok(self.call("GET", "/topics", None).await?.unwrap_or_default())
    }

    /// # Errors
    /// Unknown topic, connection failure.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDetail, ClientError> {
        self.call("GET", &format!("/topics/{name}"), None).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// # Errors
    /// Unknown topic, connection failure.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", &format!("/topics/{name}"), None).await.map(|_| ())
    }

    /// # Errors
    /// Connection failure or the API's error.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        Ok(self.call("GET", "/groups", None).await?.unwrap_or_default())
    }

    /// # Errors
    /// Unknown group, connection failure.
    pub async fn describe_group(&self, name: &str) -> Result<GroupDetail, ClientError> {
        self.call("GET", &format!("/groups/{name}"), None).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// Moves a group's offsets of a topic to `earliest`, `latest` or a timestamp (ms).
    ///
    /// # Errors
    /// Unknown topic, bad target, connection failure.
    pub async fn reset_group_offsets(&self, name: &str, topic: &str, to: &str) -> Result<GroupDetail, ClientError> {
        let body = serde_json::to_vec(&ResetOffset { topic: topic.to_owned(), to: to.to_owned() })
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call("POST", &format!("/groups/{name}/reset-offset"), Some(body))
            .await?
            .ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// Sets a group's own settings (creating the group).
    ///
    /// # Errors
    /// A bad group name, a slave, connection failure.
    pub async fn set_group_settings(&self, name: &str, settings: GroupSettings) -> Result<GroupSettings, ClientError> {
        let body = serde_json::to_vec(&settings).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call("PUT", &format!("/groups/{name}"), Some(body)).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// # Errors
    /// Live members, unknown group, connection failure.
    pub async fn delete_group(&self, name: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", &format!("/groups/{name}"), None).await.map(|_| ())
    }

    /// The group's dead letters (oldest first, at most 1000).
    ///
    /// # Errors
    /// Connection failure or the API's error.
    pub async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, ClientError> {
        Ok(self.call("GET", &format!("/groups/{group}/dlq"), None).await?.unwrap_or_default())
    }

    /// Sends the dead letter at `queue_offset` back to its origin topic.
    ///
    /// # Errors
    /// No such dead letter, connection failure.
    pub async fn resend_dead_letter(&self, group: &str, queue_offset: u64) -> Result<Resent, ClientError> {
        let body = serde_json::to_vec(&Resend { queue_offset }).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call("POST", &format!("/groups/{group}/dlq/resend"), Some(body))
            .await?
            .ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// Sends every dead letter of the group back to its origin topic.
    ///
    /// # Errors
    /// The group has no dead letters, connection failure.
    pub async fn resend_all_dead_letters(&self, group: &str) -> Result<wasmq_admin_types::ResentAll, ClientError> {
        self.call_some("POST", &format!("/groups/{group}/dlq/resend-all"), None).await
    }

    /// Every broker set of the cluster (from the broker's name servers, else its own set).
    ///
    /// # Errors
    /// Connection failure or the API's error.
    pub async fn cluster(&self) -> Result<wasmq_admin_types::ClusterView, ClientError> {
        self.call_some("GET", "/cluster", None).await
    }

    /// The failover controller as the broker asks it: nodes and leader, each set's master,
    /// epoch, in-sync set and members (no nodes: the broker is not under a controller).
    ///
    /// # Errors
    /// Connection failure or the API's error.
    pub async fn controller(&self) -> Result<wasmq_admin_types::ControllerView, ClientError> {
        self.call_some("GET", "/controller", None).await
    }

    async fn call_some<T: serde::de::DeserializeOwned>(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<T, ClientError> {
        self.call(method, path, body).await?.ok_or_else(|| ClientError::Malformed("empty answer".into()))
    }

    /// Uploads a plugin (`.wasm`: a component, or a core module built with the SDK). The same
    /// bytes again return the existing version (`created: false`).
    ///
    /// # Errors
    /// The broker refuses the module (the message says why), connection failure.
    pub async fn upload_plugin(&self, wasm: Vec<u8>) -> Result<PluginVersion, ClientError> {
        self.call_some("POST", "/plugins", Some(wasm)).await
    }

    /// # Errors
    /// Connection failure or the API's error.
    pub async fn list_plugins(&self) -> Result<Vec<PluginDetail>, ClientError> {
        Ok(self.call("GET", "/plugins", None).await?.unwrap_or_default())
    }

    /// # Errors
    /// Unknown plugin, connection failure.
    pub async fn describe_plugin(&self, name: &str) -> Result<PluginDetail, ClientError> {
        self.call_some("GET", &format!("/plugins/{name}"), None).await
    }

    /// # Errors
    /// Connection failure or the API's error.
    pub async fn attachments(&self) -> Result<Vec<AttachmentView>, ClientError> {
        Ok(self.call("GET", "/attachments", None).await?.unwrap_or_default())
    }

    /// Attaches (or swaps) a `router` or `ordering-key` plugin version on a topic.
    ///
    /// # Errors
    /// Unknown topic, plugin or version; a role the plugin lacks; a refused configuration.
    pub async fn attach_topic_plugin(&self, topic: &str, role: &str, req: &AttachPlugin) -> Result<AttachmentView, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call_some("PUT", &format!("/topics/{topic}/plugins/{role}"), Some(body)).await
    }

    /// # Errors
    /// Nothing attached there, connection failure.
    pub async fn detach_topic_plugin(&self, topic: &str, role: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", &format!("/topics/{topic}/plugins/{role}"), None).await.map(|_| ())
    }

    /// Attaches (or swaps) a filter plugin version on a group's subscription to a topic.
    ///
    /// # Errors
    /// As [`Admin::attach_topic_plugin`].
    pub async fn attach_filter(&self, group: &str, topic: &str, req: &AttachPlugin) -> Result<AttachmentView, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call_some("PUT", &format!("/groups/{group}/filters/{topic}"), Some(body)).await
    }

    /// # Errors
    /// Nothing attached there, connection failure.
    pub async fn detach_filter(&self, group: &str, topic: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", &format!("/groups/{group}/filters/{topic}"), None).await.map(|_| ())
    }
}

/// Where [`Admin::browse`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browse {
    Offset(u64),
    /// The first message stored at or after this time (ms since the epoch).
    Time(u64),
}
