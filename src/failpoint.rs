//! Named crash points for the fault-injection tests.
//!
//! With the `failpoints` feature, `ABUPDATE_FAILPOINT=name` (or `name:N` for
//! the N-th hit) aborts the process at that point, as a kill -9 or a power
//! cut would stop it. Without the feature, [`hit`] compiles to nothing.
//!
//! Two more switches make the fault matrix systematic rather than a list of
//! examples:
//! - `ABUPDATE_FAILPOINT_TRACE=FILE` appends the name of every point passed
//!   (one per line) to FILE, so a test runs a command once, reads back the
//!   sequence of durable steps it took, and then crashes it at each of them.
//! - [`tear`] points sit *inside* a durable write: when armed, the writer
//!   stores only part of what it meant to (the first `ABUPDATE_TEAR_BYTES`
//!   bytes, default half), syncs that, and aborts: a power cut mid-write.
//!
//! The points, in the order an install passes them (`tests/integration/fault_matrix.rs`
//! crashes at each one, on GRUB, U-Boot, EFI and systemd-boot):
//!
//! | point | after / inside |
//! | --- | --- |
//! | `state-tmp-write` | inside: `state.json.tmp` being written (tear) |
//! | `state-written` | `state.json` replaced and its directory synced |
//! | `grubenv-write`, `ubootenv-write` | inside: the GRUB env sector / U-Boot copy being written (tear) |
//! | `env-written` | any bootloader env write, synced |
//! | `efivar-written` | one EFI variable written or deleted (efi backend) |
//! | `entry-renamed` | one systemd-boot entry renamed or written, directory synced |
//! | `target-marked-bad` | the target slot marked bad before its first byte |
//! | `chunk-written` | each chunk of a one-stream image (512 KiB) written to the slot |
//! | `segment-written` | each segment of a segmented image written, read back and matched (parallel workers: any order) |
//! | `delta-segment-written` | each delta segment written, verified and journaled |
//! | `fsync` | the slot synced |
//! | `read-back` | every byte of the slot read back from the medium and hashed right |
//! | `file-replaced` | a file target on the ESP renamed into place, directory synced |
//! | `activated` | the bootloader told to try the target |
//! | `reboot-requested` | just before the reboot command runs |
//! | `health-verdict` | the health checks decided |
//! | `committed` | the trial slot marked good in the bootloader |
//! | `rolled-back` | a failed trial marked bad and the old slot activated |
//! | `rollback` | a manual rollback's activation (the plain switch; a rejection passes `retire-marked-bad` and `rolled-back`) |
//!
//! `pack` and `fleet` ([`crate::publish`]; `tests/integration/publish_crash.rs` crashes
//! at each one):
//!
//! | point | after / inside |
//! | --- | --- |
//! | `publish-payload-staged` | a payload written to its temporary file and synced |
//! | `publish-payload-written` | a payload renamed to its name (or found there already) |
//! | `publish-payloads-synced` | the directory synced after the payloads |
//! | `publish-signature-write` | inside: a signature's temporary file being written (tear) |
//! | `publish-bound-signature-written` | a signature bound to the new manifest's bytes in place |
//! | `publish-manifest-write` | inside: the manifest's temporary file being written (tear) |
//! | `publish-manifest-renamed` | the manifest renamed into place, directory synced |
//! | `publish-signature-written` | a standard signature renamed into place |
//! | `publish-cleaned` | stale signatures removed: the publish is complete |
//!
//! And two faults that are not crashes: `read-back-differs` ([`corrupt`])
//! flips a bit of a chunk as read back from the slot, as a failing medium
//! would; and `ABUPDATE_STATE_FULL_AFTER=point` ([`state_full`]) makes every
//! save of `state.json` fail with `ENOSPC` once `point` was passed, as a
//! state file system that filled up (or went read-only) at that instant
//! would: the flow goes on and meets the error, it is not cut.

/// Whether `ABUPDATE_FAILPOINT` names `name` and this is the hit it asks
/// for (`hits` counts them).
#[cfg(feature = "failpoints")]
fn spec_matches(name: &str, hits: &std::sync::atomic::AtomicU64) -> bool {
    let Ok(spec) = std::env::var("ABUPDATE_FAILPOINT") else {
        return false;
    };
    let (point, nth) = match spec.split_once(':') {
        Some((p, n)) => (p.to_string(), n.parse::<u64>().unwrap_or(1)),
        None => (spec.clone(), 1),
    };
    point == name && hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == nth
}

/// Append `name` and a newline to the trace file as one `write` of one
/// buffer, under a process-wide lock.
///
/// Why: the install's segment workers pass `segment-written` from several
/// threads at once. `writeln!` on a `File` issues one `write` per piece
/// (the name, then the newline), so two threads interleaved into lines like
/// `segment-writtensegment-written` and the fault matrix miscounted the
/// steps (stop 27's CI). One buffer per line in `O_APPEND` mode keeps lines
/// whole across processes too; the lock keeps them whole in this one.
#[cfg(feature = "failpoints")]
fn append_trace(path: &std::path::Path, name: &str) {
    use std::io::Write;
    static TRACE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let line = format!("{name}\n");
    let _guard = TRACE_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Set once the point `ABUPDATE_STATE_FULL_AFTER` names was passed.
#[cfg(feature = "failpoints")]
static STATE_FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "failpoints")]
fn armed(name: &str) -> bool {
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(path) = std::env::var_os("ABUPDATE_FAILPOINT_TRACE") {
        append_trace(std::path::Path::new(&path), name);
    }
    if std::env::var("ABUPDATE_STATE_FULL_AFTER").is_ok_and(|p| p == name) {
        STATE_FULL.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    spec_matches(name, &HITS)
}

/// Whether the state file system is full from here on: the point
/// `ABUPDATE_STATE_FULL_AFTER` names was passed in this process. The
/// state writer then fails every save with `ENOSPC` before it writes a
/// byte (tests: a save that fails after a bootloader write, found from
/// outside with a real full file system).
#[cfg(feature = "failpoints")]
pub fn state_full() -> bool {
    STATE_FULL.load(std::sync::atomic::Ordering::SeqCst)
}

/// The state file system is never made full (without the `failpoints`
/// feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn state_full() -> bool {
    false
}

/// A durable step passed: abort here when `ABUPDATE_FAILPOINT` names it
/// (and trace it when `ABUPDATE_FAILPOINT_TRACE` is set).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if armed(name) {
        crate::shout!("abupdate: failpoint {name} hit, aborting");
        std::process::abort();
    }
}

/// A durable step passed (nothing without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// A point inside a write of `len` bytes: `Some(k)` when armed, meaning
/// "write only the first k bytes, sync them, then call [`torn`]".
#[cfg(feature = "failpoints")]
pub fn tear(name: &str, len: usize) -> Option<usize> {
    if !armed(name) {
        return None;
    }
    let keep = std::env::var("ABUPDATE_TEAR_BYTES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(len / 2);
    Some(keep.min(len))
}

/// A point inside a write (never armed without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn tear(_name: &str, _len: usize) -> Option<usize> {
    None
}

/// A point where the medium returns other bytes than were written (a
/// failing disk) for the read at `offset`: true when `ABUPDATE_FAILPOINT`
/// names it, as `name:N` (the N-th read) or as `name@OFFSET` (the first
/// read at that byte of the slot: a test that must hit one segment
/// whatever order the workers read back in). Not traced: the fault matrix
/// crashes at steps, and this is not one.
#[cfg(feature = "failpoints")]
pub fn corrupt(name: &str, offset: u64) -> bool {
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static AT_HIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Some(at) = std::env::var("ABUPDATE_FAILPOINT")
        .ok()
        .and_then(|spec| spec.strip_prefix(&format!("{name}@"))?.parse::<u64>().ok())
    {
        return at == offset && !AT_HIT.swap(true, std::sync::atomic::Ordering::SeqCst);
    }
    spec_matches(name, &HITS)
}

/// A point where the medium may lie (never without the `failpoints`
/// feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn corrupt(_name: &str, _offset: u64) -> bool {
    false
}

/// The power went out in the middle of write `name`.
pub fn torn(name: &str) -> ! {
    crate::shout!("abupdate: failpoint {name} tore a write, aborting");
    std::process::abort();
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::append_trace;
    use crate::testutil::TempDir;

    #[test]
    fn trace_lines_stay_whole_when_many_threads_pass_points_at_once() {
        let dir = TempDir::new("failpoint-trace");
        let path = dir.path().join("trace");
        let names = ["segment-written", "delta-segment-written", "fsync"];
        std::thread::scope(|scope| {
            for t in 0..8 {
                let path = &path;
                let name = names[t % names.len()];
                scope.spawn(move || {
                    for _ in 0..500 {
                        append_trace(path, name);
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).expect("trace file");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8 * 500, "one line per hit");
        for line in &lines {
            assert!(names.contains(line), "torn trace line {line:?}");
        }
        assert_eq!(
            lines.iter().filter(|l| **l == "segment-written").count(),
            3 * 500
        );
    }
}
