//! The I/O journal, for power-loss tests. SIGKILL keeps the page cache, so a test that only
//! kills the process cannot tell a store that fsyncs before it acknowledges from one that does
//! not. When [`JOURNAL_ENV`] names a file, the store records there every write to its files
//! and every completed sync, so that a test can destroy exactly what a power loss could:
//!
//! - `W <id> <offset> <len> <path>` before a write of `[offset, offset + len)` of `path`, and
//!   `D <id>` once it is done;
//! - `B <id> <from> <to> <path>` before a sync of `[from, to)` of `path` (`to` is
//!   `u64::MAX` for the whole file), and `S <id>` once it completed: writes done before its `B`
//!   within the range are durable;
//! - `R <from>\t<to>` once a rename is durable (its directory synced).
//!
//! Each line is one `write` to a file opened with `O_APPEND`, made before (or after) the I/O it
//! describes, so a process killed at any instant leaves a journal that tells which bytes may
//! not be on disk: those of writes with no `D`, or with no completed sync since. Unset, as in
//! production, the journal costs one load per write or sync.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the journal file.
pub const JOURNAL_ENV: &str = "WASMQ_IO_JOURNAL";

static JOURNAL: OnceLock<Option<File>> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn journal() -> Option<&'static File> {
    JOURNAL
        .get_or_init(|| {
            let path = std::env::var_os(JOURNAL_ENV)?;
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => Some(f),
                // A test asked for the journal and would check nothing without it.
                Err(e) => panic!("{JOURNAL_ENV}={}: {e}", Path::new(&path).display()),
            }
        })
        .as_ref()
}

fn line(mut f: &File, text: &str) {
    // One `write` per line: with O_APPEND, lines of concurrent threads never interleave.
    if let Err(e) = f.write_all(text.as_bytes()) {
        panic!("{JOURNAL_ENV}: {e}");
    }
}

/// Runs `io`, a write of `[offset, offset + len)` of `path`, journaled.
pub(crate) fn write<T>(path: &Path, offset: u64, len: u64, io: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let Some(f) = journal() else { return io() };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    line(f, &format!("W {id} {offset} {len} {}\n", path.display()));
    let r = io();
    if r.is_ok() {
        line(f, &format!("D {id}\n"));
    }
    r
}

/// Runs `io`, a sync of `[from, to)` of `path` (`to` = `u64::MAX`: the whole file), journaled.
pub(crate) fn sync<T>(path: &Path, from: u64, to: u64, io: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let Some(f) = journal() else { return io() };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    line(f, &format!("B {id} {from} {to} {}\n", path.display()));
    let r = io();
    if r.is_ok() {
        line(f, &format!("S {id}\n"));
    }
    r
}

/// Records that `from` was renamed to `to` and the rename is durable.
pub(crate) fn renamed(from: &Path, to: &Path) {
    if let Some(f) = journal() {
        line(f, &format!("R {}\t{}\n", from.display(), to.display()));
    }
}

/// Replaces `path` with `bytes` so that it is always either the old or the new version: a
/// temporary file written and fsynced, renamed over `path`, the directory fsynced.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    write(&tmp, 0, bytes.len() as u64, || f.write_all(bytes))?;
    sync(&tmp, 0, u64::MAX, || f.sync_all())?;
    std::fs::rename(&tmp, path)?;
    crate::mmap::sync_parent_dir(path)?;
    renamed(&tmp, path);
    Ok(())
}
