//! Background pushes of a file that is being written out to its storage,
//! by a thread of its own, so the writer never waits on the disk in the
//! middle of its work. Two kinds ([`Push`]):
//!
//! - [`Push::Durable`], an `fdatasync` every so often: for a partial
//!   download (every 8 MiB: a power cut loses little of it). Not for the
//!   slot: a device flush mid-install holds up the writes queued behind it
//!   (`install::writer`).
//! - [`Push::StartWriteOut`], `sync_file_range(SYNC_FILE_RANGE_WRITE)`:
//!   the kernel starts writing the file's dirty pages out and nobody waits
//!   for it. For the backing file of a loop-device slot, whose pages would
//!   otherwise all be written out at the install's one final flush
//!   (`install::writer`, "Write-out"). It promises nothing: the owner's own
//!   flush stays the only durability point, and a file that refuses the
//!   call ends the thread quietly.
//!
//! Invariant: [`BackgroundSync::wrote`] never blocks. A request made while
//! a push runs is coalesced with the next one, so at most one push runs and
//! one waits; with [`Push::Durable`], what a power cut can lose is what was
//! written since the last sync that completed: `every` bytes plus what
//! arrived while it ran. The owner makes the end durable itself
//! ([`BackgroundSync::stop`] returns the first error of a background sync,
//! then the owner syncs once more).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What a background push does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// `fdatasync`: what was written before it is durable once it returns.
    Durable,
    /// Start writing the whole file's dirty pages out; wait for nothing.
    StartWriteOut,
}

/// `sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`: queue every dirty
/// page of `file` for writing that is not already on its way; returns
/// without waiting for the writes.
fn start_write_out(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe {
        nix::libc::sync_file_range(file.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A file's background pushes. Shared by the threads writing the file
/// (`&BackgroundSync` is `Sync`).
pub(crate) struct BackgroundSync {
    every: u64,
    written: AtomicU64,
    asked: AtomicU64,
    /// Pushes completed: what the tests watch.
    #[cfg_attr(not(test), allow(dead_code))]
    pushed: Arc<AtomicU64>,
    ask: Option<SyncSender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl BackgroundSync {
    /// Start the push thread (named `name`) for `file`: a push of kind
    /// `push` each time another `every` bytes were written.
    pub(crate) fn start(
        file: &File,
        name: &str,
        every: u64,
        push: Push,
    ) -> io::Result<BackgroundSync> {
        let file = file.try_clone()?;
        let (ask, asked) = sync_channel::<()>(1);
        let pushed = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&pushed);
        let thread =
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || -> io::Result<()> {
                    for () in asked.iter() {
                        match push {
                            Push::Durable => file.sync_data()?,
                            // A hint: where the kernel refuses it, stop asking.
                            Push::StartWriteOut => {
                                if start_write_out(&file).is_err() {
                                    return Ok(());
                                }
                            }
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })?;
        Ok(BackgroundSync {
            every,
            written: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            pushed,
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
        let mut sync = BackgroundSync::start(&file, "test-sync", 10, Push::Durable).expect("start");
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

    /// Waits until `sync` made `n` pushes (at most ten seconds).
    fn pushes(sync: &BackgroundSync, n: u64) -> u64 {
        for _ in 0..1000 {
            if sync.pushed.load(Ordering::Relaxed) >= n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        sync.pushed.load(Ordering::Relaxed)
    }

    #[test]
    fn a_write_out_is_started_every_so_many_bytes() {
        let dir = TempDir::new("write-out");
        let mut file = File::create(dir.join("f")).expect("create");
        let mut out =
            BackgroundSync::start(&file, "test-write-out", 10, Push::StartWriteOut).expect("start");
        file.write_all(&[7; 25]).expect("write");
        out.wrote(9);
        out.wrote(1);
        assert_eq!(pushes(&out, 1), 1, "no write-out at 10 bytes");
        out.wrote(15);
        assert_eq!(pushes(&out, 2), 2, "no second write-out at 25 bytes");
        out.stop().expect("stop");
    }

    #[test]
    fn a_file_that_refuses_write_out_ends_the_thread_quietly() {
        // A pipe has no pages to write out: sync_file_range says ESPIPE.
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let file = File::from(write);
        let mut out =
            BackgroundSync::start(&file, "test-write-out", 1, Push::StartWriteOut).expect("start");
        out.wrote(1);
        // The thread ends; later requests go nowhere and never block.
        let joined = (0..1000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            out.thread.as_ref().is_some_and(|t| t.is_finished())
        });
        assert!(joined, "the thread did not end");
        for _ in 0..10 {
            out.wrote(1);
        }
        assert_eq!(out.pushed.load(Ordering::Relaxed), 0);
        out.stop().expect("a refused write-out is not an error");
        drop(read);
    }
}
