//! Power loss, simulated from the store's I/O journal (`wasmq_store::JOURNAL_ENV`; its format
//! is documented in the store's `journal.rs`).
//!
//! A process killed with SIGKILL leaves its writes in the page cache, where a power loss would
//! lose whatever was not yet fsynced. The journal tells which bytes those are: every write that
//! did not finish, or finished but was not covered by a sync that completed afterwards. After
//! the kill, [`lose_power`] destroys exactly those bytes, as a power loss may: zeroed, garbled,
//! torn in 512-byte sectors, or (the write made it to the disk after all) kept. A store that
//! acknowledges a write before its fsync completes then loses acknowledged data here, where a
//! plain SIGKILL hides it.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::Rng;

/// A byte range of a file that a power loss at the moment of the kill may have destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsynced {
    pub path: PathBuf,
    pub from: u64,
    pub to: u64,
}

/// What a power loss does to one unsynced range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Damage {
    /// The write reached the disk after all.
    Kept,
    Zeroed,
    Garbled,
    /// Each 512-byte sector (of the file) kept or garbled at random.
    Torn,
}

impl Damage {
    const ALL: [Damage; 4] = [Damage::Kept, Damage::Zeroed, Damage::Garbled, Damage::Torn];
}

/// How damage is chosen for each range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Independently at random for each range, any of [`Damage`].
    Random,
    /// The same for every range.
    All(Damage),
}

/// What [`lose_power`] did.
#[derive(Debug, Default)]
pub struct PowerLoss {
    /// Ranges, by what was done to them.
    pub ranges: HashMap<Damage, usize>,
    /// Which kinds of store file had bytes destroyed: "commit log", "consume queue",
    /// "index", "checkpoint".
    pub files: std::collections::BTreeSet<&'static str>,
    /// Bytes in ranges destroyed.
    pub bytes: u64,
    /// Lines of the journal (writes and syncs recorded).
    pub journal_lines: usize,
}

impl std::fmt::Display for PowerLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |d| self.ranges.get(&d).copied().unwrap_or(0);
        write!(
            f,
            "{} bytes destroyed in {:?} ({} ranges zeroed, {} garbled, {} torn, {} kept) of {} journal lines",
            self.bytes,
            self.files,
            n(Damage::Zeroed),
            n(Damage::Garbled),
            n(Damage::Torn),
            n(Damage::Kept),
            self.journal_lines
        )
    }
}

struct Write {
    path: PathBuf,
    /// What is left of the write not yet known durable: pieces of its range.
    pieces: Vec<(u64, u64)>,
    done: bool,
}

/// Reads a journal and returns the ranges not known durable at its end, merged per file and
/// sorted.
///
/// # Panics
/// On a line that is not in the journal's format (but a last line cut short, which is ignored).
pub fn unsynced(journal: &str) -> Vec<Unsynced> {
    let mut writes: HashMap<u64, Write> = HashMap::new();
    // Syncs begun and not completed: path, range, and the writes done when they began.
    let mut syncs: HashMap<u64, (PathBuf, u64, u64, Vec<u64>)> = HashMap::new();
    let complete = journal.rfind('\n').map_or("", |end| &journal[..end]);
    for line in complete.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or_else(|| panic!("journal line {line:?}"));
        let num = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| panic!("journal line {line:?}")) };
        match kind {
            "W" | "B" => {
                let f: Vec<&str> = rest.splitn(4, ' ').collect();
                let [id, a, b, path] = f[..] else { panic!("journal line {line:?}") };
                let (id, a, b, path) = (num(id), num(a), num(b), PathBuf::from(path));
                if kind == "W" {
                    writes.insert(id, Write { path, pieces: vec![(a, a + b)], done: false });
                } else {
                    let covered = writes.iter().filter(|(_, w)| w.done && w.path == path).map(|(&id, _)| id).collect();
                    syncs.insert(id, (path, a, b, covered));
                }
            }
            "D" => {
                if let Some(w) = writes.get_mut(&num(rest)) {
                    w.done = true;
                }
            }
            "S" => {
                let Some((_, from, to, covered)) = syncs.remove(&num(rest)) else { continue };
                for id in covered {
                    let Some(w) = writes.get_mut(&id) else { continue };
                    w.pieces = w.pieces.iter().flat_map(|&(a, b)| subtract((a, b), (from, to))).collect();
                    if w.pieces.is_empty() {
                        writes.remove(&id);
                    }
                }
            }
            "R" => {
                let (from, to) = rest.split_once('\t').unwrap_or_else(|| panic!("journal line {line:?}"));
                for w in writes.values_mut().filter(|w| w.path == Path::new(from)) {
                    w.path = PathBuf::from(to);
                }
            }
            _ => panic!("journal line {line:?}"),
        }
    }
    let mut by_file: HashMap<PathBuf, Vec<(u64, u64)>> = HashMap::new();
    for w in writes.into_values() {
        by_file.entry(w.path).or_default().extend(w.pieces);
    }
    let mut out = Vec::new();
    for (path, mut pieces) in by_file {
        pieces.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in pieces {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        out.extend(merged.into_iter().filter(|(a, b)| a < b).map(|(from, to)| Unsynced { path: path.clone(), from, to }));
    }
    out.sort_by(|x, y| (&x.path, x.from).cmp(&(&y.path, y.from)));
    out
}

/// `a` without `b`: zero, one or two pieces.
fn subtract(a: (u64, u64), b: (u64, u64)) -> Vec<(u64, u64)> {
    if b.1 <= a.0 || b.0 >= a.1 {
        return vec![a];
    }
    let mut out = Vec::new();
    if a.0 < b.0 {
        out.push((a.0, b.0));
    }
    if b.1 < a.1 {
        out.push((b.1, a.1));
    }
    out
}

/// Destroys, as `mode` says, every range the journal at `journal` shows not yet durable (files
/// removed since are skipped; nothing is written past a file's end). Call it after the process
/// that wrote the journal was killed, before anything opens the store again; the journal is
/// then removed, so the next process starts a new one.
///
/// # Panics
/// An unreadable journal, a file that cannot be written.
pub fn lose_power(journal: &Path, mode: Mode, rng: &mut impl Rng) -> PowerLoss {
    let text = std::fs::read_to_string(journal).unwrap_or_else(|e| panic!("journal {}: {e}", journal.display()));
    let mut report = PowerLoss { journal_lines: text.lines().count(), ..PowerLoss::default() };
    for u in unsynced(&text) {
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&u.path) else { continue };
        let len = file.metadata().expect("metadata").len();
        let (from, to) = (u.from.min(len), u.to.min(len));
        if from >= to {
            continue;
        }
        let damage = match mode {
            Mode::Random => Damage::ALL[rng.random_range(0..Damage::ALL.len())],
            Mode::All(d) => d,
        };
        destroy(&file, from, to, damage, rng);
        *report.ranges.entry(damage).or_default() += 1;
        if damage != Damage::Kept {
            report.bytes += to - from;
            let dir = u.path.parent().and_then(Path::file_name).map(|d| d.to_string_lossy().into_owned());
            let kind = match dir.as_deref() {
                Some("commitlog") => "commit log",
                Some("index") => "index",
                _ if u.path.file_name().is_some_and(|n| n == "checkpoint") => "checkpoint",
                _ => "consume queue",
            };
            report.files.insert(kind);
        }
    }
    std::fs::remove_file(journal).expect("remove the journal");
    report
}

fn destroy(file: &std::fs::File, from: u64, to: u64, damage: Damage, rng: &mut impl Rng) {
    const SECTOR: u64 = 512;
    let mut at = from;
    while at < to {
        // Sector by sector, so a torn write keeps or loses whole sectors of the file.
        let end = ((at / SECTOR + 1) * SECTOR).min(to);
        let mut buf = vec![0u8; (end - at) as usize];
        let write = match damage {
            Damage::Kept => false,
            Damage::Zeroed => true,
            Damage::Garbled => {
                rng.fill(&mut buf[..]);
                true
            }
            Damage::Torn => {
                rng.fill(&mut buf[..]);
                rng.random_bool(0.5)
            }
        };
        if write {
            file.write_all_at(&buf, at).expect("damage a file");
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, from: u64, to: u64) -> Unsynced {
        Unsynced { path: PathBuf::from(path), from, to }
    }

    #[test]
    fn a_write_is_durable_only_once_a_sync_that_began_after_it_completed() {
        // Written and synced: nothing at risk.
        assert_eq!(unsynced("W 1 0 100 /f\nD 1\nB 2 0 18446744073709551615 /f\nS 2\n"), vec![]);
        // Written, sync begun but not completed (the kill came during the fsync).
        assert_eq!(unsynced("W 1 0 100 /f\nD 1\nB 2 0 18446744073709551615 /f\n"), vec![at("/f", 0, 100)]);
        // The write finished after the sync began: the sync may not cover it.
        assert_eq!(unsynced("W 1 0 100 /f\nB 2 0 18446744073709551615 /f\nD 1\nS 2\n"), vec![at("/f", 0, 100)]);
        // Never finished.
        assert_eq!(unsynced("W 1 0 100 /f\n"), vec![at("/f", 0, 100)]);
        // A sync of another file covers nothing here.
        assert_eq!(unsynced("W 1 0 100 /f\nD 1\nB 2 0 18446744073709551615 /g\nS 2\n"), vec![at("/f", 0, 100)]);
    }

    #[test]
    fn a_range_sync_covers_its_range_only() {
        let j = "W 1 0 4096 /log\nD 1\nW 3 4096 100 /log\nD 3\nB 2 1000 3000 /log\nS 2\n";
        assert_eq!(unsynced(j), vec![at("/log", 0, 1000), at("/log", 3000, 4196)]);
    }

    #[test]
    fn renames_carry_what_is_unsynced_and_a_cut_last_line_is_ignored() {
        assert_eq!(unsynced("W 1 0 36 /d/checkpoint.tmp\nD 1\nR /d/checkpoint.tmp\t/d/checkpoint\n"), vec![at("/d/checkpoint", 0, 36)]);
        assert_eq!(unsynced("W 1 0 10 /f\nD 1\nB 2 0 10 /f\nS 2\nW 3 10 5 /"), vec![]);
    }

    #[test]
    fn destroyed_ranges_change_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let (file, journal) = (dir.path().join("f"), dir.path().join("journal"));
        let before: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut rng = rand::rng();
        for damage in [Damage::Zeroed, Damage::Garbled, Damage::Kept] {
            std::fs::write(&file, &before).unwrap();
            // [0, 1000) synced, [1000, 3000) written after the sync began.
            let text = format!("W 1 0 1000 {0}\nD 1\nB 2 0 1000 {0}\nW 3 1000 2000 {0}\nD 3\nS 2\n", file.display());
            std::fs::write(&journal, text).unwrap();
            let report = lose_power(&journal, Mode::All(damage), &mut rng);
            let after = std::fs::read(&file).unwrap();
            assert_eq!(after[..1000], before[..1000], "{damage:?}: synced bytes untouched");
            assert_eq!(after[3000..], before[3000..], "{damage:?}: unwritten bytes untouched");
            match damage {
                Damage::Kept => assert_eq!(after[1000..3000], before[1000..3000]),
                Damage::Zeroed => assert!(after[1000..3000].iter().all(|&b| b == 0)),
                _ => assert_ne!(after[1000..3000], before[1000..3000]),
            }
            assert_eq!(report.bytes, if damage == Damage::Kept { 0 } else { 2000 });
            assert!(!journal.exists(), "the journal is consumed");
        }
    }
}
