//! Accepting TLS connections for every listener of the broker and the name server: a limit on
//! open connections, a deadline for the handshake, back-off when `accept` fails, and the
//! connection's task tracked so shutdown can wait for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time a client has to finish the TLS handshake (and, in the native protocol, send Hello).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (EMFILE and friends) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An accepted connection after its TLS handshake (reads go through a read-ahead buffer).
pub type TlsStream = tokio_rustls::server::TlsStream<BufReader<TcpStream>>;

/// Accepts on `listener` until `shutdown`: at most `connections_max` open at once (one more
/// is closed at once, logged), each handshaken within [`HANDSHAKE_TIMEOUT`] and then handed
/// to `serve` on a task of `tracker`. `what` names the listener in logs.
pub async fn serve_tls<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    connections_max: usize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    serve: F,
) where
    F: Fn(TlsStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(connections_max));
    let serve = Arc::new(serve);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!(listener = what, %peer, connections_max, "connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        let (acceptor, serve) = (acceptor.clone(), Arc::clone(&serve));
        tracker.spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(crate::read_ahead(tcp))).await {
                Ok(Ok(tls)) => serve(tls, peer).await,
                Ok(Err(e)) => tracing::info!(listener = what, %peer, error = %e, "TLS handshake failed (plaintext on the TLS port?)"),
                Err(_) => tracing::info!(listener = what, %peer, "TLS handshake timed out"),
            }
            drop(permit);
        });
    }
}
