//! The master epochs of a log: at which offset each epoch began (Kafka's leader-epoch cache,
//! RocketMQ's epoch file). The master of a broker set elected in epoch E begins E at its log end;
//! its slaves copy the entries as their logs reach them. A broker that (re)joins a master
//! compares the two lists ([`diverge_at`]) to find where the logs part, and cuts its own log
//! there before it follows: what it has past that point the master never had.
//!
//! Every log begins, implicitly, with epoch 0 at offset 0: what was written before the broker
//! set had a controller (one master, its slaves copies of it).
//!
//! On disk: the file `epochs` in the store's directory, one `epoch start_offset` line per epoch,
//! replaced whole (temporary file, fsync, rename).

use std::fmt::Write as _;

/// Most epochs kept: older ones, at the log's start, are dropped (as retention drops the
/// segments they began in).
pub const EPOCHS_MAX: usize = 4096;

/// Epoch `epoch` began at log offset `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    pub epoch: u64,
    pub start: u64,
}

/// A log's epochs, in order: epochs rising, start offsets never falling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Epochs {
    list: Vec<EpochStart>,
}

impl Epochs {
    /// From `(epoch, start)` pairs.
    ///
    /// # Errors
    /// Epochs not rising or starts falling, named.
    pub fn from_pairs(pairs: &[(u64, u64)]) -> Result<Self, String> {
        let mut e = Self::default();
        for &(epoch, start) in pairs {
            e.begin(epoch, start)?;
        }
        Ok(e)
    }

    /// Parses the file's text.
    ///
    /// # Errors
    /// A line that is not two numbers, or an order broken, named by line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut e = Self::default();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let mut it = line.split_whitespace().map(str::parse::<u64>);
            let (Some(Ok(epoch)), Some(Ok(start)), None) = (it.next(), it.next(), it.next()) else {
                return Err(format!("line {}: {line:?} is not `epoch start_offset`", n + 1));
            };
            e.begin(epoch, start).map_err(|why| format!("line {}: {why}", n + 1))?;
        }
        Ok(e)
    }

    /// The file's text.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut s = String::new();
        for e in &self.list {
            let _ = writeln!(s, "{} {}", e.epoch, e.start);
        }
        s
    }

    /// The epochs, oldest first.
    #[must_use]
    pub fn list(&self) -> &[EpochStart] {
        &self.list
    }

    /// The latest epoch (0 for a log that never had one).
    #[must_use]
    pub fn latest(&self) -> u64 {
        self.list.last().map_or(0, |e| e.epoch)
    }

    /// Records that `epoch` began at `start`.
    ///
    /// # Errors
    /// `epoch` not above the latest, or `start` below the latest's start.
    pub fn begin(&mut self, epoch: u64, start: u64) -> Result<(), String> {
        if let Some(last) = self.list.last() {
            if epoch <= last.epoch {
                return Err(format!("epoch {epoch} does not follow epoch {}", last.epoch));
            }
            if start < last.start {
                return Err(format!("epoch {epoch} would begin at {start}, before epoch {} began ({})", last.epoch, last.start));
            }
        } else if epoch == 0 {
            return Err("epoch 0 is implicit: every log begins with it".into());
        }
        self.list.push(EpochStart { epoch, start });
        if self.list.len() > EPOCHS_MAX {
            self.list.remove(0);
        }
        Ok(())
    }

    /// Where the log of this list, ending at `log_end`, holds epoch `epoch` up to: the start of
    /// the next epoch it has, or `log_end` if none. For an epoch it never had, the end of the
    /// latest one it had before it (as Kafka's OffsetsForLeaderEpoch answers), 0 before all.
    #[must_use]
    pub fn end_of(&self, epoch: u64, log_end: u64) -> u64 {
        match self.list.iter().position(|e| e.epoch > epoch) {
            Some(i) => self.list[i].start.min(log_end),
            None => log_end,
        }
    }

    /// Forgets epochs that began at or past `end` (the log was cut there).
    pub fn truncate(&mut self, end: u64) {
        self.list.retain(|e| e.start < end);
    }

    /// Takes the entries of `master` that begin at or below `log_end` and are not here yet
    /// (a slave copying its master's epochs as its log reaches them).
    ///
    /// # Errors
    /// `master` contradicts this list (an epoch here it does not have below `log_end`, or at
    /// another start): the two logs diverged; find where with [`diverge_at`].
    pub fn adopt(&mut self, master: &Self, log_end: u64) -> Result<bool, String> {
        let theirs: Vec<EpochStart> = master.list.iter().copied().filter(|e| e.start <= log_end).collect();
        let common = self.list.len().min(theirs.len());
        if self.list[..common] != theirs[..common] || self.list.len() > theirs.len() {
            return Err(format!(
                "this log's epochs {:?} are not the master's {:?} up to offset {log_end}",
                self.list.iter().map(|e| (e.epoch, e.start)).collect::<Vec<_>>(),
                theirs.iter().map(|e| (e.epoch, e.start)).collect::<Vec<_>>()
            ));
        }
        let changed = theirs.len() > self.list.len();
        self.list = theirs;
        Ok(changed)
    }
}

/// Where a log with epochs `mine`, ending at `my_end`, parts from the master's (`master`, ending
/// at `master_end`): the offset to cut it at before following the master (`my_end` when nothing
/// is to be cut). Below it both logs hold the same records: they share the latest epoch both
/// have, up to where the first of them left it.
#[must_use]
pub fn diverge_at(mine: &Epochs, my_end: u64, master: &Epochs, master_end: u64) -> u64 {
    // The latest epoch both have (epoch 0, which every log has, at worst): within one epoch there
    // is one master, so both logs hold its records up to where the shorter stops.
    let common = mine.list.iter().rev().find(|e| master.list.contains(e)).map_or(0, |e| e.epoch);
    my_end.min(mine.end_of(common, my_end)).min(master.end_of(common, master_end))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parse_encode_and_order() {
        let e = Epochs::parse("1 0\n3 100\n\n4 100\n").unwrap();
        assert_eq!(e.list().len(), 3);
        assert_eq!(Epochs::parse(&e.encode()).unwrap(), e);
        assert!(Epochs::parse("2 10\n1 20\n").unwrap_err().contains("line 2: epoch 1 does not follow epoch 2"));
        assert!(Epochs::parse("2 10\n3 5\n").unwrap_err().contains("would begin at 5, before epoch 2 began (10)"));
        assert!(Epochs::parse("2 x\n").unwrap_err().contains("line 1"));
        assert!(Epochs::parse("0 0\n").unwrap_err().contains("implicit"));
    }

    #[test]
    fn end_of_an_epoch_and_truncation() {
        let e = Epochs::from_pairs(&[(1, 0), (3, 100), (4, 250)]).unwrap();
        assert_eq!(e.end_of(0, 400), 0);
        assert_eq!(e.end_of(1, 400), 100);
        assert_eq!(e.end_of(2, 400), 100, "an epoch it never had: the end of the one before");
        assert_eq!(e.end_of(3, 400), 250);
        assert_eq!(e.end_of(4, 400), 400);
        assert_eq!(e.end_of(9, 400), 400);
        let mut t = e.clone();
        t.truncate(250);
        assert_eq!(t, Epochs::from_pairs(&[(1, 0), (3, 100)]).unwrap());
    }

    #[test]
    fn an_old_master_back_cuts_what_it_wrote_after_the_new_master_took_over() {
        // Epoch 1: broker A wrote to 1000; B copied up to 800 when A died; B became master of
        // epoch 2 at 800 and wrote on to 1500. A comes back: it cuts at 800.
        let a = Epochs::from_pairs(&[(1, 0)]).unwrap();
        let b = Epochs::from_pairs(&[(1, 0), (2, 800)]).unwrap();
        assert_eq!(diverge_at(&a, 1000, &b, 1500), 800);
        // A slave that had copied only 600: nothing to cut.
        assert_eq!(diverge_at(&a, 600, &b, 1500), 600);
        // Logs from before the controller (no epochs) against a master of epoch 1 at 700.
        let m = Epochs::from_pairs(&[(1, 700)]).unwrap();
        assert_eq!(diverge_at(&Epochs::default(), 900, &m, 1200), 700);
        assert_eq!(diverge_at(&Epochs::default(), 500, &m, 1200), 500);
    }

    #[test]
    fn a_slave_adopts_its_masters_epochs_as_its_log_reaches_them() {
        let master = Epochs::from_pairs(&[(1, 0), (2, 800), (5, 900)]).unwrap();
        let mut slave = Epochs::default();
        assert!(slave.adopt(&master, 500).unwrap());
        assert_eq!(slave.latest(), 1);
        assert!(slave.adopt(&master, 850).unwrap());
        assert!(!slave.adopt(&master, 899).unwrap());
        assert!(slave.adopt(&master, 900).unwrap());
        assert_eq!(slave, master);
        let other = Epochs::from_pairs(&[(1, 0), (3, 800)]).unwrap();
        assert!(slave.adopt(&other, 900).unwrap_err().contains("not the master's"));
    }

    /// A broker set's history: in each epoch a master is elected (any broker, however far
    /// behind: unclean elections included), begins the epoch at its log end and appends; each
    /// other broker then cuts where [`diverge_at`] says and copies part of the master's log.
    /// Records are (epoch, n), unique. Every cut is exactly the longest common prefix of the
    /// two logs: nothing the master lacks is kept, nothing both have is cut.
    #[derive(Debug, Clone)]
    struct Broker {
        log: Vec<(u64, u64)>,
        epochs: Epochs,
    }

    fn follow(b: &mut Broker, master: &Broker, copy: usize) {
        let cut = diverge_at(&b.epochs, b.log.len() as u64, &master.epochs, master.log.len() as u64) as usize;
        let common = b.log.iter().zip(&master.log).take_while(|(x, y)| x == y).count();
        assert_eq!(cut, common, "cut at {cut}, logs agree up to {common}: {b:?} vs {master:?}");
        b.log.truncate(cut);
        b.epochs.truncate(cut as u64);
        let upto = (cut + copy).min(master.log.len());
        b.log.extend_from_slice(&master.log[cut..upto]);
        b.epochs.adopt(&master.epochs, upto as u64).expect("a prefix of the master's log takes its epochs");
    }

    proptest! {
        #[test]
        fn divergence_is_found_exactly(steps in proptest::collection::vec((0..3usize, 0..6u64, proptest::collection::vec(0..8usize, 3)), 1..12)) {
            let mut brokers = vec![Broker { log: Vec::new(), epochs: Epochs::default() }; 3];
            for (epoch, (master, appends, copies)) in steps.into_iter().enumerate() {
                let epoch = epoch as u64 + 1;
                let m = &mut brokers[master];
                let end = m.log.len() as u64;
                m.epochs.begin(epoch, end).unwrap();
                m.log.extend((0..appends).map(|n| (epoch, n)));
                let snapshot = brokers[master].clone();
                for (i, copy) in copies.into_iter().enumerate() {
                    if i != master {
                        follow(&mut brokers[i], &snapshot, copy);
                    }
                }
            }
        }
    }
}
