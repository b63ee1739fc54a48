//! Time as an argument: the store asks a [`Clock`] for wall-clock milliseconds (store
//! timestamps, retention ages), so tests can move time by hand.

use std::sync::atomic::{AtomicU64, Ordering};

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        Self { now_ms: AtomicU64::new(now_ms) }
    }

    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// How full the file system holding the store is, as a ratio in `[0, 1]`.
pub trait DiskProbe: Send + Sync + std::fmt::Debug {
    /// # Errors
    /// When the file system cannot be asked (`statvfs` failed).
    fn used_ratio(&self, path: &std::path::Path) -> std::io::Result<f64>;
}

/// Asks the file system with `statvfs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatvfsProbe;

impl DiskProbe for StatvfsProbe {
    fn used_ratio(&self, path: &std::path::Path) -> std::io::Result<f64> {
        let d = disk_space(path)?;
        let usable = d.used_bytes + d.available_bytes;
        if usable == 0 {
            return Ok(0.0);
        }
        Ok(d.used_bytes as f64 / usable as f64)
    }
}

/// The size of a file system and how much of it is in use, as `df` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// What unprivileged writers may still use (space reserved for root not included).
    pub available_bytes: u64,
}

/// Asks the file system holding `path` with `statvfs`.
///
/// # Errors
/// When `statvfs` fails (the path does not exist, …).
pub fn disk_space(path: &std::path::Path) -> std::io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and st points to writable memory of
    // the right type; statvfs fills it on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let (frsize, blocks, free, avail) = (st.f_frsize as u64, st.f_blocks as u64, st.f_bfree as u64, st.f_bavail as u64);
    // As df's Use%: blocks in use over blocks usable by us (in use + available), so space
    // reserved for root or held back by the device does not count as used.
    Ok(DiskSpace { total_bytes: blocks * frsize, used_bytes: blocks.saturating_sub(free) * frsize, available_bytes: avail * frsize })
}
