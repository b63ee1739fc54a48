//! Memory-mapped files: the only module of the store with `unsafe`.
//!
//! Two kinds of mapping:
//! - [`LogFile`]: a commit-log segment shared between one writer and many readers. It hands out
//!   raw access; the contract (below) is that the writer only writes bytes past the store's
//!   published end offset and readers only read bytes below it, so no byte is ever read and
//!   written at once. Readers get [`Bytes`] views that keep the mapping alive, so a segment that
//!   retention unlinks stays readable until the last view is dropped.
//! - [`MutFile`]: a consume-queue or index file owned behind a `Mutex`; plain `&mut [u8]`
//!   access, or `pwrite` through the file (appends' consume-queue and index entries, the
//!   index's slot table).
//!
//! Every file is preallocated with `posix_fallocate` before it is mapped, so a full disk is an
//! `ENOSPC` error when the file is created, never a `SIGBUS` when a page is first written.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::{MmapMut, MmapRaw};

use crate::journal;

/// Creates `path` with exactly `n_bytes` of allocated, zeroed space. The file is built under a
/// temporary name and renamed into place, so a crash never leaves a half-allocated file under
/// the real name.
fn create_preallocated(path: &Path, n_bytes: u64) -> io::Result<File> {
    let tmp = path.with_extension("tmp");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    let len = libc::off_t::try_from(n_bytes).map_err(|_| io::Error::other("file too large"))?;
    // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::from_raw_os_error(rc));
    }
    // The allocation (the file's size) is made durable before the name: after a power loss the
    // file is either absent or whole, never present and shorter than its mapping.
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent_dir(path)?;
    Ok(file)
}

const MADV_POPULATE_READ: libc::c_int = 22;
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Faults in the pages of `[from, to)` of a mapping at `base` of `len` bytes with one
/// `madvise` (`MADV_POPULATE_READ`: map the file's pages; `MADV_POPULATE_WRITE`: also make them
/// writable, allocating and zeroing fresh ones). Neither changes contents. Best effort: a kernel
/// without them (before 5.14) leaves the pages to fault one by one.
///
/// # Safety
/// `base` must be the page-aligned start of a live mapping of at least `len` bytes that stays
/// mapped for the call.
unsafe fn populate(base: *mut u8, len: usize, from: usize, to: usize, advice: libc::c_int, path: &Path) {
    const PAGE_BYTES: usize = 4096;
    let start = (from / PAGE_BYTES * PAGE_BYTES).min(len);
    let end = to.min(len);
    if start >= end {
        return;
    }
    // SAFETY: [start, end) is page-aligned at its start and lies within the live mapping of
    // `len` bytes at `base` (the caller's contract); these advices never change contents.
    let rc = unsafe { libc::madvise(base.add(start).cast(), end - start, advice) };
    if rc != 0 {
        tracing::debug!(path = %path.display(), advice, "MADV_POPULATE_* unsupported; pages fault in one by one");
    }
}

/// A file offset as a mapping index (segments are far below `usize::MAX`).
fn clamp(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

/// Makes a file's creation, rename or removal durable.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn open_existing(path: &Path, n_bytes_expected: u64) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let n_bytes = file.metadata()?.len();
    if n_bytes != n_bytes_expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is {n_bytes} bytes, expected {n_bytes_expected}", path.display()),
        ));
    }
    Ok(file)
}

/// Zeroes `[offset, offset + len)` of `file` on disk with `FALLOC_FL_PUNCH_HOLE` followed by a
/// new allocation (cheap metadata operations), falling back to writing zeros. Mappings of the
/// file see zeros afterwards.
fn zero_file_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (o, l) = (offset as libc::off_t, len as libc::off_t);
    // SAFETY: plain syscalls on a file descriptor we own; no memory is passed.
    let punched = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, o, l) } == 0;
    if punched {
        // SAFETY: as above.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), o, l) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok(());
    }
    use std::os::unix::fs::FileExt;
    const ZEROS_BYTES: usize = 1 << 20;
    let zeros = vec![0u8; ZEROS_BYTES];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let n = usize::try_from(end - at).unwrap_or(ZEROS_BYTES).min(ZEROS_BYTES);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// A commit-log segment: one preallocated file mapped shared, written by one writer, read by many.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    /// One bit per [`MAP_CHUNK_BYTES`] chunk that [`LogFile::map_in`] mapped in whole (and
    /// no drop-behind has unmapped since), so readers do not walk its pages again.
    mapped: Box<[AtomicU64]>,
}

/// Granularity of [`LogFile::map_in`]'s bookkeeping.
const MAP_CHUNK_BYTES: u64 = 2 << 20;

fn chunk_bits(n_bytes: u64) -> Box<[AtomicU64]> {
    (0..n_bytes.div_ceil(MAP_CHUNK_BYTES).div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

/// Checks a mapping's `advise(Advice::Random)`, which turns off the kernel's read-around for
/// its faults: a fault near the end of what has been written would read ahead a whole
/// `read_ahead_kb` window (8 MiB here) of preallocated, never-written blocks, zero-filling
/// fresh page-cache pages for tens of milliseconds inside a reader's or the appender's call. Reads that want
/// readahead ask for their exact range ([`LogFile::map_in`]).
fn no_read_around(advised: io::Result<()>, path: &Path) -> io::Result<()> {
    advised.map_err(|e| io::Error::new(e.kind(), format!("madvise(MADV_RANDOM) {}: {e}", path.display())))
}

impl LogFile {
    pub(crate) fn create(path: &Path, n_bytes: u64) -> io::Result<Self> {
        let file = create_preallocated(path, n_bytes)?;
        let map = MmapRaw::map_raw(&file)?;
        no_read_around(map.advise(memmap2::Advice::Random), path)?;
        Ok(Self { path: path.to_owned(), file, map, mapped: chunk_bits(n_bytes) })
    }

    pub(crate) fn open(path: &Path, n_bytes: u64) -> io::Result<Self> {
        let file = open_existing(path, n_bytes)?;
        let map = MmapRaw::map_raw(&file)?;
        no_read_around(map.advise(memmap2::Advice::Random), path)?;
        Ok(Self { path: path.to_owned(), file, map, mapped: chunk_bits(n_bytes) })
    }

    /// Faults in the pages from `from` up to `to` (bytes from the segment's start) ahead of the
    /// writer, on a background thread: a first touch of a fresh page (allocate, zero, make
    /// writable) costs several times a warm write. The pages become dirty, so flushes use
    /// [`LogFile::sync_range`], which writes only the range written, not the zeros ahead.
    /// (Read-faulting instead was measured slower: each first store then takes a fault.)
    /// Safe while the writer works on the same range: populating never changes contents.
    pub(crate) fn populate_to(&self, from: u64, to: u64) {
        // SAFETY: our own mapping, alive as long as self.
        unsafe { populate(self.map.as_mut_ptr(), self.map.len(), clamp(from), clamp(to), MADV_POPULATE_WRITE, &self.path) };
    }

    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data` at `offset` through the file (`pwrite`), not the mapping: the page cache
    /// is shared, so mapped readers see the bytes once this returns. A page the write covers
    /// whole is filled by the copy itself, where a first store through the mapping makes the
    /// kernel zero a fresh page first: on this kind of VM that zeroing was a third of the
    /// writer's CPU.
    ///
    /// # Safety
    /// No reader may be reading `[offset, offset + data.len())` and no other writer writing it:
    /// the range must lie past the store's published end offset, and the caller must hold the
    /// store's writer lock (or own the file exclusively, as during recovery).
    pub(crate) unsafe fn write_through_file(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        assert!(offset.checked_add(data.len() as u64).is_some_and(|end| end <= self.len()), "write past end of segment");
        journal::write(&self.path, offset, data.len() as u64, || self.file.write_all_at(data, offset))
    }

    /// Maps the pages of `[from, to)` into the mapping (reading them from the file if they are
    /// not cached), so a reader about to walk the range does not take a page fault per page:
    /// appends write through the file, so fresh pages are cached but not yet mapped. Works in
    /// whole 2 MiB chunks below `written` (the segment's published end), each mapped in once:
    /// readers of different queues walk overlapping spans of the log, and asking the kernel
    /// again for pages already mapped cost as much as the first time.
    pub(crate) fn map_in(&self, from: u64, to: u64, written: u64) {
        let populate_range = |a: u64, b: u64| {
            // SAFETY: our own mapping, alive as long as self.
            unsafe { populate(self.map.as_mut_ptr(), self.map.len(), clamp(a), clamp(b), MADV_POPULATE_READ, &self.path) };
        };
        let to = to.min(written).min(self.len());
        if from >= to {
            return;
        }
        for chunk in from / MAP_CHUNK_BYTES..=(to - 1) / MAP_CHUNK_BYTES {
            let (word, bit) = (&self.mapped[(chunk / 64) as usize], 1u64 << (chunk % 64));
            if word.load(Ordering::Relaxed) & bit != 0 {
                continue;
            }
            let (start, end) = (chunk * MAP_CHUNK_BYTES, (chunk + 1) * MAP_CHUNK_BYTES);
            if end <= written {
                // A whole written chunk may have left the page cache: read it in with large
                // reads (the mapping itself reads around nothing). Cached pages cost a lookup.
                // SAFETY: plain syscall on our descriptor; no memory is passed.
                unsafe { libc::posix_fadvise(self.file.as_raw_fd(), start as i64, MAP_CHUNK_BYTES as i64, libc::POSIX_FADV_WILLNEED) };
                populate_range(start, end);
                word.fetch_or(bit, Ordering::Relaxed);
            } else {
                // The chunk is still being written: map in just what is asked.
                populate_range(from.max(start), to);
            }
        }
    }

    /// Fills `[offset, offset + len)` in place through the mapping with `fill`.
    ///
    /// # Safety
    /// As for [`LogFile::write_through_file`].
    pub(crate) unsafe fn fill_in_place(&self, offset: u64, len: usize, fill: impl FnOnce(&mut [u8])) {
        let off = usize::try_from(offset).expect("offset fits in usize");
        assert!(off.checked_add(len).is_some_and(|end| end <= self.map.len()), "slice past end of segment");
        let _ = journal::write(&self.path, offset, len as u64, || {
            // SAFETY: in bounds; exclusive per the caller's contract, for the duration of `fill`.
            fill(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(off), len) });
            Ok(())
        });
    }

    /// Reads `[offset, offset + len)`.
    ///
    /// # Safety
    /// The range must not be written while the returned slice lives: it must lie below the
    /// store's published end offset (published bytes are never rewritten while the store is
    /// shared), or the caller must own the file exclusively.
    pub(crate) unsafe fn slice(&self, offset: u64, len: usize) -> &[u8] {
        let off = usize::try_from(offset).expect("offset fits in usize");
        assert!(off.checked_add(len).is_some_and(|end| end <= self.map.len()), "read past end of segment");
        // SAFETY: in bounds; stable per the caller's contract.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(off), len) }
    }

    /// A zero-copy view of `[offset, offset + len)` that keeps the mapping alive.
    ///
    /// # Safety
    /// As for [`LogFile::slice`], for as long as any clone of the returned `Bytes` lives.
    pub(crate) unsafe fn bytes(self: &Arc<Self>, offset: u64, len: usize) -> Bytes {
        let off = usize::try_from(offset).expect("offset fits in usize");
        assert!(off.checked_add(len).is_some_and(|end| end <= self.map.len()), "read past end of segment");
        Bytes::from_owner(LogView { file: Arc::clone(self), off, len })
    }

    /// Makes everything written so far durable (`fdatasync`, which also writes back pages
    /// dirtied through the mapping; measured here ~3x faster than `msync`).
    pub(crate) fn sync(&self) -> io::Result<()> {
        journal::sync(&self.path, 0, u64::MAX, || self.file.sync_data())
    }

    /// Makes `[from, to)` durable: `msync(MS_SYNC)` of the range, which on Linux writes back
    /// only that range's dirty pages and flushes the device cache (`vfs_fsync_range` with
    /// datasync), so pre-touched zero pages past the writer are not written out each time.
    pub(crate) fn sync_range(&self, from: u64, to: u64) -> io::Result<()> {
        const PAGE_BYTES: u64 = 4096;
        let start = from / PAGE_BYTES * PAGE_BYTES;
        let end = to.min(self.len());
        if start >= end {
            return Ok(());
        }
        journal::sync(&self.path, start, end, || self.map.flush_range(start as usize, (end - start) as usize))
    }

    /// Lets the kernel drop the cached pages of `[from, to)` (page-aligned inward), which must
    /// be flushed, so nothing is lost: reads fault the bytes back in from the file. Freed
    /// page-cache pages are reused warm by the next appends, instead of memory the guest must
    /// first fetch from its host.
    pub(crate) fn drop_cache(&self, from: u64, to: u64) {
        const PAGE_BYTES: u64 = 4096;
        let start = from.div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let end = to.min(self.len()) / PAGE_BYTES * PAGE_BYTES;
        if start >= end {
            return;
        }
        let len = (end - start) as usize;
        for chunk in start / MAP_CHUNK_BYTES..=(end - 1) / MAP_CHUNK_BYTES {
            self.mapped[(chunk / 64) as usize].fetch_and(!(1u64 << (chunk % 64)), Ordering::Relaxed);
        }
        // SAFETY: the range lies inside our live mapping. For a shared file mapping,
        // MADV_DONTNEED only removes page-table entries: the contents stay in the file and any
        // later access (a reader's view included) sees the same bytes.
        let rc = unsafe { libc::madvise(self.map.as_mut_ptr().add(start as usize).cast(), len, libc::MADV_DONTNEED) };
        // SAFETY: plain syscall on our descriptor; no memory is passed.
        let rc2 = unsafe { libc::posix_fadvise(self.file.as_raw_fd(), start as i64, len as i64, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 || rc2 != 0 {
            tracing::debug!(path = %self.path.display(), "could not drop a segment's cached pages");
        }
    }

    /// Zeroes `[offset, len)`, on disk and in the mapping.
    ///
    /// # Safety
    /// As for [`LogFile::write_through_file`] over the zeroed range.
    pub(crate) unsafe fn zero_from(&self, offset: u64) -> io::Result<()> {
        journal::write(&self.path, offset, self.len() - offset, || zero_file_range(&self.file, offset, self.len() - offset))?;
        self.sync()
    }
}

/// Owner of a zero-copy view into a log segment.
struct LogView {
    file: Arc<LogFile>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for LogView {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: bounds were checked when the view was made; the bytes are below the published
        // end offset and never rewritten while the store is shared (contract of LogFile::bytes).
        unsafe { std::slice::from_raw_parts(self.file.map.as_ptr().add(self.off), self.len) }
    }
}

/// A consume-queue or index file: preallocated, mapped, and owned behind a lock.
#[derive(Debug)]
pub(crate) struct MutFile {
    path: PathBuf,
    file: Arc<File>,
    map: MmapMut,
}

impl MutFile {
    pub(crate) fn create(path: &Path, n_bytes: u64) -> io::Result<Self> {
        let file = create_preallocated(path, n_bytes)?;
        Self::map(path, file)
    }

    pub(crate) fn open(path: &Path, n_bytes: u64) -> io::Result<Self> {
        let file = open_existing(path, n_bytes)?;
        Self::map(path, file)
    }

    fn map(path: &Path, file: File) -> io::Result<Self> {
        // SAFETY: the file belongs to this store (the store's directory is locked against other
        // processes with flock), is never truncated while mapped, and all access to the mapping
        // goes through this value, which its owner keeps behind a Mutex.
        let map = unsafe { MmapMut::map_mut(&file)? };
        no_read_around(map.advise(memmap2::Advice::Random), path)?;
        Ok(Self { path: path.to_owned(), file: Arc::new(file), map })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Stores `data` at `offset` through the mapping.
    pub(crate) fn store(&mut self, offset: usize, data: &[u8]) {
        let map = &mut self.map;
        let _ = journal::write(&self.path, offset as u64, data.len() as u64, || {
            map[offset..offset + data.len()].copy_from_slice(data);
            Ok(())
        });
    }

    /// Writes `data` at `offset` through the file (`pwrite`): the shared mapping sees it, and
    /// no page of the mapping becomes writable or dirty.
    pub(crate) fn write_at(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        assert!(offset.checked_add(data.len()).is_some_and(|end| end <= self.map.len()), "write past end of file");
        journal::write(&self.path, offset as u64, data.len() as u64, || self.file.write_all_at(data, offset as u64))
    }

    /// Asks the kernel to bring `[from, to)` into the page cache in the background
    /// (`POSIX_FADV_WILLNEED`; preallocated, never-written blocks come in as zeros without disk
    /// reads), so a later large `pwrite` over the range copies into pages that exist instead of
    /// allocating them inside the write.
    pub(crate) fn will_need(&self, from: usize, to: usize) {
        let len = to.min(self.map.len()).saturating_sub(from);
        // SAFETY: plain syscall on our descriptor; no memory is passed.
        let rc = unsafe { libc::posix_fadvise(self.file.as_raw_fd(), from as libc::off_t, len as libc::off_t, libc::POSIX_FADV_WILLNEED) };
        if rc != 0 {
            tracing::debug!(path = %self.path.display(), "POSIX_FADV_WILLNEED refused");
        }
    }

    /// A handle for `fdatasync` without holding the owner's lock.
    pub(crate) fn sync_handle(&self) -> SyncHandle {
        SyncHandle { path: self.path.clone(), file: Arc::clone(&self.file) }
    }

    /// Zeroes `[offset, len)` in the mapping (the file follows through the shared mapping).
    pub(crate) fn zero_from(&mut self, offset: usize) {
        let map = &mut self.map;
        let _ = journal::write(&self.path, offset as u64, (map.len() - offset) as u64, || {
            map[offset..].fill(0);
            Ok(())
        });
    }
}

/// A consume-queue or index file to `fdatasync` outside its owner's lock.
#[derive(Debug, Clone)]
pub(crate) struct SyncHandle {
    path: PathBuf,
    file: Arc<File>,
}

impl SyncHandle {
    /// `fdatasync`: everything written to the file so far is durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        journal::sync(&self.path, 0, u64::MAX, || self.file.sync_data())
    }

    pub(crate) fn same_file(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
    }
}
