//! Progress of long transfers: a bar on a terminal, a log line every 10%
//! when not on one (journald adds the timestamps).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress of one long transfer: a bar on a terminal, a log line every 10% otherwise.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    tty: bool,
    quiet: bool,
    /// When the bar was last drawn; `None` before the first time (not
    /// "now minus a second": `Instant - Duration` panics on a clock that
    /// started less than that ago).
    last_draw: Option<Instant>,
    last_decile: u64,
}

impl Progress {
    /// A transfer of `total` bytes called `label`; `quiet` shows nothing.
    pub fn new(label: &str, total: u64, quiet: bool) -> Progress {
        Progress {
            label: label.to_string(),
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            quiet,
            last_draw: None,
            last_decile: 0,
        }
    }

    /// `bytes` more are done.
    pub fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.quiet || self.total == 0 {
            return;
        }
        let pct = self.done.saturating_mul(100) / self.total;
        if self.tty {
            if self
                .last_draw
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(200))
            {
                self.last_draw = Some(Instant::now());
                let filled = (pct.min(100) / 4) as usize;
                let _ = write!(
                    std::io::stderr(),
                    "\r{} [{:<25}] {:>3}% {}/{} MiB",
                    self.label,
                    "#".repeat(filled),
                    pct.min(100),
                    self.done >> 20,
                    self.total >> 20
                );
                let _ = std::io::stderr().flush();
            }
        } else if pct / 10 > self.last_decile {
            self.last_decile = pct / 10;
            crate::say!(
                "{}: {}% ({} of {} MiB)",
                self.label,
                pct.min(100),
                self.done >> 20,
                self.total >> 20
            );
        }
    }

    /// The transfer ended: the last line.
    pub fn finish(&mut self) {
        if self.tty && !self.quiet && self.total > 0 {
            crate::say!(
                "\r{} [{:<25}] 100% {} MiB",
                self.label,
                "#".repeat(25),
                self.total >> 20
            );
        }
    }
}
