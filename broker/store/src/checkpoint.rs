//! The checkpoint: how far the log is known durable and how far consume queues and index are
//! known flushed. Written to a temporary file, fsynced, and renamed over the old one, so it is
//! always either the old or the new version.
//!
//! Layout (little-endian, 36 bytes): magic "WQCKPT01" (8), log_flushed u64, dispatch_safe u64,
//! written_ms u64, crc32c of the previous 32 bytes u32.

use std::io;
use std::path::Path;

const MAGIC: &[u8; 8] = b"WQCKPT01";
const BYTES: usize = 36;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    /// Every log byte below this is on disk.
    pub(crate) log_flushed: u64,
    /// Consume-queue and index entries for every record below this are on disk.
    pub(crate) dispatch_safe: u64,
    pub(crate) written_ms: u64,
}

impl Checkpoint {
    /// `Ok(None)` when there is no checkpoint or it is damaged (recovery then trusts nothing).
    pub(crate) fn read(path: &Path) -> io::Result<Option<Self>> {
        let b = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if b.len() != BYTES || &b[0..8] != MAGIC {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(b[32..36].try_into().expect("4"));
        if crc != crc32c::crc32c(&b[..32]) {
            return Ok(None);
        }
        let u = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
        Ok(Some(Self { log_flushed: u(8), dispatch_safe: u(16), written_ms: u(24) }))
    }

    pub(crate) fn write(&self, path: &Path) -> io::Result<()> {
        let mut b = Vec::with_capacity(BYTES);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.log_flushed.to_le_bytes());
        b.extend_from_slice(&self.dispatch_safe.to_le_bytes());
        b.extend_from_slice(&self.written_ms.to_le_bytes());
        b.extend_from_slice(&crc32c::crc32c(&b).to_le_bytes());
        crate::journal::replace_file(path, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        assert_eq!(Checkpoint::read(&path).unwrap(), None);
        let c = Checkpoint { log_flushed: 1 << 33, dispatch_safe: 77, written_ms: 5 };
        c.write(&path).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), Some(c));
        let mut b = std::fs::read(&path).unwrap();
        b[9] ^= 4;
        std::fs::write(&path, b).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), None);
    }
}
