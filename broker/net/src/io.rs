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
