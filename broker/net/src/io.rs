//! Socket I/O shared by clients and the broker's front ends.

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bytes a connection asks its socket for at a time, beneath TLS (whose own reads are 4 KiB).
pub const READ_AHEAD_BYTES: usize = 32 << 10;

/// `tcp` behind a read-ahead buffer for the TLS layer, for clients and the broker alike: rustls
/// reads at most 4 KiB per call, so a 128 KiB batch took some 32 `recv` system calls; now 4
/// (less broker CPU per message: docs/benchmarks/2026-12.md). Writes pass through.
pub fn read_ahead(tcp: TcpStream) -> tokio::io::BufReader<TcpStream> {
    tokio::io::BufReader::with_capacity(READ_AHEAD_BYTES, tcp)
}

/// Writes `parts` in order with vectored writes (the TLS layer copies each slice once, into
/// its records), then flushes; `parts` is left empty.
///
/// # Errors
/// The socket's.
pub async fn write_parts<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, parts: &mut Vec<Bytes>) -> std::io::Result<()> {
    /// Slices handed to one write call.
    const SLICES_MAX: usize = 64;
    let mut i = 0;
    while i < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = parts[i..].iter().take(SLICES_MAX).map(|p| std::io::IoSlice::new(p)).collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let p = &mut parts[i];
            if n >= p.len() {
                n -= p.len();
                i += 1;
            } else {
                bytes::Buf::advance(p, n);
                n = 0;
            }
        }
    }
    parts.clear();
    w.flush().await
}

/// A handle on a connection's socket that can make its close abortive: for a peer that stopped
/// reading, a graceful close would queue the FIN behind data the peer never takes (the socket
/// lingers and the peer never learns it was dropped); armed, the close resets the connection.
/// Holds its own descriptor of the socket, so it is valid whatever owns the stream.
#[derive(Debug)]
pub struct ResetOnClose(std::os::fd::OwnedFd);

impl ResetOnClose {
    /// # Errors
    /// No descriptor left to duplicate the socket's.
    pub fn new(stream: &crate::TlsStream) -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        Ok(Self(stream.get_ref().0.get_ref().as_fd().try_clone_to_owned()?))
    }

    /// From now on, closing the connection resets it (`SO_LINGER` with a zero timeout).
    pub fn arm(&self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a descriptor we own, with a pointer to a live linger of the
        // size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "SO_LINGER refused; the close stays graceful");
        }
    }
}
