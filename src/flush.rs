//! Background `fdatasync` of a file that is being written: the bytes are
//! made durable every so often by a thread of its own, so the writer never
//! waits on the disk in the middle of its work.
//!
//! Used for a partial download (every 8 MiB: a power cut loses little of
//! it). Not for the slot: a device flush mid-install holds up the writes
//! queued behind it (`install::writer`).
//!
//! Invariant: [`BackgroundSync::wrote`] never blocks. A request made while
//! a sync runs is coalesced with the next one, so at most one sync runs and
//! one waits; what a power cut can lose is what was written since the last
//! sync that completed: `every` bytes plus what arrived while it ran. The
//! owner makes the end durable itself ([`BackgroundSync::stop`] returns the
//! first error of a background sync, then the owner syncs once more).

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// A file's background syncs. Shared by the threads writing the file
/// (`&BackgroundSync` is `Sync`).
pub(crate) struct BackgroundSync {
    every: u64,
    written: AtomicU64,
    asked: AtomicU64,
    ask: Option<SyncSender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl BackgroundSync {
    /// Start the sync thread (named `name`) for `file`: a sync each time
    /// another `every` bytes were written.
    pub(crate) fn start(file: &File, name: &str, every: u64) -> io::Result<BackgroundSync> {
        let file = file.try_clone()?;
        let (ask, asked) = sync_channel::<()>(1);
        let thread =
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || -> io::Result<()> {
                    for () in asked.iter() {
                        file.sync_data()?;
                    }
                    Ok(())
                })?;
        Ok(BackgroundSync {
            every,
            written: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            ask: Some(ask),
            thread: Some(thread),
        })
    }

    /// `n` more bytes were written: ask for a sync when another `every`
    /// bytes were written since the last request. Never waits: a sync still
    /// running takes the next request later.
    pub(crate) fn wrote(&self, n: u64) {
        let total = self.written.fetch_add(n, Ordering::Relaxed) + n;
        let asked = self.asked.load(Ordering::Relaxed);
        if total.saturating_sub(asked) >= self.every
            && self.ask.as_ref().is_some_and(|a| a.try_send(()).is_ok())
        {
            self.asked.fetch_max(total, Ordering::Relaxed);
        }
    }

    /// End the thread once its last sync is done: the first error of a
    /// background sync, if any. Later calls return `Ok`.
    pub(crate) fn stop(&mut self) -> io::Result<()> {
        drop(self.ask.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("sync thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        // An owner that failed still ends the thread.
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::io::Write;

    #[test]
    fn a_sync_is_asked_every_so_many_bytes_and_never_waited_for() {
        let dir = TempDir::new("flush");
        let path = dir.join("f");
        let mut file = File::create(&path).expect("create");
        let mut sync = BackgroundSync::start(&file, "test-sync", 10).expect("start");
        sync.wrote(9);
        assert_eq!(
            sync.asked.load(Ordering::Relaxed),
            0,
            "asked before 10 bytes"
        );
        file.write_all(&[1; 10]).expect("write");
        sync.wrote(1);
        assert_eq!(
            sync.asked.load(Ordering::Relaxed),
            10,
            "not asked at 10 bytes"
        );
        sync.wrote(5);
        assert_eq!(
            sync.asked.load(Ordering::Relaxed),
            10,
            "asked again before 20"
        );
        sync.stop().expect("stop");
        sync.stop().expect("a second stop");
        // After stop, nothing is asked and nothing blocks.
        sync.wrote(100);
        assert_eq!(sync.asked.load(Ordering::Relaxed), 10);
    }
}
