//! Consume queues: per (topic, queue) arrays of fixed 20-byte entries, one entry per message,
//! in files of `entries_per_file` entries named by the queue offset of their first entry
//! (20 digits). Entry `q` of a queue says where message `q` of that queue is in the commit log.
//!
//! Entry layout (little-endian): `log_offset u64, size u32, tag_hash u64`. A zero `size` marks
//! an entry never written (files are preallocated with zeros; no record is empty).
//! Consume queues are derived data: recovery trims them and rebuilds them from the log.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::mmap::{MutFile, SyncHandle};

/// Bytes of one consume-queue entry.
pub const CQ_ENTRY_BYTES: usize = 20;

/// One consume-queue entry: where a message is and what its tag hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    pub log_offset: u64,
    pub size: u32,
    /// [`crate::tag_hash`] of the message's tag, or 0 without one.
    pub tag_hash: u64,
}

impl CqEntry {
    fn read(b: &[u8]) -> Self {
        Self {
            log_offset: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            size: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            tag_hash: u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.log_offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[12..20].copy_from_slice(&self.tag_hash.to_le_bytes());
    }
}

/// A put that would leave a hole or overwrite an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("consume queue expects offset {expected}, got {got}")]
pub(crate) struct CqOrderError {
    pub(crate) expected: u64,
    pub(crate) got: u64,
}

#[derive(Debug)]
pub(crate) struct ConsumeQueue {
    dir: PathBuf,
    entries_per_file: u64,
    files: BTreeMap<u64, MutFile>,
    /// Lowest readable queue offset (moves up with retention).
    min: u64,
    /// Next queue offset to be written.
    max: u64,
    dirty: Vec<u64>,
}

pub(crate) fn file_name(start: u64) -> String {
    format!("{start:020}")
}

/// Parses a 20-digit file name.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok()).flatten()
}

impl ConsumeQueue {
    pub(crate) fn create(dir: &Path, entries_per_file: u32) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            entries_per_file: u64::from(entries_per_file),
            files: BTreeMap::new(),
            min: 0,
            max: 0,
            dirty: Vec::new(),
        })
    }

    /// Opens the files in `dir`; `max` is provisional (the first unwritten entry of the last
    /// file) until recovery calls [`ConsumeQueue::truncate_from_log`].
    pub(crate) fn open(dir: &Path, entries_per_file: u32) -> io::Result<Self> {
        let mut q = Self::create(dir, entries_per_file)?;
        let file_bytes = q.entries_per_file * CQ_ENTRY_BYTES as u64;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(start) = name.to_str().and_then(parse_file_name) else {
                if name.to_string_lossy().ends_with(".tmp") {
                    std::fs::remove_file(entry.path())?;
                }
                continue;
            };
            if start % q.entries_per_file != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: start not a multiple of {}", entry.path().display(), q.entries_per_file),
                ));
            }
            q.files.insert(start, MutFile::open(&entry.path(), file_bytes)?);
        }
        if let Some((&first, f)) = q.files.first_key_value() {
            let skip = (0..q.entries_per_file as usize).find(|&i| entry_at(f, i).size != 0).unwrap_or(0);
            q.min = first + skip as u64;
        }
        if let Some((&last, f)) = q.files.last_key_value() {
            let n = (0..q.entries_per_file as usize).find(|&i| entry_at(f, i).size == 0).unwrap_or(q.entries_per_file as usize);
            q.max = (last + n as u64).max(q.min);
        }
        Ok(q)
    }

    pub(crate) fn min(&self) -> u64 {
        self.min
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    fn locate(&self, q: u64) -> (u64, usize) {
        let start = q / self.entries_per_file * self.entries_per_file;
        (start, (q - start) as usize)
    }

    pub(crate) fn entry(&self, q: u64) -> Option<CqEntry> {
        if q < self.min || q >= self.max {
            return None;
        }
        let (start, i) = self.locate(q);
        self.files.get(&start).map(|f| entry_at(f, i))
    }

    /// Writes entry `q`, which must be the next one (or any, if the queue is empty).
    pub(crate) fn put(&mut self, q: u64, e: CqEntry) -> Result<(), PutError> {
        if q != self.max && !(self.min == self.max && q > self.max) {
            return Err(PutError::Order(CqOrderError { expected: self.max, got: q }));
        }
        let (start, i) = self.locate(q);
        let f = self.file(start).map_err(PutError::Io)?;
        let mut b = [0u8; CQ_ENTRY_BYTES];
        e.write(&mut b);
        f.store(i * CQ_ENTRY_BYTES, &b);
        if self.dirty.last() != Some(&start) {
            self.dirty.push(start);
        }
        if self.min == self.max {
            self.min = q;
        }
        self.max = q + 1;
        Ok(())
    }

    /// Writes `entries` as entries `q, q + 1, ...`; `q` must be the next one (or any, if the
    /// queue is empty). Each file's part goes in with one `pwrite`, not through the mapping: a
    /// store into a mapped page takes a fault on a fresh page and again after every flush
    /// write-protects it, and flushing pages written through the mapping makes the kernel
    /// shoot down other CPUs' TLB entries. Readers see the bytes through the mapping as before.
    pub(crate) fn put_run(&mut self, q: u64, entries: &[CqEntry]) -> Result<(), PutError> {
        if q != self.max && !(self.min == self.max && q > self.max) {
            return Err(PutError::Order(CqOrderError { expected: self.max, got: q }));
        }
        let mut buf = [0u8; CQ_ENTRY_BYTES * 64];
        let mut done = 0usize;
        while done < entries.len() {
            let (start, i) = self.locate(q + done as u64);
            let n = (entries.len() - done).min(self.entries_per_file as usize - i).min(buf.len() / CQ_ENTRY_BYTES);
            for (k, e) in entries[done..done + n].iter().enumerate() {
                e.write(&mut buf[k * CQ_ENTRY_BYTES..(k + 1) * CQ_ENTRY_BYTES]);
            }
            let f = self.file(start).map_err(PutError::Io)?;
            f.write_at(i * CQ_ENTRY_BYTES, &buf[..n * CQ_ENTRY_BYTES]).map_err(PutError::Io)?;
            if self.dirty.last() != Some(&start) {
                self.dirty.push(start);
            }
            if self.min == self.max {
                self.min = q;
            }
            done += n;
            self.max = q + done as u64;
        }
        Ok(())
    }

    /// The file starting at entry `start`, created (preallocated, its directory synced) if
    /// it does not exist yet.
    fn file(&mut self, start: u64) -> io::Result<&mut MutFile> {
        match self.files.entry(start) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let path = self.dir.join(file_name(start));
                Ok(e.insert(MutFile::create(&path, self.entries_per_file * CQ_ENTRY_BYTES as u64)?))
            }
        }
    }

    /// Creates the files the next `n` entries go into, so an append need not create one
    /// while it holds the store's writer lock (creating a file takes milliseconds: the
    /// preallocation and the directory's fsync).
    pub(crate) fn prepare(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (first, _) = self.locate(self.max);
        let (last, _) = self.locate(self.max + n as u64 - 1);
        let mut start = first;
        while start <= last {
            self.file(start)?;
            start += self.entries_per_file;
        }
        Ok(())
    }

    /// Up to `max_count` entries from `from` (fewer at the end of the queue).
    pub(crate) fn get(&self, from: u64, max_count: usize) -> Vec<CqEntry> {
        let mut out = Vec::new();
        let mut q = from.max(self.min);
        while q < self.max && out.len() < max_count {
            let (start, i) = self.locate(q);
            let Some(f) = self.files.get(&start) else { break };
            let n = (self.entries_per_file as usize - i).min((self.max - q) as usize).min(max_count - out.len());
            out.extend((i..i + n).map(|j| entry_at(f, j)));
            q += n as u64;
        }
        out
    }

    /// Recovery: keeps only the leading entries that point below `log_threshold` and that
    /// `is_real` confirms against the log; zeroes the rest and deletes files past them.
    pub(crate) fn truncate_from_log(&mut self, log_threshold: u64, is_real: impl Fn(u64, &CqEntry) -> bool) -> io::Result<()> {
        let mut keep = self.max;
        while keep > self.min {
            let Some(e) = self.entry(keep - 1) else { break };
            if e.size != 0 && e.log_offset < log_threshold && is_real(keep - 1, &e) {
                break;
            }
            keep -= 1;
        }
        self.truncate_to(keep)
    }

    /// Drops entries from `keep` on (zeroing them) and deletes files past them.
    pub(crate) fn truncate_to(&mut self, keep: u64) -> io::Result<()> {
        let (start, i) = self.locate(keep);
        let doomed: Vec<u64> = self.files.range(start + 1..).map(|(&s, _)| s).collect();
        for s in doomed {
            let f = self.files.remove(&s).expect("listed");
            std::fs::remove_file(f.path())?;
        }
        if let Some(f) = self.files.get_mut(&start) {
            f.zero_from(i * CQ_ENTRY_BYTES);
            self.dirty.push(start);
        }
        self.max = keep;
        self.min = self.min.min(keep);
        Ok(())
    }

    /// Retention: entries pointing below `log_min` become unreadable; files holding only such
    /// entries are deleted, except the last file, which keeps the queue's next offset known.
    pub(crate) fn trim_below_log(&mut self, log_min: u64) -> io::Result<()> {
        while self.min < self.max {
            match self.entry(self.min) {
                Some(e) if e.log_offset < log_min => {}
                _ => break,
            }
            // Skip whole files at once when their last entry is below the minimum.
            let (start, _) = self.locate(self.min);
            let last_in_file = (start + self.entries_per_file - 1).min(self.max - 1);
            if self.entry(last_in_file).is_some_and(|e| e.log_offset < log_min) {
                self.min = last_in_file + 1;
            } else {
                let lo = self.min;
                let (mut a, mut b) = (lo, last_in_file);
                while a < b {
                    let mid = a + (b - a) / 2;
                    if self.entry(mid).is_some_and(|e| e.log_offset < log_min) { a = mid + 1 } else { b = mid }
                }
                self.min = a;
            }
        }
        self.delete_files_below_min()
    }

    /// A topic's own retention: entries below queue offset `q` become unreadable. Files holding
    /// only such entries are deleted (not the last); the rest is in memory only, so the owner
    /// applies the same cut again after a restart.
    pub(crate) fn trim_below(&mut self, q: u64) -> io::Result<()> {
        if q > self.min {
            self.min = q.min(self.max);
        }
        self.delete_files_below_min()
    }

    fn delete_files_below_min(&mut self) -> io::Result<()> {
        let (min_file, _) = self.locate(self.min);
        let last_file = self.files.last_key_value().map(|(&s, _)| s);
        let doomed: Vec<u64> = self.files.range(..min_file).map(|(&s, _)| s).filter(|&s| Some(s) != last_file).collect();
        for s in doomed {
            let f = self.files.remove(&s).expect("listed");
            std::fs::remove_file(f.path())?;
        }
        Ok(())
    }

    /// Files written since the last call, for flushing outside the queue's lock.
    pub(crate) fn take_dirty(&mut self) -> Vec<SyncHandle> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out: Vec<SyncHandle> = Vec::new();
        for s in dirty {
            if let Some(f) = self.files.get(&s) {
                out.push(f.sync_handle());
            }
        }
        out.dedup_by(|a, b| a.same_file(b));
        out
    }
}

fn entry_at(f: &MutFile, i: usize) -> CqEntry {
    CqEntry::read(&f.bytes()[i * CQ_ENTRY_BYTES..(i + 1) * CQ_ENTRY_BYTES])
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PutError {
    #[error(transparent)]
    Order(CqOrderError),
    #[error("creating a consume-queue file: {0}")]
    Io(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(log_offset: u64) -> CqEntry {
        CqEntry { log_offset, size: 100, tag_hash: log_offset * 7 }
    }

    #[test]
    fn runs_span_files_keep_order_rules_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = ConsumeQueue::create(dir.path(), 4).unwrap();
        q.put_run(0, &(0..3).map(|i| e(i * 100)).collect::<Vec<_>>()).unwrap();
        // From the middle of the first file over a whole second one into a third.
        q.put_run(3, &(3..10).map(|i| e(i * 100)).collect::<Vec<_>>()).unwrap();
        assert!(matches!(q.put_run(9, &[e(0)]), Err(PutError::Order(CqOrderError { expected: 10, got: 9 }))), "overwrite refused");
        assert!(matches!(q.put_run(11, &[e(0)]), Err(PutError::Order(_))), "hole refused");
        q.put(10, e(1000)).unwrap();
        let all = |q: &ConsumeQueue| q.get(0, 100).iter().map(|x| x.log_offset).collect::<Vec<_>>();
        let expected: Vec<u64> = (0..11).map(|i| i * 100).collect();
        assert_eq!(all(&q), expected);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        drop(q);
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        assert_eq!((q.min(), q.max()), (0, 11));
        assert_eq!(all(&q), expected, "the written entries are in the files");
        drop(q);

        // Files made ahead of the entries that go into them, and nothing else changes.
        let mut q = ConsumeQueue::open(dir.path(), 4).unwrap();
        q.prepare(6).unwrap();
        assert_eq!((q.min(), q.max()), (0, 11));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5, "files for entries 11..17 made");
        assert_eq!(all(&q), expected);
        q.put_run(11, &(11..17).map(|i| e(i * 100)).collect::<Vec<_>>()).unwrap();
        assert_eq!(q.get(15, 10).len(), 2);
        drop(q);

        // A run longer than one write's buffer.
        let dir = tempfile::tempdir().unwrap();
        let mut q = ConsumeQueue::create(dir.path(), 1000).unwrap();
        q.put_run(0, &(0..300).map(|i| e(i * 10)).collect::<Vec<_>>()).unwrap();
        assert_eq!(q.get(0, 1000).iter().map(|x| x.log_offset).collect::<Vec<_>>(), (0..300).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn put_get_reopen_truncate_trim() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = ConsumeQueue::create(dir.path(), 4).unwrap();
        for i in 0..10 {
            q.put(i, e(i * 100)).unwrap();
        }
        assert!(q.put(5, e(0)).is_err(), "overwrite refused");
        assert!(q.put(11, e(0)).is_err(), "hole refused");
        assert_eq!(q.get(3, 4).iter().map(|x| x.log_offset).collect::<Vec<_>>(), vec![300, 400, 500, 600]);
        assert_eq!(q.get(8, 100).len(), 2);
        drop(q);

        let mut q = ConsumeQueue::open(dir.path(), 4).unwrap();
        assert_eq!((q.min(), q.max()), (0, 10));
        q.truncate_from_log(650, |_, _| true).unwrap();
        assert_eq!(q.max(), 7);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "file for 8.. deleted");
        q.truncate_from_log(u64::MAX, |q, _| q < 5).unwrap();
        assert_eq!(q.max(), 5, "entries the log does not confirm are dropped");
        q.put(5, e(500)).unwrap();

        q.trim_below_log(450).unwrap();
        assert_eq!(q.min(), 5);
        assert_eq!(q.get(0, 10).len(), 1);
        q.trim_below_log(10_000).unwrap();
        assert_eq!((q.min(), q.max()), (6, 6));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the last file is kept");
        drop(q);
        let q = ConsumeQueue::open(dir.path(), 4).unwrap();
        assert_eq!(q.max(), 6, "next offset survives a reopen after everything was trimmed");
    }
}
