//! The message index: find messages by unique id or by (topic, key).
//!
//! Index files (`index/<first log offset, 20 digits>`) are mapped hash tables:
//! ```text
//! off            bytes           field
//!   0                8           magic "WQIDX001"
//!   8                4           slot count S
//!  12                4           entry capacity E
//!  16               48           reserved (zero)
//!  64            4 * S           slots: newest entry number + 1 for the hash bucket (0 = empty)
//!  64 + 4S      20 * E           entries: key_hash u64, log_offset + 1 u64 (0 = unwritten),
//!                                prev u32 (older entry number + 1 in the same bucket, 0 = none)
//! ```
//! Entries are appended in log order; a full file is followed by a new one. A hash hit is only a
//! candidate: the store reads the record and compares the real key. The index is derived data,
//! trimmed and rebuilt from the log by recovery.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::consume_queue::{file_name, parse_file_name};
use crate::mmap::MutFile;

const MAGIC: &[u8; 8] = b"WQIDX001";
const HEADER_BYTES: usize = 64;
const ENTRY_BYTES: usize = 20;
/// Entries whose pages are faulted in at once, ahead of their writes.
const POPULATE_ENTRIES: u32 = 8192;

/// Hash of the index key for a unique message id.
pub(crate) fn id_hash(unique_id: &[u8]) -> u64 {
    // One-shot hashing of "u\0" + id on the stack: the same value as streaming the two parts,
    // at a fraction of the streaming state's setup cost.
    let mut buf = [0u8; 2 + ID_HASH_INLINE_BYTES];
    if unique_id.len() <= ID_HASH_INLINE_BYTES {
        buf[..2].copy_from_slice(b"u\0");
        buf[2..2 + unique_id.len()].copy_from_slice(unique_id);
        return xxhash_rust::xxh3::xxh3_64(&buf[..2 + unique_id.len()]);
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"u\0");
    h.update(unique_id);
    h.digest()
}

/// Longest unique id hashed without the streaming hasher.
const ID_HASH_INLINE_BYTES: usize = 126;

/// Hash of the index key for a message key within a topic.
pub(crate) fn key_hash(topic: &str, key: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"k\0");
    h.update(topic.as_bytes());
    h.update(b"\0");
    h.update(key);
    h.digest()
}

#[derive(Debug)]
struct IndexFile {
    first_log_offset: u64,
    file: MutFile,
    count: u32,
}

#[derive(Debug)]
pub(crate) struct Index {
    dir: PathBuf,
    slots: u32,
    entries_max: u32,
    files: Vec<IndexFile>,
    dirty: bool,
}

impl Index {
    fn file_bytes(slots: u32, entries_max: u32) -> u64 {
        HEADER_BYTES as u64 + 4 * u64::from(slots) + ENTRY_BYTES as u64 * u64::from(entries_max)
    }

    /// Opens the index. A file whose header does not match is deleted with everything after it,
    /// and the log offset from which the index must be rebuilt is returned with it.
    pub(crate) fn open(dir: &Path, slots: u32, entries_max: u32) -> io::Result<(Self, Option<u64>)> {
        std::fs::create_dir_all(dir)?;
        let mut starts = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            match entry.file_name().to_str().and_then(parse_file_name) {
                Some(s) => starts.push(s),
                None => std::fs::remove_file(entry.path())?,
            }
        }
        starts.sort_unstable();
        let mut idx = Self { dir: dir.to_owned(), slots, entries_max, files: Vec::new(), dirty: false };
        let mut rebuild_from = None;
        for s in starts {
            let path = dir.join(file_name(s));
            let opened = MutFile::open(&path, Self::file_bytes(slots, entries_max));
            let ok = match opened {
                Ok(f) if idx.header_ok(&f) && rebuild_from.is_none() => {
                    let count = (0..entries_max).find(|&i| entry_at(&f, slots, i).1 == 0).unwrap_or(entries_max);
                    idx.files.push(IndexFile { first_log_offset: s, file: f, count });
                    true
                }
                _ => false,
            };
            if !ok {
                tracing::warn!(path = %path.display(), "index file unreadable or from another configuration; rebuilding it from the log");
                std::fs::remove_file(&path)?;
                rebuild_from.get_or_insert(s);
            }
        }
        Ok((idx, rebuild_from))
    }

    fn header_ok(&self, f: &MutFile) -> bool {
        let b = f.bytes();
        &b[0..8] == MAGIC
            && u32::from_le_bytes(b[8..12].try_into().expect("4")) == self.slots
            && u32::from_le_bytes(b[12..16].try_into().expect("4")) == self.entries_max
    }

    /// Adds an entry for a record at `log_offset` (appended in log order).
    pub(crate) fn add(&mut self, hash: u64, log_offset: u64) -> io::Result<()> {
        if self.files.last().is_none_or(|f| f.count == self.entries_max) {
            let path = self.dir.join(file_name(log_offset));
            let mut file = MutFile::create(&path, Self::file_bytes(self.slots, self.entries_max))?;
            let b = file.bytes_mut();
            b[0..8].copy_from_slice(MAGIC);
            b[8..12].copy_from_slice(&self.slots.to_le_bytes());
            b[12..16].copy_from_slice(&self.entries_max.to_le_bytes());
            self.files.push(IndexFile { first_log_offset: log_offset, file, count: 0 });
        }
        let slots = self.slots;
        let f = self.files.last_mut().expect("ensured above");
        let slot = (hash % u64::from(slots)) as usize;
        let slot_at = HEADER_BYTES + 4 * slot;
        let e_at = HEADER_BYTES + 4 * slots as usize + ENTRY_BYTES * f.count as usize;
        if f.count.is_multiple_of(POPULATE_ENTRIES) {
            f.file.populate(e_at, e_at + ENTRY_BYTES * POPULATE_ENTRIES as usize + 4096);
        }
        let b = f.file.bytes_mut();
        let prev = u32::from_le_bytes(b[slot_at..slot_at + 4].try_into().expect("4"));
        b[e_at..e_at + 8].copy_from_slice(&hash.to_le_bytes());
        b[e_at + 8..e_at + 16].copy_from_slice(&(log_offset + 1).to_le_bytes());
        b[e_at + 16..e_at + 20].copy_from_slice(&prev.to_le_bytes());
        f.count += 1;
        b[slot_at..slot_at + 4].copy_from_slice(&f.count.to_le_bytes());
        self.dirty = true;
        Ok(())
    }

    /// Starts loading the hash slots the next [`Index::add`]s of `hashes` will update: the
    /// slot table is large and each add touches a random slot, so a batch's cache misses
    /// overlap instead of coming one after another.
    pub(crate) fn prefetch(&self, hashes: impl IntoIterator<Item = u64>) {
        let Some(f) = self.files.last().filter(|f| f.count < self.entries_max) else { return };
        let b = f.file.bytes();
        for hash in hashes {
            let slot_at = HEADER_BYTES + 4 * (hash % u64::from(self.slots)) as usize;
            prefetch(&b[slot_at]);
        }
    }

    /// Log offsets of entries with `hash`, newest first, until `visit` returns false.
    pub(crate) fn lookup(&self, hash: u64, mut visit: impl FnMut(u64) -> bool) {
        let slot = (hash % u64::from(self.slots)) as usize;
        for f in self.files.iter().rev() {
            let b = f.file.bytes();
            let slot_at = HEADER_BYTES + 4 * slot;
            let mut n = u32::from_le_bytes(b[slot_at..slot_at + 4].try_into().expect("4"));
            let mut steps = 0;
            while n != 0 && n <= f.count && steps < self.entries_max {
                let (h, off1, prev) = entry_at(&f.file, self.slots, n - 1);
                if h == hash && off1 != 0 && !visit(off1 - 1) {
                    return;
                }
                // Chains only point backwards; anything else is damage, so stop.
                if prev >= n {
                    break;
                }
                n = prev;
                steps += 1;
            }
        }
    }

    /// Recovery: drops entries for log offsets at or past `log_threshold`.
    pub(crate) fn truncate_from_log(&mut self, log_threshold: u64) -> io::Result<()> {
        while self.files.last().is_some_and(|f| f.first_log_offset >= log_threshold) {
            let f = self.files.pop().expect("checked");
            std::fs::remove_file(f.file.path())?;
        }
        let slots = self.slots;
        let Some(f) = self.files.last_mut() else { return Ok(()) };
        let mut keep = f.count;
        while keep > 0 {
            let (_, off1, _) = entry_at(&f.file, slots, keep - 1);
            if off1 != 0 && off1 - 1 < log_threshold {
                break;
            }
            keep -= 1;
        }
        let entries_at = HEADER_BYTES + 4 * slots as usize;
        for s in 0..slots as usize {
            let at = HEADER_BYTES + 4 * s;
            let mut n = u32::from_le_bytes(f.file.bytes()[at..at + 4].try_into().expect("4"));
            while n > keep {
                let prev =
                    u32::from_le_bytes(f.file.bytes()[entries_at + ENTRY_BYTES * (n as usize - 1) + 16..][..4].try_into().expect("4"));
                n = if prev < n { prev } else { 0 };
            }
            f.file.bytes_mut()[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
        // Slots were fixed first: they follow prev links through the entries zeroed here.
        f.file.zero_from(entries_at + ENTRY_BYTES * keep as usize);
        f.count = keep;
        self.dirty = true;
        Ok(())
    }

    /// Retention: deletes files all of whose entries point below `log_min`.
    pub(crate) fn trim_below_log(&mut self, log_min: u64) -> io::Result<()> {
        while self.files.len() >= 2 && self.files[1].first_log_offset <= log_min {
            let f = self.files.remove(0);
            std::fs::remove_file(f.file.path())?;
        }
        Ok(())
    }

    pub(crate) fn take_dirty(&mut self) -> Vec<Arc<File>> {
        if !std::mem::take(&mut self.dirty) {
            return Vec::new();
        }
        // Only the last file is ever written; an earlier one was flushed when it filled.
        self.files.iter().rev().take(2).map(|f| f.file.sync_handle()).collect()
    }
}

/// A hint to bring the cache line holding `byte` closer; no effect on what any load returns.
fn prefetch(byte: &u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory; `byte` is a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(byte).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = byte;
}

fn entry_at(f: &MutFile, slots: u32, i: u32) -> (u64, u64, u32) {
    let at = HEADER_BYTES + 4 * slots as usize + ENTRY_BYTES * i as usize;
    let b = &f.bytes()[at..at + ENTRY_BYTES];
    (
        u64::from_le_bytes(b[0..8].try_into().expect("8")),
        u64::from_le_bytes(b[8..16].try_into().expect("8")),
        u32::from_le_bytes(b[16..20].try_into().expect("4")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(idx: &Index, hash: u64) -> Vec<u64> {
        let mut v = Vec::new();
        idx.lookup(hash, |o| {
            v.push(o);
            true
        });
        v
    }

    #[test]
    fn id_hash_matches_streaming_the_parts() {
        for len in [0usize, 1, 16, 31, 64, 126, 127, 300] {
            let id: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(b"u\0");
            h.update(&id);
            assert_eq!(id_hash(&id), h.digest(), "id of {len} bytes");
        }
    }

    #[test]
    fn add_lookup_roll_truncate_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, rebuild) = Index::open(dir.path(), 4, 8).unwrap();
        assert_eq!(rebuild, None);
        for i in 0..20u64 {
            idx.add(i % 3, i * 10).unwrap();
        }
        assert_eq!(idx.files.len(), 3, "8 entries per file");
        assert_eq!(all(&idx, 1), vec![190, 160, 130, 100, 70, 40, 10]);
        idx.truncate_from_log(125).unwrap();
        assert_eq!(all(&idx, 1), vec![100, 70, 40, 10]);
        assert_eq!(all(&idx, 0), vec![120, 90, 60, 30, 0]);
        idx.add(1, 125).unwrap();
        drop(idx);
        let (idx, _) = Index::open(dir.path(), 4, 8).unwrap();
        assert_eq!(all(&idx, 1), vec![125, 100, 70, 40, 10]);
        let (mut idx, rebuild) = Index::open(dir.path(), 8, 8).unwrap();
        assert_eq!(rebuild, Some(0), "another slot count: rebuild everything");
        assert!(all(&idx, 1).is_empty());
        idx.trim_below_log(0).unwrap();
    }
}
