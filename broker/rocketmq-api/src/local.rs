//! A connection's HTTP/2 streams run on the connection's own task. hyper hands each stream (a
//! server's request; a client's request body) to an executor; spawned onto the runtime, every
//! request would be a task of its own, woken across threads when its answer is ready, and would
//! hand its response back to the connection's task through another wake-up, one write per
//! response. Here the connection's task polls the streams itself: on the broker, the requests
//! read in one go are decoded and sent together (into one group append) and their responses
//! leave in one write; on a client, the requests made in one go leave in one write. One
//! connection uses one core at a time, as a native protocol connection does.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;

/// A stream hyper spawned.
pub type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;
/// The streams of one connection that are running.
pub type Streams = FuturesUnordered<Stream>;

/// The executor hyper spawns a connection's streams on: it keeps them for [`ConnectionExecutor::drive`].
#[derive(Clone, Default)]
pub struct ConnectionExecutor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Streams spawned since the connection's task last took them: no more than the
    /// connection's concurrent streams (the server's `max_concurrent_streams`, the client's
    /// requests in flight), as hyper spawns one per open stream.
    spawned: Mutex<Vec<Stream>>,
    /// The connection's task, woken when a stream is spawned from elsewhere.
    waker: AtomicWaker,
}

impl<F> hyper::rt::Executor<F> for ConnectionExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.inner.spawned.lock().unwrap_or_else(PoisonError::into_inner).push(Box::pin(fut));
        self.inner.waker.wake();
    }
}

impl std::fmt::Debug for ConnectionExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionExecutor").finish_non_exhaustive()
    }
}

impl ConnectionExecutor {
    /// Polls `conn` and the streams it spawned (kept in `streams`) until nothing can go on;
    /// ready once `conn` is. Streams still running when `conn` ends are the caller's to drop
    /// (their connection is gone).
    pub fn poll<C: Future + ?Sized>(&self, cx: &mut Context<'_>, streams: &mut Streams, mut conn: Pin<&mut C>) -> Poll<C::Output> {
        self.inner.waker.register(cx.waker());
        loop {
            // Reads requests (spawning their streams) and writes what the streams answered.
            let out = conn.as_mut().poll(cx);
            let spawned = std::mem::take(&mut *self.inner.spawned.lock().unwrap_or_else(PoisonError::into_inner));
            let new = !spawned.is_empty();
            streams.extend(spawned);
            let mut finished = false;
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {
                finished = true;
            }
            if let Poll::Ready(r) = out {
                return Poll::Ready(r);
            }
            // New streams ran, or some finished (their responses are queued): the connection
            // writes them now, and reads what came meanwhile.
            if !new && !finished {
                return Poll::Pending;
            }
        }
    }
}
