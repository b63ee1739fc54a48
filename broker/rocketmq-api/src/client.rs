//! The client side's HTTP/2 transport: [`H2`], a hyper HTTP/2 connection's sender as the tower
//! service the generated `MessagingServiceClient` calls through (how the connection itself is
//! driven is the caller's: `wasmq bench grpc` polls it on its own task with
//! [`crate::local::ConnectionExecutor`], the tests spawn it).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http2::SendRequest;
use tonic::codegen::http;

/// Requests of a generated client sent on one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct H2(pub SendRequest<tonic::body::Body>);

impl tower_service::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}
