//! Memory-mapped files: the only module of the store with `unsafe`.
//!
//! Two kinds of mapping:
//! - [`LogFile`]: a commit-log segment shared between one writer and many readers. It hands out
//!   raw access; the contract (below) is that the writer only writes bytes past the store's
//!   published end offset and readers only read bytes below it, so no byte is ever read and
//!   written at once. Readers get [`Bytes`] views that keep the mapping alive, so a segment that
//!   retention unlinks stays readable until the last view is dropped.
//! - [`MutFile`]: a consume-queue or index file owned behind a `Mutex`; plain `&mut [u8]` access.
//!
//! Every file is preallocated with `posix_fallocate` before it is mapped, so a full disk is an
//! `ENOSPC` error when the file is created, never a `SIGBUS` when a page is first written.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{MmapMut, MmapRaw};

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
    std::fs::rename(&tmp, path)?;
    sync_parent_dir(path)?;
    Ok(file)
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
}

impl LogFile {
    pub(crate) fn create(path: &Path, n_bytes: u64) -> io::Result<Self> {
        let file = create_preallocated(path, n_bytes)?;
        let map = MmapRaw::map_raw(&file)?;
        Ok(Self { path: path.to_owned(), file, map })
    }

    pub(crate) fn open(path: &Path, n_bytes: u64) -> io::Result<Self> {
        let file = open_existing(path, n_bytes)?;
        let map = MmapRaw::map_raw(&file)?;
        Ok(Self { path: path.to_owned(), file, map })
    }

    /// Faults in the pages from `from` up to `to` (bytes from the segment's start) ahead of the
    /// writer, on a background thread: a first touch of a fresh page (allocate, zero, make
    /// writable) costs several times a warm write. The pages become dirty, so flushes use
    /// [`LogFile::sync_range`], which writes only the range written, not the zeros ahead.
    /// (Read-faulting instead was measured slower: each first store then takes a fault.)
    /// Safe while the writer works on the same range: populating never changes contents.
    pub(crate) fn populate_to(&self, from: u64, to: u64) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        const PAGE_BYTES: u64 = 4096;
        let start = (from / PAGE_BYTES * PAGE_BYTES).min(self.len());
        let end = to.min(self.len());
        if start >= end {
            return;
        }
        // SAFETY: [start, end) is page-aligned at its start and lies within our own live
        // mapping; MADV_POPULATE_WRITE only faults pages in and never changes their contents.
        let rc = unsafe { libc::madvise(self.map.as_mut_ptr().add(start as usize).cast(), (end - start) as usize, MADV_POPULATE_WRITE) };
        if rc != 0 {
            tracing::debug!(path = %self.path.display(), "MADV_POPULATE_WRITE unsupported; segment not pre-touched");
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Copies `data` into the mapping at `offset`.
    ///
    /// # Safety
    /// No reader may be reading `[offset, offset + data.len())` and no other writer writing it:
    /// the range must lie past the store's published end offset, and the caller must hold the
    /// store's writer lock (or own the file exclusively, as during recovery).
    pub(crate) unsafe fn write(&self, offset: u64, data: &[u8]) {
        let off = usize::try_from(offset).expect("offset fits in usize");
        assert!(off.checked_add(data.len()).is_some_and(|end| end <= self.map.len()), "write past end of segment");
        // SAFETY: in bounds (checked above); exclusive per the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(off), data.len()) };
    }

    /// Copies `data` into the mapping at `offset` with non-temporal (streaming) stores, which
    /// write whole cache lines without first reading them from memory: appends touch each log
    /// byte once, so reading the just-zeroed destination into the cache would only double the
    /// memory traffic. Ends with a store fence, so the bytes are visible before the caller
    /// publishes them.
    ///
    /// # Safety
    /// As for [`LogFile::write`].
    pub(crate) unsafe fn write_streaming(&self, offset: u64, data: &[u8]) {
        let off = usize::try_from(offset).expect("offset fits in usize");
        assert!(off.checked_add(data.len()).is_some_and(|end| end <= self.map.len()), "write past end of segment");
        // SAFETY: in bounds (checked above); exclusive per the caller's contract.
        unsafe { copy_streaming(self.map.as_mut_ptr().add(off), data) };
    }

    /// A mutable view of `[offset, offset + len)` for encoding a record in place.
    ///
    /// # Safety
    /// As for [`LogFile::write`]; the view must be dropped before the range is published.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, offset: u64, len: usize) -> &mut [u8] {
        let off = usize::try_from(offset).expect("offset fits in usize");
        assert!(off.checked_add(len).is_some_and(|end| end <= self.map.len()), "slice past end of segment");
        // SAFETY: in bounds; exclusive per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(off), len) }
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
        self.file.sync_data()
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
        self.map.flush_range(start as usize, (end - start) as usize)
    }

    /// Lets the kernel drop this segment's pages from memory (they are flushed, so nothing is
    /// lost): reads fault them back in from the file. Freed page-cache pages are reused warm by
    /// the next segment, instead of memory the guest must first fetch from its host.
    pub(crate) fn drop_cache(&self) {
        // SAFETY: the range is exactly our live mapping. For a shared file mapping,
        // MADV_DONTNEED only removes page-table entries: the contents stay in the file and any
        // later access (a reader's view included) sees the same bytes.
        let rc = unsafe { libc::madvise(self.map.as_mut_ptr().cast(), self.map.len(), libc::MADV_DONTNEED) };
        // SAFETY: plain syscall on our descriptor; no memory is passed.
        let rc2 = unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 || rc2 != 0 {
            tracing::debug!(path = %self.path.display(), "could not drop a segment's cached pages");
        }
    }

    /// Zeroes `[offset, len)`, on disk and in the mapping.
    ///
    /// # Safety
    /// As for [`LogFile::write`] over the zeroed range.
    pub(crate) unsafe fn zero_from(&self, offset: u64) -> io::Result<()> {
        zero_file_range(&self.file, offset, self.len() - offset)?;
        self.file.sync_data()
    }
}

/// `memcpy` with streaming stores for the 16-byte-aligned middle.
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes of writes and not overlap `src`.
#[cfg(target_arch = "x86_64")]
unsafe fn copy_streaming(dst: *mut u8, src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    let n = src.len();
    let head = dst.align_offset(16).min(n);
    // SAFETY: all ranges below lie within dst[..n] and src[..n], which the caller guarantees
    // valid and disjoint; stream stores go to 16-byte-aligned addresses (dst + head is aligned
    // and i advances by 16); SSE2 is part of the x86_64 baseline.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, head);
        let mut i = head;
        while i + 16 <= n {
            _mm_stream_si128(dst.add(i).cast::<__m128i>(), _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>()));
            i += 16;
        }
        std::ptr::copy_nonoverlapping(src.as_ptr().add(i), dst.add(i), n - i);
        _mm_sfence();
    }
}

/// # Safety
/// As for the x86_64 version.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn copy_streaming(dst: *mut u8, src: &[u8]) {
    // SAFETY: the caller guarantees dst valid for src.len() bytes and disjoint from src.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
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
        Ok(Self { path: path.to_owned(), file: Arc::new(file), map })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// A handle for `fdatasync` without holding the owner's lock.
    pub(crate) fn sync_handle(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Zeroes `[offset, len)` in the mapping (the file follows through the shared mapping).
    pub(crate) fn zero_from(&mut self, offset: usize) {
        self.map[offset..].fill(0);
    }
}
