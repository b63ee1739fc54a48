//! The audit log: one JSON line per admin change and per refused request — who, from where,
//! what, on what, and the result — in `audit.log`, rotated past [`AUDIT_FILE_BYTES_MAX`] into
//! `audit.log.1` … (the oldest of [`AUDIT_FILES_KEPT`] dropped), readable back newest first.
//! Lines never carry a secret: callers give names, actions and results only.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Size at which `audit.log` is rotated.
pub const AUDIT_FILE_BYTES_MAX: u64 = 16 << 20;
/// Files kept: `audit.log` and this many minus one rotated ones.
pub const AUDIT_FILES_KEPT: usize = 4;
/// Most events one read returns.
pub const AUDIT_READ_MAX: usize = 10_000;
/// The log's file name.
const FILE: &str = "audit.log";

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at_ms: u64,
    /// The user (`anonymous`, or a configured token's name).
    pub user: String,
    /// The client's address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `native`, `grpc` or `admin`.
    pub via: String,
    /// What was asked: an action (`produce`, …) or an admin request (`POST /api/v1/users`).
    pub what: String,
    /// What it was asked on (`topic orders`, a path).
    pub resource: String,
    /// `ok`, `denied: …`, or `failed: …` (an admin request's error status and text).
    pub result: String,
}

#[derive(Debug)]
pub struct AuditLog {
    dir: Option<PathBuf>,
    file: Mutex<Option<(File, u64)>>,
    file_bytes_max: u64,
}

impl AuditLog {
    /// The log in `dir` (created if missing).
    ///
    /// # Errors
    /// The directory or file cannot be made or opened.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        Self::open_with(dir, AUDIT_FILE_BYTES_MAX)
    }

    fn open_with(dir: &Path, file_bytes_max: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = open_append(&dir.join(FILE))?;
        let len = file.metadata()?.len();
        Ok(Self { dir: Some(dir.to_owned()), file: Mutex::new(Some((file, len))), file_bytes_max })
    }

    /// A log that keeps nothing (tests, tools).
    #[must_use]
    pub fn disabled() -> Self {
        Self { dir: None, file: Mutex::new(None), file_bytes_max: AUDIT_FILE_BYTES_MAX }
    }

    /// Appends `e` (a failure to write is logged, not returned: the request goes on).
    pub fn record(&self, e: &AuditEvent) {
        let Some(dir) = &self.dir else { return };
        let mut line = serde_json::to_vec(e).unwrap_or_default();
        line.push(b'\n');
        let mut guard = crate::lock(&self.file);
        let written = (|| -> std::io::Result<()> {
            if guard.as_ref().is_none_or(|(_, len)| *len + line.len() as u64 > self.file_bytes_max) {
                *guard = None;
                rotate(dir)?;
                *guard = Some((open_append(&dir.join(FILE))?, 0));
            }
            let (file, len) = guard.as_mut().expect("opened above");
            file.write_all(&line)?;
            *len += line.len() as u64;
            Ok(())
        })();
        if let Err(err) = written {
            tracing::warn!(error = %err, dir = %dir.display(), "writing the audit log failed");
        }
    }

    /// The newest events first, at most `limit` (and [`AUDIT_READ_MAX`]), from every kept file.
    #[must_use]
    pub fn recent(&self, limit: usize) -> Vec<AuditEvent> {
        let Some(dir) = &self.dir else { return Vec::new() };
        let limit = limit.min(AUDIT_READ_MAX);
        let _writing = crate::lock(&self.file);
        let mut out = Vec::new();
        for i in 0..AUDIT_FILES_KEPT {
            let Ok(f) = File::open(path_of(dir, i)) else { continue };
            let mut events: Vec<AuditEvent> =
                BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect();
            events.reverse();
            out.extend(events);
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        out
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn path_of(dir: &Path, i: usize) -> PathBuf {
    if i == 0 { dir.join(FILE) } else { dir.join(format!("{FILE}.{i}")) }
}

/// `audit.log.N-1` → `.N` … `audit.log` → `.1`; the oldest is overwritten.
fn rotate(dir: &Path) -> std::io::Result<()> {
    for i in (0..AUDIT_FILES_KEPT - 1).rev() {
        let from = path_of(dir, i);
        if from.exists() {
            std::fs::rename(&from, path_of(dir, i + 1))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            at_ms: n as u64,
            user: "alice".into(),
            from: Some("10.0.0.1".into()),
            via: "admin".into(),
            what: "POST /api/v1/users".into(),
            resource: "/api/v1/users".into(),
            result: "ok".into(),
        }
    }

    #[test]
    fn events_are_read_back_newest_first_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        const MAX: u64 = 4096;
        let log = AuditLog::open_with(dir.path(), MAX).unwrap();
        let per_file = (MAX / (serde_json::to_vec(&event(0)).unwrap().len() as u64 + 1)) as usize;
        let n = per_file * (AUDIT_FILES_KEPT + 1);
        for i in 0..n {
            log.record(&event(i));
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, AUDIT_FILES_KEPT, "rotated, the oldest dropped");
        for f in std::fs::read_dir(dir.path()).unwrap() {
            assert!(f.unwrap().metadata().unwrap().len() <= MAX);
        }
        let recent = log.recent(3);
        assert_eq!(recent.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [n as u64 - 1, n as u64 - 2, n as u64 - 3]);
        // Reopened, it appends to the same file.
        drop(log);
        let log = AuditLog::open_with(dir.path(), MAX).unwrap();
        log.record(&event(n));
        assert_eq!(log.recent(1)[0].at_ms, n as u64);
        assert!(AuditLog::disabled().recent(10).is_empty());
    }
}
