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
//!
//! Nothing is stored through the mapping while the broker runs (it is read through): entries
//! are collected in memory and written with one `pwrite` per 64 KiB ([`Index::write_pending`]),
//! and the slot table of the file taking entries lives in memory; both are written to the
//! file by [`Index::take_dirty`] (each checkpoint) and when the file fills. Stores into a
//! shared mapping cost a page fault on every page after each sync write-protects it, and a
//! TLB-shootdown interrupt on the CPU of the thread that stored: about a thousand slot-table
//! pages right after every checkpoint, which lined up with the e2e benchmark's late
//! deliveries. On disk, the last file's slots may lag its entries until the next checkpoint;
//! recovery truncates the index to the checkpoint (whose slots cover every entry below it) and
//! rebuilds the rest from the log.

use std::io;
use std::path::{Path, PathBuf};

use crate::consume_queue::{file_name, parse_file_name};
use crate::mmap::{MutFile, SyncHandle};

const MAGIC: &[u8; 8] = b"WQIDX001";
const HEADER_BYTES: usize = 64;
const ENTRY_BYTES: usize = 20;

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
    /// The last file's slot table as stored (u32 LE newest entry number + 1 per bucket): the
    /// authority while that file takes entries; its copy in the file is written by `write_table`.
    table: Vec<u8>,
    /// Which [`TABLE_PAGE_BYTES`] pages of `table` changed since it was last written: a lightly
    /// loaded broker rewrites a few pages per checkpoint, not the whole table.
    table_dirty: Vec<bool>,
    /// Entries of the last file not yet written to it, encoded, from entry number `pending_from`.
    pending: Vec<u8>,
    pending_from: u32,
    /// Files closed (filled) since the last checkpoint, still to be synced.
    closed: Vec<SyncHandle>,
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
        let mut idx = Self {
            dir: dir.to_owned(),
            slots,
            entries_max,
            files: Vec::new(),
            table: Vec::new(),
            table_dirty: Vec::new(),
            pending: Vec::new(),
            pending_from: 0,
            closed: Vec::new(),
            dirty: false,
        };
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
        if let Some(f) = idx.files.last() {
            idx.table = slot_table(&f.file, slots);
            idx.table_dirty = vec![false; idx.table.len().div_ceil(TABLE_PAGE_BYTES)];
            idx.pending_from = f.count;
        }
        Ok((idx, rebuild_from))
    }

    fn header_ok(&self, f: &MutFile) -> bool {
        let b = f.bytes();
        &b[0..8] == MAGIC
            && u32::from_le_bytes(b[8..12].try_into().expect("4")) == self.slots
            && u32::from_le_bytes(b[12..16].try_into().expect("4")) == self.entries_max
    }

    /// Adds an entry for a record at `log_offset` (appended in log order). The entry reaches
    /// the file with the next [`Index::write_pending`]; lookups see it at once.
    pub(crate) fn add(&mut self, hash: u64, log_offset: u64) -> io::Result<()> {
        if self.files.last().is_none_or(|f| f.count == self.entries_max) {
            self.start_file(log_offset)?;
        }
        let slot = (hash % u64::from(self.slots)) as usize;
        let f = self.files.last_mut().expect("ensured above");
        let prev = slot_get(&self.table, slot);
        self.pending.extend_from_slice(&hash.to_le_bytes());
        self.pending.extend_from_slice(&(log_offset + 1).to_le_bytes());
        self.pending.extend_from_slice(&prev.to_le_bytes());
        f.count += 1;
        slot_set(&mut self.table, slot, f.count);
        self.table_dirty[4 * slot / TABLE_PAGE_BYTES] = true;
        self.dirty = true;
        if self.pending.len() >= PENDING_BYTES_MAX {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Writes the entries added since the last call to the last file, with one `pwrite`.
    pub(crate) fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let f = self.files.last().expect("pending entries belong to the last file");
        f.file.write_at(entries_at(self.slots) + ENTRY_BYTES * self.pending_from as usize, &self.pending)?;
        self.pending.clear();
        self.pending_from = f.count;
        Ok(())
    }

    /// Writes the changed pages of the last file's slot table into it, one `pwrite` per run of
    /// changed pages.
    fn write_table(&mut self) -> io::Result<()> {
        let mut p = 0;
        while p < self.table_dirty.len() {
            if !self.table_dirty[p] {
                p += 1;
                continue;
            }
            let run = self.table_dirty[p..].iter().take_while(|&&d| d).count();
            let (from, to) = (p * TABLE_PAGE_BYTES, ((p + run) * TABLE_PAGE_BYTES).min(self.table.len()));
            let f = self.files.last().expect("a slot table belongs to the last file");
            f.file.write_at(HEADER_BYTES + from, &self.table[from..to])?;
            self.table_dirty[p..p + run].fill(false);
            p += run;
        }
        Ok(())
    }

    /// Closes the last file (its entries and slots written) and starts a new one whose first
    /// entry is for `log_offset`.
    fn start_file(&mut self, log_offset: u64) -> io::Result<()> {
        if let Some(f) = self.files.last() {
            let handle = f.file.sync_handle();
            self.write_pending()?;
            self.write_table()?;
            self.closed.push(handle);
        }
        let path = self.dir.join(file_name(log_offset));
        let file = MutFile::create(&path, Self::file_bytes(self.slots, self.entries_max))?;
        let mut header = [0u8; 16];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&self.slots.to_le_bytes());
        header[12..16].copy_from_slice(&self.entries_max.to_le_bytes());
        file.write_at(0, &header)?;
        // Under load the first checkpoint writes most of the slot table (4 MiB by default)
        // under the index lock: its pages are brought in now, in the background, not allocated
        // inside that write while appends wait (on this VM fresh memory can come at ~0.1 GB/s).
        file.will_need(0, entries_at(self.slots));
        self.files.push(IndexFile { first_log_offset: log_offset, file, count: 0 });
        self.table = vec![0; 4 * self.slots as usize];
        self.table_dirty = vec![false; self.table.len().div_ceil(TABLE_PAGE_BYTES)];
        self.pending_from = 0;
        Ok(())
    }

    /// Starts loading the hash slots the next [`Index::add`]s of `hashes` will update: the
    /// slot table is large and each add touches a random slot, so a batch's cache misses
    /// overlap instead of coming one after another.
    pub(crate) fn prefetch(&self, hashes: impl IntoIterator<Item = u64>) {
        if self.files.last().is_none_or(|f| f.count == self.entries_max) {
            return;
        }
        for hash in hashes {
            prefetch(&self.table[4 * (hash % u64::from(self.slots)) as usize]);
        }
    }

    /// Entry `i` of file `k`: from the pending entries if not yet written.
    fn entry(&self, k: usize, i: u32) -> (u64, u64, u32) {
        if k + 1 == self.files.len() && i >= self.pending_from {
            let at = ENTRY_BYTES * (i - self.pending_from) as usize;
            return decode_entry(&self.pending[at..at + ENTRY_BYTES]);
        }
        entry_at(&self.files[k].file, self.slots, i)
    }

    /// Log offsets of entries with `hash`, newest first, until `visit` returns false.
    pub(crate) fn lookup(&self, hash: u64, mut visit: impl FnMut(u64) -> bool) {
        let slot = (hash % u64::from(self.slots)) as usize;
        for (k, f) in self.files.iter().enumerate().rev() {
            let table = if k + 1 == self.files.len() { &self.table[..] } else { &f.file.bytes()[HEADER_BYTES..] };
            let mut n = slot_get(table, slot);
            let mut steps = 0;
            while n != 0 && n <= f.count && steps < self.entries_max {
                let (h, off1, prev) = self.entry(k, n - 1);
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

    /// Recovery (and a batch whose dispatch failed): drops entries for log offsets at or past
    /// `log_threshold`.
    pub(crate) fn truncate_from_log(&mut self, log_threshold: u64) -> io::Result<()> {
        if self.files.last().is_some_and(|f| f.first_log_offset >= log_threshold) {
            // Pending entries belong to a file about to go.
            self.pending.clear();
            while self.files.last().is_some_and(|f| f.first_log_offset >= log_threshold) {
                let f = self.files.pop().expect("checked");
                std::fs::remove_file(f.file.path())?;
            }
            // The new last file was closed with its entries and slots written.
            self.table = self.files.last().map(|f| slot_table(&f.file, self.slots)).unwrap_or_default();
            self.table_dirty = vec![false; self.table.len().div_ceil(TABLE_PAGE_BYTES)];
            self.pending_from = self.files.last().map_or(0, |f| f.count);
        }
        let Some(k) = self.files.len().checked_sub(1) else { return Ok(()) };
        let mut keep = self.files[k].count;
        while keep > 0 {
            let (_, off1, _) = self.entry(k, keep - 1);
            if off1 != 0 && off1 - 1 < log_threshold {
                break;
            }
            keep -= 1;
        }
        // Unlink the dropped entries from the slots: follow each chain back below `keep`.
        // (A head past the file's entries is damage, which only recovery meets: it rebuilds the
        // table afterwards with `rebuild_slots`.)
        let count = self.files[k].count;
        for slot in 0..self.slots as usize {
            let mut n = slot_get(&self.table, slot);
            while n > keep {
                let prev = if n <= count { self.entry(k, n - 1).2 } else { 0 };
                n = if prev < n { prev } else { 0 };
            }
            slot_set(&mut self.table, slot, n);
        }
        self.table_dirty.fill(true);
        // Kept pending entries are written; dropped ones, written or not, are zeroed.
        if keep > self.pending_from {
            let n_bytes = ENTRY_BYTES * (keep - self.pending_from) as usize;
            let at = entries_at(self.slots) + ENTRY_BYTES * self.pending_from as usize;
            self.files[k].file.write_at(at, &self.pending[..n_bytes])?;
        }
        self.pending.clear();
        self.pending_from = keep;
        let f = &mut self.files[k];
        f.file.zero_from(entries_at(self.slots) + ENTRY_BYTES * keep as usize);
        f.count = keep;
        self.write_table()?;
        self.dirty = true;
        Ok(())
    }

    /// Recovery after a crash: rebuilds the last file's slot table from its entries. The table
    /// is rewritten in place at each checkpoint, so a power loss during one may leave it torn,
    /// while the entries that remain after [`Index::truncate_from_log`] were all durable before
    /// the checkpoint recovery starts from, and each names its bucket.
    pub(crate) fn rebuild_slots(&mut self) -> io::Result<()> {
        let Some(k) = self.files.len().checked_sub(1) else { return Ok(()) };
        self.table.fill(0);
        for i in 0..self.files[k].count {
            let (hash, _, _) = self.entry(k, i);
            slot_set(&mut self.table, (hash % u64::from(self.slots)) as usize, i + 1);
        }
        self.table_dirty.fill(true);
        self.write_table()?;
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

    /// Writes pending entries and the slot table, and returns the files to `fdatasync` for a
    /// checkpoint (none if nothing changed since the last call).
    pub(crate) fn take_dirty(&mut self) -> io::Result<Vec<SyncHandle>> {
        if !std::mem::take(&mut self.dirty) {
            return Ok(Vec::new());
        }
        self.write_pending()?;
        self.write_table()?;
        // Only the last file takes entries; earlier ones were written when they filled.
        let mut files = std::mem::take(&mut self.closed);
        files.extend(self.files.last().map(|f| f.file.sync_handle()));
        Ok(files)
    }
}

/// Granularity of the slot table's change tracking (one page of the file).
const TABLE_PAGE_BYTES: usize = 4096;

/// Pending entries written at once by [`Index::add`] (recovery and replicas add many between
/// writes).
const PENDING_BYTES_MAX: usize = 64 << 10;

fn entries_at(slots: u32) -> usize {
    HEADER_BYTES + 4 * slots as usize
}

/// A file's slot table as stored in it.
fn slot_table(f: &MutFile, slots: u32) -> Vec<u8> {
    f.bytes()[HEADER_BYTES..entries_at(slots)].to_vec()
}

fn slot_get(table: &[u8], slot: usize) -> u32 {
    u32::from_le_bytes(table[4 * slot..4 * slot + 4].try_into().expect("4"))
}

fn slot_set(table: &mut [u8], slot: usize, n: u32) {
    table[4 * slot..4 * slot + 4].copy_from_slice(&n.to_le_bytes());
}

/// A hint to bring the cache line holding `value` closer; no effect on what any load returns.
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory; `value` is a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(value).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

fn entry_at(f: &MutFile, slots: u32, i: u32) -> (u64, u64, u32) {
    let at = entries_at(slots) + ENTRY_BYTES * i as usize;
    decode_entry(&f.bytes()[at..at + ENTRY_BYTES])
}

/// An encoded entry: key hash, log offset + 1, previous entry number + 1 in its bucket.
fn decode_entry(b: &[u8]) -> (u64, u64, u32) {
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
        assert!(!idx.take_dirty().unwrap().is_empty(), "a checkpoint writes and syncs");
        assert!(idx.take_dirty().unwrap().is_empty(), "nothing changed since");
        drop(idx);
        let (idx, _) = Index::open(dir.path(), 4, 8).unwrap();
        assert_eq!(all(&idx, 1), vec![125, 100, 70, 40, 10]);
        let (mut idx, rebuild) = Index::open(dir.path(), 8, 8).unwrap();
        assert_eq!(rebuild, Some(0), "another slot count: rebuild everything");
        assert!(all(&idx, 1).is_empty());
        idx.trim_below_log(0).unwrap();
    }

    /// The crash model: entries may reach the file before the slots that link them, which are
    /// written at checkpoints; recovery truncates to the checkpoint and re-adds the rest.
    #[test]
    fn slots_lag_entries_until_a_checkpoint_and_recovery_truncates_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, _) = Index::open(dir.path(), 4, 8).unwrap();
        for i in 0..10u64 {
            idx.add(i % 2, i * 10).unwrap();
        }
        idx.take_dirty().unwrap(); // checkpoint: everything below log offset 100
        for i in 10..14u64 {
            idx.add(i % 2, i * 10).unwrap();
        }
        idx.write_pending().unwrap(); // entries on disk, their slots not: then a crash
        assert_eq!(all(&idx, 1), vec![130, 110, 90, 70, 50, 30, 10], "lookups see unwritten slots");
        drop(idx);

        let (mut idx, _) = Index::open(dir.path(), 4, 8).unwrap();
        idx.truncate_from_log(100).unwrap();
        assert_eq!(all(&idx, 1), vec![90, 70, 50, 30, 10]);
        assert_eq!(all(&idx, 0), vec![80, 60, 40, 20, 0]);
        for i in 10..14u64 {
            idx.add(i % 2, i * 10).unwrap();
        }
        assert_eq!(all(&idx, 0), vec![120, 100, 80, 60, 40, 20, 0]);
        idx.take_dirty().unwrap();
        drop(idx);
        let (idx, _) = Index::open(dir.path(), 4, 8).unwrap();
        assert_eq!(all(&idx, 1), vec![130, 110, 90, 70, 50, 30, 10]);
    }

    /// A dispatch that fails takes back its batch's entries, written or still pending.
    #[test]
    fn truncating_drops_pending_entries_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, _) = Index::open(dir.path(), 4, 8).unwrap();
        for i in 0..3u64 {
            idx.add(7, i * 10).unwrap();
        }
        idx.write_pending().unwrap();
        for i in 3..7u64 {
            idx.add(7, i * 10).unwrap();
        }
        idx.truncate_from_log(45).unwrap(); // drops 50 and 60 (pending), keeps 30 and 40 (pending) and 0..20 (written)
        assert_eq!(all(&idx, 7), vec![40, 30, 20, 10, 0]);
        idx.add(7, 45).unwrap();
        idx.take_dirty().unwrap();
        drop(idx);
        let (idx, _) = Index::open(dir.path(), 4, 8).unwrap();
        assert_eq!(all(&idx, 7), vec![45, 40, 30, 20, 10, 0]);
        assert_eq!(idx.files[0].count, 6);
    }
}
