//! Child processes. Every program abupdate starts runs through [`run`]:
//! health checks, `systemctl is-active`, the custom boot backend's verbs,
//! the reboot command.
//!
//! Invariant: every child abupdate starts is bounded in time and in the
//! output it keeps, and is killed together with all its descendants.
//!
//! - The child runs in a process group of its own (`setpgid(0, 0)` before
//!   `exec`), so the group holds it and everything it forks.
//! - The group dies with abupdate, all of it: the group's first process is
//!   a guard ([`guard`]), a fork of ours that never `exec`s, and the
//!   program runs as its child. The guard asks for a signal when abupdate
//!   dies (`PR_SET_PDEATHSIG`, set before the fork; a parent already gone
//!   by then fails the spawn) and answers it by ending everything
//!   ([`sweep`]): the program and what it started. So neither a verb of
//!   the custom boot backend nor a check's `sleep 1000 &` outlives an
//!   abupdate that was SIGKILLed (the OOM killer, systemd's stop timeout,
//!   an operator's `kill -9` outside systemd), and none writes the
//!   bootloader after a later command. (The kernel's death signal reaches
//!   one process only: set on the program itself it killed the program and
//!   left its own children running.) The signal follows the death of the
//!   *thread* that forked: [`run`] waits for its child in that thread, so
//!   it never fires while the caller still waits. The guard exits as the
//!   program did (its status, or the signal that killed it), so the caller
//!   sees the program's ending.
//! - What leaves the group is caught too: the guard is a child subreaper
//!   (`PR_SET_CHILD_SUBREAPER`), so a descendant whose parent dies is
//!   handed to the guard, not to init, even one in a session of its own
//!   (`setsid`, a double-forking daemon, a program that calls `setsid`
//!   itself). [`sweep`] SIGKILLs the group and every child the guard has,
//!   round after round, until none is left. The guard itself leaves the
//!   group at once (it joins abupdate's) and ignores the signals a terminal
//!   or a script sends a group (SIGINT, SIGTERM, SIGHUP, …): a program's
//!   `kill 0`, or a group kill of ours, never takes the guard down before
//!   its sweep. Where it cannot leave (abupdate in group 0, as under a
//!   PID 1 that made no group) the sweep does without the group kill, the
//!   subreaper's rounds reaching every descendant all the same. Only what the program hands to another service manager
//!   (`systemd-run`, `systemctl start`) is out of its reach: that is the
//!   manager's, as it is anyone's.
//! - When the program exits, at its deadline (the caller tells the guard
//!   with the death signal, lets it sweep, then SIGKILLs the group), and when abupdate
//!   dies, the guard sweeps. A check that leaves `sleep 1000 &` or a
//!   `setsid` daemon behind neither holds the caller (end of output is
//!   never awaited: the background process holds the pipes open) nor
//!   outlives the check.
//! - The group is killed before the child is reaped: until then the child's
//!   pid, which is the group's id, cannot be reused by an unrelated process.
//! - stdout and stderr are drained together (`poll`), so a chatty child
//!   never stalls on a full pipe. Each keeps its first and last [`KEEP`]
//!   bytes for messages; the middle is counted and dropped.
//! - A child that cannot be reaped within [`KILL_GRACE`] after SIGKILL
//!   (stuck in uninterruptible I/O) is left to the kernel: the sweep gives
//!   up after [`SWEEP_ROUNDS`], the guard is SIGKILLed, and the caller
//!   returns at the deadline all the same.
//!
//! Why a process group and a subreaper, not a cgroup: a cgroup of our own
//! needs a delegated, writable cgroup subtree (`Delegate=yes`) and abupdate
//! moved out of its unit's cgroup; the units have neither, and a minimal
//! image may run without systemd.

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Bytes kept of each stream's start, and as many of its end.
pub const KEEP: usize = 16 << 10;

/// How long a killed child may take to be reaped before we stop waiting.
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// Longest sleep between looks at the child when it writes nothing.
const TICK: Duration = Duration::from_millis(10);

/// At most this much is read from each pipe at one look, so the deadline
/// is checked between looks even when a child writes as fast as we read
/// (and a descendant that escaped the group may write for ever).
const PASS_LIMIT: usize = 1 << 20;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it (not ours).
    Signalled(i32),
    /// Its deadline passed; we killed its group.
    TimedOut(Duration),
}

impl Ending {
    /// Whether the child exited with status 0.
    pub fn success(self) -> bool {
        self == Ending::Exited(0)
    }

    fn from_status(status: ExitStatus) -> Ending {
        match (status.code(), status.signal()) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(sig)) => Ending::Signalled(sig),
            // Neither: only for stopped/continued children, which wait()
            // does not report.
            (None, None) => Ending::Signalled(0),
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Exited(code) => write!(f, "exit status {code}"),
            Ending::Signalled(sig) => match Signal::try_from(*sig) {
                Ok(s) => write!(f, "killed by signal {sig} ({s})"),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            Ending::TimedOut(limit) => write!(f, "timed out after {}", seconds(*limit)),
        }
    }
}

/// `3s`, `1.5s`, `250ms`: a limit as an operator wrote it.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// One output stream: its first and last [`KEEP`] bytes and its length.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Captured {
    fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = KEEP.saturating_sub(self.head.len());
        let (first, rest) = data.split_at(room.min(data.len()));
        self.head.extend_from_slice(first);
        data = rest;
        if data.len() >= KEEP {
            self.tail.clear();
            data = &data[data.len() - KEEP..];
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(KEEP);
        self.tail.drain(..overflow);
        self.tail.extend(data);
    }

    /// Bytes the stream carried in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The whole stream, when nothing of it was dropped.
    pub fn complete(&self) -> Option<Vec<u8>> {
        (self.total == (self.head.len() + self.tail.len()) as u64).then(|| {
            let mut all = self.head.clone();
            all.extend(self.tail.iter());
            all
        })
    }

    /// The last non-empty line, for a one-line message: trimmed, escaped
    /// and bounded ([`quote_line`]). Hooks, health checks, custom
    /// bootloader verbs and the reboot command all quote a child so.
    pub fn last_line(&self) -> String {
        let bytes: Vec<u8> = match self.tail.is_empty() {
            true => self.head.clone(),
            false => self.tail.iter().copied().collect(),
        };
        let line = bytes
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .rfind(|l| !l.is_empty())
            .unwrap_or(b"");
        quote_line(line)
    }
}

/// Most of a child's line quoted in a message, in bytes of text: enough
/// for what a failing program says last, short enough that the message
/// stays one readable line.
pub const LINE_MAX: usize = 300;

/// A line of a child's output (outside bytes) for a message: escaped, so
/// no control character or non-UTF-8 byte reaches a terminal raw
/// ([`crate::text::show`]), and when longer than [`LINE_MAX`], only its
/// end, marked cut (what a program says last is what failed).
pub fn quote_line(line: &[u8]) -> String {
    crate::text::show_bounded(line, LINE_MAX, true)
}

/// What a child did.
#[derive(Clone, Debug)]
pub struct Finished {
    /// How the child ended.
    pub ending: Ending,
    /// What it wrote to stdout (bounded).
    pub stdout: Captured,
    /// What it wrote to stderr (bounded).
    pub stderr: Captured,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Finished {
    /// The line that best says what happened: stderr's last, else stdout's.
    pub fn last_line(&self) -> String {
        let line = self.stderr.last_line();
        if line.is_empty() {
            self.stdout.last_line()
        } else {
            line
        }
    }
}

/// A child that could not be started or watched; names the program.
#[derive(Debug)]
pub enum ChildError {
    /// The program could not be started.
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Waiting for the program (or its group) failed.
    Watch {
        /// The program.
        program: String,
        /// What the system said.
        source: std::io::Error,
    },
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::Spawn { program, source } => write!(f, "cannot run {program}: {source}"),
            ChildError::Watch { program, source } => {
                write!(f, "cannot watch {program}: {source}")
            }
        }
    }
}

impl std::error::Error for ChildError {}

/// `now + d`, or the latest instant this clock can hold: a deadline never
/// panics (config validation keeps real limits far below that).
pub fn deadline_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(u32::MAX as u64)))
        .unwrap_or(now)
}

/// The signal the guard gets when abupdate dies, and from the caller at
/// the program's deadline: one no program sends by habit (a real-time
/// signal).
fn parent_death_signal() -> nix::libc::c_int {
    nix::libc::SIGRTMIN() + 2
}

/// The program's group, in the guard: the guard's own pid, once the guard
/// has left that group (0 while it could not: then no group kill of the
/// guard's would spare the guard). Set in the guard after its fork (a
/// fork's memory is its own) for [`end_everything`] and [`sweep`].
static GUARDED_GROUP: AtomicI32 = AtomicI32::new(0);

/// Rounds of [`sweep`], a millisecond apart: a process tree `depth` deep
/// takes `depth` rounds; well within [`KILL_GRACE`].
pub const SWEEP_ROUNDS: u32 = 300;

/// The guard's answer to abupdate's death, and to the caller at the
/// deadline: end the program and everything it started, then die killed.
/// Async-signal-safe.
extern "C" fn end_everything(_: nix::libc::c_int) {
    let group = GUARDED_GROUP.load(Ordering::Relaxed);
    // SAFETY: raw syscalls on values of ours (see `sweep`).
    unsafe {
        sweep(group);
        nix::libc::kill(nix::libc::getpid(), nix::libc::SIGKILL);
    }
}

/// In the guard: SIGKILL the program's group and every child the guard has
/// (the program, and, as their subreaper, whatever in its tree lost its
/// parent, in the group or not), reaping them, round after round, until the
/// guard has no child left or [`SWEEP_ROUNDS`] passed (a process stuck in
/// the kernel is left to it). A killed process's children are handed to the
/// guard and killed in the next round.
///
/// # Safety
/// Async-signal-safe (raw syscalls, a buffer on the stack); call it only in
/// the guard, which has no thread but its own.
unsafe fn sweep(group: nix::libc::pid_t) {
    use nix::libc;
    for _ in 0..SWEEP_ROUNDS {
        if group > 0 {
            libc::kill(-group, libc::SIGKILL);
        }
        kill_children();
        loop {
            let reaped = libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG);
            if reaped > 0 || (reaped < 0 && *libc::__errno_location() == libc::EINTR) {
                continue;
            }
            if reaped < 0 {
                // ECHILD: nothing left.
                return;
            }
            break;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        libc::nanosleep(&pause, std::ptr::null_mut());
    }
}

/// SIGKILL every child of the calling thread, as the kernel lists them in
/// `/proc/thread-self/children` (pids a space apart). Without `/proc` it
/// kills nothing: the group kill still ends what stayed in the group.
///
/// # Safety
/// Async-signal-safe; the guard's children cannot be reaped meanwhile by
/// anyone but the guard, so no pid read here is another process's.
unsafe fn kill_children() {
    use nix::libc;
    let path = b"/proc/thread-self/children\0";
    let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 512];
    let mut pid: libc::pid_t = 0;
    loop {
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b.is_ascii_digit() {
                pid = pid
                    .saturating_mul(10)
                    .saturating_add(libc::pid_t::from(b - b'0'));
            } else {
                if pid > 0 {
                    libc::kill(pid, libc::SIGKILL);
                }
                pid = 0;
            }
        }
    }
    if pid > 0 {
        libc::kill(pid, libc::SIGKILL);
    }
    libc::close(fd);
}

/// In the child, before `exec`: become the program's guard (see the module
/// doc). Sets the death signal and its answer, becomes a child subreaper,
/// fails at once when `parent` already died (the child was handed to
/// another process before the flag was set), then forks: the fork returns
/// to `exec` the program; the guard leaves the program's group for
/// `home_group` (abupdate's), ignores the signals sent to groups, closes
/// every descriptor (so `spawn` sees the program's `exec` and no pipe or
/// lock of ours is held), reaps what it is handed until the program ends,
/// sweeps, and exits as the program did. Only async-signal-safe calls, no
/// allocation: this runs in a fork of a multithreaded process.
fn guard(
    parent: u32,
    home_group: nix::libc::pid_t,
    death: nix::libc::c_int,
) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: a zeroed sigaction with a plain handler and an empty mask.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = end_everything as *const () as libc::sighandler_t;
    // SAFETY: plain syscalls on values of ours; prctl reads no memory.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(death, &act, std::ptr::null_mut()) != 0
            || libc::prctl(libc::PR_SET_PDEATHSIG, death as libc::c_ulong, 0, 0, 0) != 0
            // Before the fork: the program's children may be orphaned as
            // soon as it runs. (Not inherited by the fork.)
            || libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() as u32 != parent {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    // SAFETY: getpid cannot fail.
    let guard_pid = unsafe { libc::getpid() };
    // SAFETY: fork in a single-threaded child; the guard below makes only
    // async-signal-safe calls and never returns.
    let program = unsafe { libc::fork() };
    if program < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if program == 0 {
        // The program: dies with its guard too (a group kill covers it;
        // this covers a guard killed alone). The handler goes at `exec`.
        // SAFETY: as above.
        unsafe {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // A guard gone before the flag was set sends no signal: the
            // program would run unguarded, so it does not run.
            if libc::getppid() != guard_pid {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // abupdate ignores SIGXFSZ (an error beats a silent death);
            // an ignored signal stays ignored across `exec`, and a check
            // gets the world it would get from a shell.
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
        }
        return Ok(());
    }
    // SAFETY: only syscalls from here on; the guard ends in `_exit` or by
    // the program's signal.
    unsafe {
        // Out of the program's group (its id stays the guard's pid while
        // the program is in it): a group kill, the caller's or the
        // program's own `kill 0`, leaves the guard to sweep. It cannot
        // always leave: a process started by a PID 1 that made no group
        // is in group 0, which no one joins (found in the busybox guest:
        // the guard's own sweep killed it, and every check read "killed
        // by signal 9"). Then the sweep does without the group kill (the
        // subreaper's rounds reach every descendant all the same), and
        // only the group kill that ends the guard too is the caller's.
        if home_group > 0 && libc::setpgid(0, home_group) == 0 && libc::getpgrp() != guard_pid {
            GUARDED_GROUP.store(guard_pid, Ordering::Relaxed);
        }
        for sig in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..4096 {
                libc::close(fd);
            }
        }
        // Reap what the guard is handed (orphans of the program's tree that
        // died) until the program itself ends.
        let mut status = 0;
        loop {
            let reaped = libc::waitpid(-1, &mut status, 0);
            if reaped == program {
                break;
            }
            if reaped < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        sweep(GUARDED_GROUP.load(Ordering::Relaxed));
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            // The same ending, without a core of ours.
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// Run `cmd` (stdin from /dev/null, stdout and stderr captured) for at
/// most `timeout`, then kill its whole process group. Returns how it ended.
pub fn run(cmd: Command, timeout: Duration) -> Result<Finished, ChildError> {
    run_from(cmd, timeout, nix::unistd::getpgrp().as_raw())
}

/// [`run`], the guard joining `home_group` (abupdate's) when it leaves the
/// program's (0: a group it cannot join, as under a PID 1 that made none).
fn run_from(
    mut cmd: Command,
    timeout: Duration,
    home_group: nix::libc::pid_t,
) -> Result<Finished, ChildError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let deadline = deadline_after(start, timeout);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let parent = std::process::id();
    let death = parent_death_signal();
    // SAFETY: between fork and exec only async-signal-safe calls (`guard`),
    // no allocation.
    unsafe {
        cmd.pre_exec(move || guard(parent, home_group, death));
    }
    let mut child = cmd.spawn().map_err(|source| ChildError::Spawn {
        program: program.clone(),
        source: missing_interpreter(cmd.get_program().as_ref(), source),
    })?;
    let watch = |source: std::io::Error| ChildError::Watch {
        program: program.clone(),
        source,
    };
    // The child is its group's leader: its pid is the group id.
    let group = Pid::from_raw(child.id() as i32);
    let mut pipes: [Option<File>; 2] = [
        child.stdout.take().map(|s| File::from(OwnedFd::from(s))),
        child.stderr.take().map(|s| File::from(OwnedFd::from(s))),
    ];
    let mut captured = [Captured::default(), Captured::default()];
    for pipe in pipes.iter().flatten() {
        if let Err(e) = crate::files::set_nonblocking(pipe, true) {
            kill_and_reap(group, &mut child);
            return Err(watch(e));
        }
    }

    let ending = loop {
        drain(&mut pipes, &mut captured, PASS_LIMIT);
        if has_exited(group) {
            // Kill what it left behind before reaping it (see the module
            // doc), then take what is still in the pipes.
            let _ = killpg(group, Signal::SIGKILL);
            let status = child.wait().map_err(watch)?;
            drain(&mut pipes, &mut captured, PASS_LIMIT);
            break Ending::from_status(status);
        }
        let now = Instant::now();
        if now >= deadline {
            kill_and_reap(group, &mut child);
            drain(&mut pipes, &mut captured, PASS_LIMIT);
            break Ending::TimedOut(timeout);
        }
        wait_for_output(&pipes, (deadline - now).min(TICK));
    };
    let [stdout, stderr] = captured;
    Ok(Finished {
        ending,
        stdout,
        stderr,
        elapsed: start.elapsed(),
    })
}

/// The error of an `exec` that found no file: when the program is there,
/// what is missing is the interpreter its `#!` line names (a script saved
/// with CRLF line ends names `/bin/sh\r`), and the message says so, the
/// name escaped, instead of naming a file that exists (found from outside,
/// stop 48).
fn missing_interpreter(program: &std::path::Path, e: std::io::Error) -> std::io::Error {
    if e.kind() != std::io::ErrorKind::NotFound {
        return e;
    }
    let mut head = [0u8; 256];
    let Ok(n) = crate::files::open_regular(program).and_then(|mut f| f.read(&mut head)) else {
        return e;
    };
    let Some(line) = head[..n].strip_prefix(b"#!") else {
        return e;
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let interpreter = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())
        .unwrap_or_default();
    std::io::Error::new(
        e.kind(),
        format!(
            "the interpreter its #! line names, {}, was not found",
            crate::text::show(interpreter)
        ),
    )
}

/// Whether the child has exited, without reaping it.
fn has_exited(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            // ECHILD: nothing left to wait for; wait() says the rest.
            Err(_) => return true,
        }
    }
}

/// End the program and all it started: tell the guard to sweep (the death
/// signal) and SIGKILL the group, then reap the guard, waiting at most
/// [`KILL_GRACE`]; a guard still there then is SIGKILLed itself.
fn kill_and_reap(group: Pid, child: &mut std::process::Child) {
    // The guard's pid is the group's id; unreaped, it is no one else's.
    // SAFETY: kill(2) on a pid of our own unreaped child; a real-time
    // signal, which nix's `Signal` does not name.
    unsafe {
        nix::libc::kill(group.as_raw(), parent_death_signal());
    }
    // The guard's sweep first (a group kill now could end a guard that
    // could not leave the group before it swept); then, the guard still
    // unreaped (its pid, the group's id, no one else's), the group kill
    // for whatever is left, and the guard itself if it is still there.
    let half = deadline_after(Instant::now(), KILL_GRACE / 2);
    while !has_exited(group) && Instant::now() < half {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let until = deadline_after(Instant::now(), KILL_GRACE / 2);
    loop {
        match child.try_wait() {
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                return;
            }
            _ => return,
        }
    }
}

/// Sleep until a pipe has something to say (or closes), at most `wait`.
fn wait_for_output(pipes: &[Option<File>; 2], wait: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds: Vec<PollFd> = pipes
        .iter()
        .flatten()
        .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
        .collect();
    let ms = wait.as_millis().clamp(1, u16::MAX as u128) as u16;
    if fds.is_empty() {
        std::thread::sleep(Duration::from_millis(ms as u64));
    } else {
        // EINTR or an error: the loop looks again after at most a tick.
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }
}

/// Read what the pipes hold now (up to `limit` bytes each); a pipe at its
/// end, or broken, is closed.
fn drain(pipes: &mut [Option<File>; 2], captured: &mut [Captured; 2], limit: usize) {
    let mut buf = [0u8; 16 << 10];
    for (pipe, cap) in pipes.iter_mut().zip(captured.iter_mut()) {
        let mut taken = 0usize;
        while let Some(f) = pipe.as_mut() {
            if taken >= limit {
                break;
            }
            match f.read(&mut buf) {
                Ok(0) => *pipe = None,
                Ok(n) => {
                    cap.push(&buf[..n]);
                    taken += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => *pipe = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    /// Whether `pid` is gone (or a zombie nobody reaped yet: dead all the same).
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }

    fn wait_dead(pid: u32) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if dead(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn pid_in(text: &str) -> u32 {
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid in {text:?}"))
    }

    #[test]
    fn exit_status_and_both_streams_are_kept() {
        let f = run(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .expect("run");
        assert_eq!(f.ending, Ending::Exited(3));
        assert_eq!(f.stdout.complete().as_deref(), Some(&b"out\n"[..]));
        assert_eq!(f.stderr.last_line(), "err");
        assert_eq!(f.ending.to_string(), "exit status 3");
        assert!(!f.ending.success());
    }

    #[test]
    fn a_background_process_does_not_hold_the_caller_and_is_killed() {
        let start = Instant::now();
        let f = run(sh("sleep 1000 & echo $!; exit 0"), Duration::from_secs(30)).expect("run");
        assert!(f.ending.success(), "{:?}", f.ending);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "held for {:?}",
            start.elapsed()
        );
        let bg = pid_in(&f.stdout.last_line());
        assert!(wait_dead(bg), "background sleep {bg} survived its parent");
    }

    #[test]
    fn more_output_than_a_pipe_holds_is_drained_and_head_and_tail_kept() {
        // 1 MiB: sixteen pipe buffers.
        let f = run(
            sh("echo first; head -c 1048576 /dev/zero | tr '\\0' x; echo; echo last"),
            Duration::from_secs(30),
        )
        .expect("run");
        assert!(f.ending.success(), "{:?}", f.ending);
        assert_eq!(f.stdout.total(), 6 + 1_048_576 + 1 + 5);
        assert!(f.stdout.head.starts_with(b"first\n"));
        assert_eq!(f.stdout.last_line(), "last");
        assert!(f.stdout.complete().is_none());
    }

    #[test]
    fn a_quoted_line_is_the_last_one_escaped_and_bounded() {
        // 200 KB on one stderr line, ending in bytes no terminal may get
        // raw: an escape sequence, a C1 CSI, a byte that is not UTF-8.
        let f = run(
            sh("echo first >&2; head -c 200000 /dev/zero | tr '\\0' e >&2; printf '\\033[2J\\302\\233\\377end\\n\\n' >&2; exit 3"),
            Duration::from_secs(30),
        )
        .expect("run");
        let line = f.last_line();
        assert!(line.len() <= LINE_MAX, "{} bytes", line.len());
        assert!(
            line.starts_with("…eee") && line.ends_with("e\\x1b[2J\\xc2\\x9b\\xffend"),
            "{line}"
        );
        assert!(!line.chars().any(char::is_control), "{line:?}");
        // A short line is whole, unmarked.
        let f = run(sh("echo 'disk full' >&2; exit 1"), Duration::from_secs(5)).expect("run");
        assert_eq!(f.last_line(), "disk full");
    }

    #[test]
    fn the_deadline_kills_the_whole_group() {
        let start = Instant::now();
        let f = run(
            sh("sleep 1000 & echo $!; sh -c 'sleep 1000' & echo $!; wait"),
            Duration::from_millis(500),
        )
        .expect("run");
        let elapsed = start.elapsed();
        assert_eq!(f.ending, Ending::TimedOut(Duration::from_millis(500)));
        assert_eq!(f.ending.to_string(), "timed out after 500ms");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        let text = String::from_utf8(f.stdout.complete().expect("short")).expect("utf8");
        for pid in text.lines() {
            let pid = pid_in(pid);
            assert!(wait_dead(pid), "descendant {pid} survived the timeout");
        }
    }

    /// The pids a script wrote to `file`, one a line, once `count` are there.
    fn pids_written(file: &std::path::Path, count: usize) -> Vec<u32> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.len() >= count || Instant::now() >= until {
                assert_eq!(pids.len(), count, "{text:?}");
                return pids;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A descendant in a session of its own (`setsid`, a double fork) left
    /// the group: found from outside, it outlived the check. The guard, its
    /// subreaper, kills it when the program ends.
    #[test]
    fn a_descendant_that_left_the_group_dies_when_the_program_ends() {
        let dir = crate::testutil::TempDir::new("child-escape-end");
        let file = dir.path().join("pids");
        let f = run(
            sh(&format!(
                "setsid sh -c 'echo $$ >> {f}; exec sleep 1000' & \
                 (setsid sh -c 'echo $$ >> {f}; sleep 1000 & echo $! >> {f}; wait' &) ; \
                 while [ $(wc -l < {f} 2>/dev/null || echo 0) -lt 3 ]; do sleep 0.01; done; exit 0",
                f = file.display()
            )),
            Duration::from_secs(30),
        )
        .expect("run");
        assert!(f.ending.success(), "{:?}", f.ending);
        for pid in pids_written(&file, 3) {
            assert!(
                wait_dead(pid),
                "{pid} (its own session) outlived the program"
            );
        }
    }

    /// The same at the deadline, and for a program that calls `setsid`
    /// itself (it leaves the group the caller kills): the caller tells the
    /// guard, which sweeps.
    #[test]
    fn what_left_the_group_dies_at_the_deadline_even_the_program_itself() {
        let dir = crate::testutil::TempDir::new("child-escape-deadline");
        for (case, script) in [
            (
                "a descendant",
                "setsid sh -c 'echo $$ >> {f}; exec sleep 1000' & echo $$ >> {f}; sleep 1000",
            ),
            (
                "the program",
                "exec setsid sh -c 'echo $$ >> {f}; sleep 1000 & echo $! >> {f}; wait'",
            ),
        ] {
            let file = dir.path().join(case.replace(' ', "-"));
            let start = Instant::now();
            let f = run(
                sh(&script.replace("{f}", &file.display().to_string())),
                Duration::from_millis(700),
            )
            .expect("run");
            assert_eq!(
                f.ending,
                Ending::TimedOut(Duration::from_millis(700)),
                "{case}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "{case}: {:?}",
                start.elapsed()
            );
            for pid in pids_written(&file, 2) {
                assert!(wait_dead(pid), "{case}: {pid} outlived the deadline");
            }
        }
    }

    /// A process started by a PID 1 that made no process group is in group
    /// 0, which no one can join: the guard cannot leave the program's group
    /// (found in the busybox VM guest: its sweep killed the guard itself,
    /// and every check read "killed by signal 9"). The program's ending is
    /// still its own, and what it left still dies, at its end and at the
    /// deadline.
    #[test]
    fn a_guard_that_cannot_leave_the_group_reports_the_programs_ending_and_sweeps() {
        let dir = crate::testutil::TempDir::new("child-group-0");
        let ends = dir.path().join("ends");
        let f = run_from(
            sh(&format!(
                "setsid sh -c 'echo $$ >> {f}; exec sleep 1000' & \
                 while [ ! -s {f} ]; do sleep 0.01; done; exit 3",
                f = ends.display()
            )),
            Duration::from_secs(30),
            0,
        )
        .expect("run");
        assert_eq!(f.ending, Ending::Exited(3));
        for pid in pids_written(&ends, 1) {
            assert!(wait_dead(pid), "{pid} outlived the program");
        }
        let hangs = dir.path().join("hangs");
        let f = run_from(
            sh(&format!(
                "setsid sh -c 'echo $$ >> {f}; exec sleep 1000' & echo $$ >> {f}; sleep 1000",
                f = hangs.display()
            )),
            Duration::from_millis(700),
            0,
        )
        .expect("run");
        assert_eq!(f.ending, Ending::TimedOut(Duration::from_millis(700)));
        for pid in pids_written(&hangs, 2) {
            assert!(wait_dead(pid), "{pid} outlived the deadline");
        }
    }

    /// A program that kills its own group (`kill 0`) no longer takes the
    /// guard with it: its ending is still reported, and what it left in a
    /// session of its own still dies.
    #[test]
    fn a_program_that_kills_its_own_group_is_still_swept() {
        let dir = crate::testutil::TempDir::new("child-kill-0");
        let file = dir.path().join("pids");
        let f = run(
            sh(&format!(
                "setsid sh -c 'echo $$ >> {f}; exec sleep 1000' & \
                 while [ ! -s {f} ]; do sleep 0.01; done; kill -KILL 0",
                f = file.display()
            )),
            Duration::from_secs(30),
        )
        .expect("run");
        assert_eq!(f.ending, Ending::Signalled(9));
        for pid in pids_written(&file, 1) {
            assert!(wait_dead(pid), "{pid} outlived the program");
        }
    }

    /// abupdate ignores SIGXFSZ; its children get the default back (an
    /// ignored signal stays ignored across `exec`).
    #[test]
    fn a_child_does_not_inherit_an_ignored_sigxfsz() {
        // SAFETY: signal(2), as `cli::main` does; the default is restored
        // in every child whatever the tests around do.
        unsafe {
            nix::libc::signal(nix::libc::SIGXFSZ, nix::libc::SIG_IGN);
        }
        let f = run(sh("grep SigIgn /proc/self/status"), Duration::from_secs(10)).expect("run");
        let out = String::from_utf8(f.stdout.complete().expect("short")).expect("text");
        let line = out.trim();
        let mask = u64::from_str_radix(line.trim_start_matches("SigIgn:").trim(), 16)
            .unwrap_or_else(|_| panic!("{line:?}"));
        assert_eq!(mask & (1 << (nix::libc::SIGXFSZ - 1)), 0, "{line}");
    }

    /// A script saved with CRLF line ends: its interpreter is `/bin/sh\r`,
    /// and the message names that, escaped, not the script (which exists).
    #[test]
    fn a_script_whose_interpreter_is_missing_is_named_by_its_interpreter() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = crate::testutil::TempDir::new("child-crlf");
        let script = dir.path().join("crlf");
        std::fs::write(&script, b"#!/bin/sh\r\necho hi\r\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = run(Command::new(&script), Duration::from_secs(5)).expect_err("ran");
        assert!(
            e.to_string()
                .ends_with(": the interpreter its #! line names, /bin/sh\\x0d, was not found"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let e = run(
            Command::new("/nonexistent/abupdate-check"),
            Duration::from_secs(1),
        )
        .expect_err("ran a missing program");
        assert!(
            e.to_string()
                .starts_with("cannot run /nonexistent/abupdate-check:"),
            "{e}"
        );
    }

    #[test]
    fn a_signal_is_reported_as_such() {
        let f = run(sh("kill -TERM $$"), Duration::from_secs(10)).expect("run");
        assert_eq!(f.ending, Ending::Signalled(15));
        assert_eq!(f.ending.to_string(), "killed by signal 15 (SIGTERM)");
    }

    #[test]
    fn captured_keeps_head_and_tail_exactly() {
        let mut c = Captured::default();
        let data: Vec<u8> = (0..3 * KEEP + 7).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(1000) {
            c.push(chunk);
        }
        assert_eq!(c.total(), data.len() as u64);
        assert_eq!(c.head, data[..KEEP]);
        assert_eq!(
            c.tail.iter().copied().collect::<Vec<u8>>(),
            data[data.len() - KEEP..]
        );
        let mut small = Captured::default();
        small.push(b"a\n");
        small.push(b"b\n");
        assert_eq!(small.complete().as_deref(), Some(&b"a\nb\n"[..]));
        let mut edge = Captured::default();
        edge.push(&data[..2 * KEEP]);
        assert_eq!(edge.complete().as_deref(), Some(&data[..2 * KEEP]));
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now);
        assert_eq!(
            deadline_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
