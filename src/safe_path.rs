//! Paths whose content decides what abupdate does as root: the programs it
//! runs from a path the site configures (install hooks, `[health] dir`
//! checks, the custom boot backend's script) or finds in `PATH` (`[system]
//! reboot`, `systemctl` for `[health] units`), and the files it trusts (the
//! config and its drop-ins, the trusted keys, the CA file, the state
//! directory). Each is used only when nobody but root, or the user
//! abupdate runs as, could have put it there or could change it before it
//! is used. What a refusal costs is the caller's: a program is not run, a
//! key directory or a CA file gives nothing; the config and the state
//! directory refuse the commands that act and fail a trial
//! ([`crate::agent::Purpose`]).
//!
//! Invariant: [`command`] (and [`command_on_path`] for a name looked up in
//! `PATH`) is the one way such a program is started, and [`trusted_file`]
//! and [`trusted_dir`] the one way such a file or directory is judged.
//! Each resolves the path itself, one name at a time, following symbolic
//! links, and accepts it only when every name looked up on the way sits in
//! a directory others cannot change: one owned by root (or abupdate's
//! effective uid) and writable by neither group nor others, or one with the
//! sticky bit (`/tmp`, mode 1777) where that name is owned by root (or us):
//! there others can neither rename nor remove it. That is every directory
//! from `/` down to the file, the directory the configured entry sits in
//! (`health.d`) and the directory of every link followed. A program must
//! be a regular executable file, a trusted file a regular file, and either
//! owned by root (or us) and writable by neither group nor others. A
//! directory of programs may be sticky (others may add a program, which
//! [`command`] refuses, not remove root's); a trusted directory (the keys,
//! the state) may not: what others add to it would be trusted. The program
//! run or the file read is the resolved path (no link left in it), not the
//! configured name: a link swapped after the check changes nothing, and
//! with every directory on the way safe nobody else can swap the file. It
//! is the rule of sudo and of OpenSSH's `safe_path` and `StrictModes`. A
//! program's `argv[0]` stays the configured name, as before.
//!
//! Not covered, as by sudo: the interpreter a script names (`#!`) and the
//! libraries a program loads are the system's, not judged here. A script's
//! `$0` is the resolved path (the kernel hands the interpreter the path
//! executed).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::text::show_path;

/// Links followed before giving up, as the kernel's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;

/// One step of a path still to resolve.
enum Step {
    /// `..`: back to the directory we came from (already checked).
    Up,
    /// A name to look up in the current directory.
    Name(OsString),
}

/// The steps of `path`, in order; `/` and `.` are no step.
fn steps(path: &Path) -> impl DoubleEndedIterator<Item = Step> + '_ {
    path.components().filter_map(|c| match c {
        Component::ParentDir => Some(Step::Up),
        Component::Normal(name) => Some(Step::Name(name.to_owned())),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// `lstat`, its error as the one line the callers show (no path: the
/// caller's message names it).
fn lstat(path: &Path) -> Result<Metadata, String> {
    std::fs::symlink_metadata(path).map_err(|e| e.to_string())
}

/// What a path judged is for: the harm a refusal names.
#[derive(Clone, Copy)]
enum Stake {
    /// A program abupdate runs.
    Run,
    /// A file or directory whose content abupdate trusts.
    Trust,
}

impl Stake {
    fn harm(self) -> &'static str {
        match self {
            Stake::Run => "it would run as root",
            Stake::Trust => "root would trust what they put there",
        }
    }
}

/// Who abupdate trusts to own what it runs or reads: root and its
/// effective uid; and what for.
struct Trusted {
    me: u32,
    stake: Stake,
}

impl Trusted {
    fn owns(&self, meta: &Metadata) -> bool {
        meta.uid() == 0 || meta.uid() == self.me
    }

    /// Refuse `entry` (named in `dir`, whose metadata is `dir_meta`) when
    /// someone else could replace it: `dir` owned by another user (who can
    /// chmod it), or writable by group or others, unless sticky and `entry`
    /// is ours (there only its owner, root or we may rename or remove it).
    fn may_look_up(
        &self,
        dir: &Path,
        dir_meta: &Metadata,
        entry: &Path,
        entry_meta: &Metadata,
    ) -> Result<(), String> {
        if !self.owns(dir_meta) {
            return Err(format!(
                "directory {} is owned by uid {}, neither root nor uid {} that abupdate runs as: \
                 its owner could replace {}; {}",
                show_path(dir),
                dir_meta.uid(),
                self.me,
                show_path(entry),
                self.stake.harm()
            ));
        }
        let mode = dir_meta.mode() & 0o7777;
        if mode & 0o022 == 0 {
            return Ok(());
        }
        if mode & 0o1000 == 0 {
            return Err(format!(
                "directory {} is writable by group or others (mode {mode:04o}): \
                 others could replace {}; {}",
                show_path(dir),
                show_path(entry),
                self.stake.harm()
            ));
        }
        if !self.owns(entry_meta) {
            return Err(format!(
                "{} is owned by uid {} in directory {} (mode {mode:04o}), writable by others: \
                 its owner could replace it; {}",
                show_path(entry),
                entry_meta.uid(),
                show_path(dir),
                self.stake.harm()
            ));
        }
        Ok(())
    }

    /// Refuse the resolved directory unless it is one whose entries only
    /// root (or us) may remove or rename: owned by root (or us), and
    /// writable by neither group nor others unless sticky.
    fn may_list(&self, meta: &Metadata) -> Result<(), String> {
        if !meta.is_dir() {
            return Err("not a directory".into());
        }
        let mode = meta.mode() & 0o7777;
        if !self.owns(meta) {
            return Err(format!(
                "owned by uid {}, neither root nor uid {} that abupdate runs as: its owner could remove the programs in it",
                meta.uid(),
                self.me
            ));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "writable by group or others (mode {mode:04o}): others could remove the programs in it"
            ));
        }
        Ok(())
    }

    /// Refuse the resolved file unless it is a regular executable file
    /// owned by root (or us) and writable by neither group nor others.
    fn may_run(&self, meta: &Metadata) -> Result<(), String> {
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o111 == 0 {
            return Err(format!("not executable (mode {mode:04o})"));
        }
        if mode & 0o022 != 0 {
            return Err(format!(
                "writable by group or others (mode {mode:04o}); it would run as root"
            ));
        }
        if !self.owns(meta) {
            return Err(format!(
                "owned by uid {}, neither root nor uid {} that abupdate runs as",
                meta.uid(),
                self.me
            ));
        }
        Ok(())
    }

    /// Refuse the resolved file unless it is a regular file owned by root
    /// (or us) and writable by neither group nor others.
    fn may_read(&self, meta: &Metadata) -> Result<(), String> {
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        self.only_ours(meta, "others could change it")
    }

    /// Refuse the resolved directory unless it is owned by root (or us) and
    /// writable by neither group nor others, sticky or not: a file others
    /// add to it would be read as root's.
    fn may_read_in(&self, meta: &Metadata) -> Result<(), String> {
        if !meta.is_dir() {
            return Err("not a directory".into());
        }
        self.only_ours(meta, "others could add or replace files in it")
    }

    /// Owned by root (or us), writable by neither group nor others; else
    /// `what` others could do, and why that matters.
    fn only_ours(&self, meta: &Metadata, what: &str) -> Result<(), String> {
        let mode = meta.mode() & 0o7777;
        if !self.owns(meta) {
            return Err(format!(
                "owned by uid {}, neither root nor uid {} that abupdate runs as: its owner could \
                 change it; {}",
                meta.uid(),
                self.me,
                self.stake.harm()
            ));
        }
        if mode & 0o022 != 0 {
            return Err(format!(
                "writable by group or others (mode {mode:04o}): {what}; {} (chmod go-w)",
                self.stake.harm()
            ));
        }
        Ok(())
    }
}

/// The path `path` leads to, without links, when a program there may run
/// as root (see the module doc); else why not, one line. A relative `path`
/// is taken from the current directory, as an exec would.
pub fn program(path: &Path) -> Result<PathBuf, String> {
    resolve_to(path, Stake::Run, Trusted::may_run)
}

/// The directory `path` leads to, without links, when nobody but root (or
/// us) could change the list of programs in it: reached as [`program`]
/// reaches a program, then owned by root (or us) and writable by neither
/// group nor others, or sticky (there others may add a program, which
/// [`command`] refuses to run, but not remove or rename root's). Else why
/// not, one line. A `[health] dir` others could empty would pass every
/// verdict with no check at all.
pub fn program_dir(path: &Path) -> Result<PathBuf, String> {
    resolve_to(path, Stake::Run, Trusted::may_list)
}

/// The file `path` leads to, without links, when nobody but root (or us)
/// could have written it or could replace it: reached as [`program`]
/// reaches a program, then a regular file owned by root (or us) and
/// writable by neither group nor others. Else why not, one line. For what
/// decides what root trusts: the config, a trusted key. Read the path
/// returned.
pub fn trusted_file(path: &Path) -> Result<PathBuf, String> {
    resolve_to(path, Stake::Trust, Trusted::may_read)
}

/// The directory `path` leads to, without links, when nobody but root (or
/// us) could add, remove or replace a file in it: reached as [`program`]
/// reaches a program, then owned by root (or us) and writable by neither
/// group nor others (sticky or not). Else why not, one line. For the
/// directories of trusted keys, of config drop-ins, and the state.
pub fn trusted_dir(path: &Path) -> Result<PathBuf, String> {
    resolve_to(path, Stake::Trust, Trusted::may_read_in)
}

/// The walk of [`program`] and the others, judging what it reaches with
/// `last`, naming `stake` in a refusal.
fn resolve_to(
    path: &Path,
    stake: Stake,
    last: fn(&Trusted, &Metadata) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let trusted = Trusted {
        me: nix::unistd::geteuid().as_raw(),
        stake,
    };
    let start = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("the current directory: {e}"))?
            .join(path)
    };
    let mut todo: VecDeque<Step> = steps(&start).collect();
    // `at` is always a path without links whose every directory passed
    // `may_look_up` for the name below it; `at_meta` is its `lstat`.
    let mut at = PathBuf::from("/");
    let mut at_meta = lstat(&at)?;
    let mut links = 0;
    while let Some(step) = todo.pop_front() {
        if !at_meta.is_dir() {
            return Err(std::io::Error::from_raw_os_error(nix::libc::ENOTDIR).to_string());
        }
        let name = match step {
            Step::Up => {
                // The parent was checked on the way down (`/`'s is itself).
                at.pop();
                at_meta = lstat(&at)?;
                continue;
            }
            Step::Name(name) => name,
        };
        let next = at.join(&name);
        let meta = lstat(&next)?;
        trusted.may_look_up(&at, &at_meta, &next, &meta)?;
        if !meta.file_type().is_symlink() {
            at = next;
            at_meta = meta;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(std::io::Error::from_raw_os_error(nix::libc::ELOOP).to_string());
        }
        // The link sits in a checked directory; its target is resolved
        // (and checked) in its place, from `/` or from `at`.
        let target = std::fs::read_link(&next).map_err(|e| e.to_string())?;
        if target.is_absolute() {
            at = PathBuf::from("/");
            at_meta = lstat(&at)?;
        }
        for step in steps(&target).rev() {
            todo.push_front(step);
        }
    }
    last(&trusted, &at_meta).map_err(|why| match links {
        // A link's target named: the configured name is not what failed.
        0 => why,
        _ => format!("{}: {why}", show_path(&at)),
    })?;
    Ok(at)
}

/// The command that runs the program at `path` as root, when it may (see
/// [`program`]): the resolved path it was judged by, with `argv[0]` the
/// configured name; else why not, one line.
pub fn command(path: &Path) -> Result<Command, String> {
    let resolved = program(path)?;
    let mut cmd = Command::new(resolved);
    cmd.arg0(path);
    give_path(&mut cmd);
    Ok(cmd)
}

/// `PATH` when the environment has none: systemd's default for services.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";

/// The `PATH` a bare name is looked up in: `given` (the process's) when it
/// names an absolute directory, else [`DEFAULT_PATH`]. An empty `PATH`, or
/// one of relative entries only (a cron line, a wrapper that cleared the
/// environment), is no `PATH`: searched nowhere, it failed a unit check and
/// the reboot command, and a good trial was rolled back (found from
/// outside, stop 58).
fn search_path(given: Option<&OsStr>) -> &OsStr {
    match given {
        Some(p) if std::env::split_paths(p).any(|dir| dir.is_absolute()) => p,
        _ => OsStr::new(DEFAULT_PATH),
    }
}

/// A child (a check, a hook, a backend script) gets the `PATH` a bare name
/// is looked up in ([`search_path`]) when the process's is none, so that
/// its own `sleep` or `grep` is found: what a check finds must not depend
/// on who started abupdate. A usable `PATH` is passed on as it is.
fn give_path(cmd: &mut Command) {
    let own = std::env::var_os("PATH");
    let usable = search_path(own.as_deref());
    if own.as_deref() != Some(usable) {
        cmd.env("PATH", usable);
    }
}

/// [`command`] for a program the site names as a shell would (the reboot
/// command, `systemctl`): a name with a slash is a path; a bare name is
/// looked up in `search` (the process's `PATH`, else [`DEFAULT_PATH`]:
/// [`search_path`]), and
/// the first directory holding an entry of that name decides: it runs when
/// [`program`] accepts it, else the refusal names it. Relative entries
/// (`.`, an empty one) are skipped: where a program run as root is found
/// must not depend on the current directory. `argv[0]` stays the name.
pub fn command_on_path(name: &str, search: Option<&OsStr>) -> Result<Command, String> {
    if name.contains('/') {
        return command(Path::new(name));
    }
    let search = search_path(search);
    let found = std::env::split_paths(search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| std::fs::symlink_metadata(candidate).is_ok());
    let Some(candidate) = found else {
        return Err(format!(
            "{}: not found in PATH ({})",
            show_path(Path::new(name)),
            show_path(Path::new(search))
        ));
    };
    let resolved =
        program(&candidate).map_err(|why| format!("{}: {why}", show_path(&candidate)))?;
    let mut cmd = Command::new(resolved);
    cmd.arg0(name);
    give_path(&mut cmd);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    //! The rule branch by branch. The tests run as root: another user's
    //! files are made with `chown` to uid 65534 (nobody).
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};

    const NOBODY: u32 = 65534;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }

    /// A directory `name` in `d` with `mode`, set whatever the umask.
    fn dir(d: &Path, name: &str, mode: u32) -> PathBuf {
        let p = d.join(name);
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        chmod(&p, mode);
        p
    }

    /// A script at `p` (mode 0755) printing `word`.
    fn script(p: &Path, word: &str) -> PathBuf {
        std::fs::write(p, format!("#!/bin/sh\necho {word}\n")).expect("write");
        chmod(p, 0o755);
        p.to_path_buf()
    }

    /// A fresh directory root owns, mode 0755 (in the system's temporary
    /// directory: `/tmp` is sticky and this entry root's, so it passes).
    fn root_dir(tag: &str) -> TempDir {
        let d = TempDir::new(&format!("safe-path-{tag}"));
        chmod(&d, 0o755);
        d
    }

    #[test]
    fn a_script_in_directories_only_root_can_change_resolves_to_itself() {
        let d = root_dir("safe");
        let ok = script(&dir(&d, "health.d", 0o755).join("10-ok"), "ok");
        assert_eq!(program(&ok), Ok(ok.clone()));
    }

    #[test]
    fn a_group_writable_directory_is_refused_naming_it_and_its_mode() {
        let d = root_dir("group");
        let hd = dir(&d, "health.d", 0o775);
        let ok = script(&hd.join("10-ok"), "ok");
        assert_eq!(
            program(&ok),
            Err(format!(
                "directory {} is writable by group or others (mode 0775): others could replace {}; \
                 it would run as root",
                hd.display(),
                ok.display()
            ))
        );
    }

    #[test]
    fn a_world_writable_ancestor_is_refused_naming_it_and_its_mode() {
        let d = root_dir("world");
        let open = dir(&d, "srv", 0o777);
        let hd = dir(&open, "health.d", 0o755);
        let ok = script(&hd.join("10-ok"), "ok");
        assert_eq!(
            program(&ok),
            Err(format!(
                "directory {} is writable by group or others (mode 0777): others could replace {}; \
                 it would run as root",
                open.display(),
                hd.display()
            ))
        );
    }

    /// A `[health] dir` others could empty passes every verdict with no
    /// check: its list of programs must be root's to change.
    #[test]
    fn a_directory_of_programs_must_be_one_only_root_can_empty() {
        let d = root_dir("list");
        let safe = dir(&d, "health.d", 0o755);
        assert_eq!(program_dir(&safe), Ok(safe.clone()));
        // Sticky: others may add (refused at run time), not remove root's.
        let sticky = dir(&d, "sticky.d", 0o1777);
        assert_eq!(program_dir(&sticky), Ok(sticky.clone()));
        let linked = d.join("linked.d");
        symlink(&safe, &linked).expect("symlink");
        assert_eq!(program_dir(&linked), Ok(safe.clone()), "a link resolves");
        for mode in [0o775, 0o757, 0o777] {
            let open = dir(&d, &format!("open-{mode:o}.d"), mode);
            assert_eq!(
                program_dir(&open),
                Err(format!(
                    "writable by group or others (mode {mode:04o}): others could remove the programs in it"
                ))
            );
        }
        let theirs = dir(&d, "theirs.d", 0o755);
        chown(&theirs, Some(NOBODY), None).expect("chown");
        assert_eq!(
            program_dir(&theirs),
            Err(format!(
                "owned by uid {NOBODY}, neither root nor uid 0 that abupdate runs as: its owner could remove the programs in it"
            ))
        );
        // Safe itself, in a directory others could change: refused there.
        let open = dir(&d, "srv", 0o777);
        let inner = dir(&open, "health.d", 0o755);
        assert!(
            program_dir(&inner).is_err_and(|e| e.contains("mode 0777")),
            "{:?}",
            program_dir(&inner)
        );
        let file = script(&d.join("f"), "x");
        assert_eq!(program_dir(&file), Err("not a directory".into()));
    }

    #[test]
    fn a_sticky_directory_is_safe_for_what_root_owns_in_it() {
        let d = root_dir("sticky-root");
        let tmp = dir(&d, "tmp", 0o1777);
        let direct = script(&tmp.join("ok"), "ok");
        assert_eq!(program(&direct), Ok(direct.clone()));
        let below = script(&dir(&tmp, "hooks", 0o755).join("pre-install"), "ok");
        assert_eq!(program(&below), Ok(below.clone()));
    }

    #[test]
    fn a_sticky_directory_is_refused_for_what_another_user_owns_in_it() {
        let d = root_dir("sticky-nobody");
        let tmp = dir(&d, "tmp", 0o1777);
        let ok = script(&dir(&d, "lib", 0o755).join("ok"), "ok");
        // Their link to root's own script: they may point it elsewhere.
        let link = tmp.join("10-ok");
        symlink(&ok, &link).expect("symlink");
        lchown(&link, Some(NOBODY), Some(NOBODY)).expect("lchown");
        assert_eq!(
            program(&link),
            Err(format!(
                "{} is owned by uid {NOBODY} in directory {} (mode 1777), writable by others: \
                 its owner could replace it; it would run as root",
                link.display(),
                tmp.display()
            ))
        );
    }

    #[test]
    fn a_link_to_a_file_in_a_writable_directory_is_refused_naming_that_directory() {
        let d = root_dir("link-out");
        let open = dir(&d, "open", 0o777);
        let theirs = script(&open.join("ok"), "ok");
        let link = dir(&d, "health.d", 0o755).join("10-ok");
        symlink(&theirs, &link).expect("symlink");
        assert_eq!(
            program(&link),
            Err(format!(
                "directory {} is writable by group or others (mode 0777): others could replace {}; \
                 it would run as root",
                open.display(),
                theirs.display()
            ))
        );
    }

    /// The attack this rule answers: in a `health.d` of mode 0777 a user
    /// swapped `10-ok` between a link to root's own program and their own.
    #[test]
    fn a_link_in_a_writable_directory_is_refused_though_its_target_is_safe() {
        let d = root_dir("link-in");
        let ok = script(&dir(&d, "lib", 0o755).join("ok"), "ok");
        let hd = dir(&d, "health.d", 0o777);
        let link = hd.join("10-ok");
        symlink(&ok, &link).expect("symlink");
        assert_eq!(
            program(&link),
            Err(format!(
                "directory {} is writable by group or others (mode 0777): others could replace {}; \
                 it would run as root",
                hd.display(),
                link.display()
            ))
        );
    }

    #[test]
    fn a_directory_or_a_file_another_user_owns_is_refused() {
        let d = root_dir("owner");
        let theirs = dir(&d, "theirs", 0o755);
        chown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");
        let ok = script(&theirs.join("ok"), "ok");
        assert_eq!(
            program(&ok),
            Err(format!(
                "directory {} is owned by uid {NOBODY}, neither root nor uid 0 that abupdate runs as: \
                 its owner could replace {}; it would run as root",
                theirs.display(),
                ok.display()
            ))
        );
        let file = script(&d.join("their-script"), "ok");
        chown(&file, Some(NOBODY), Some(NOBODY)).expect("chown");
        assert_eq!(
            program(&file),
            Err(format!(
                "owned by uid {NOBODY}, neither root nor uid 0 that abupdate runs as"
            ))
        );
    }

    #[test]
    fn links_resolve_relative_and_absolute_to_the_file_they_name() {
        let d = root_dir("links");
        let lib = dir(&d, "lib", 0o755);
        dir(&lib, "x", 0o755);
        let ok = script(&lib.join("ok"), "ok");
        let hd = dir(&d, "health.d", 0o755);
        symlink("../lib/./x/../ok", hd.join("10-rel")).expect("symlink");
        symlink(hd.join("10-rel"), hd.join("20-abs")).expect("symlink");
        assert_eq!(program(&hd.join("10-rel")), Ok(ok.clone()));
        assert_eq!(program(&hd.join("20-abs")), Ok(ok.clone()));
        // What fails is named when it is a link's target.
        chmod(&ok, 0o644);
        assert_eq!(
            program(&hd.join("20-abs")),
            Err(format!("{}: not executable (mode 0644)", ok.display()))
        );
    }

    /// A file root trusts (the config, a trusted key) is judged as a
    /// program is, but need not be executable, and its refusal names what
    /// others would gain: root's trust, not a run.
    #[test]
    fn a_trusted_file_must_be_roots_alone_and_its_refusal_says_root_would_trust_it() {
        let d = root_dir("trusted-file");
        let keys = dir(&d, "keys", 0o755);
        let key = keys.join("release.pub");
        std::fs::write(&key, "key").expect("write");
        chmod(&key, 0o644);
        assert_eq!(trusted_file(&key), Ok(key.clone()));
        let linked = d.join("linked.pub");
        symlink(&key, &linked).expect("symlink");
        assert_eq!(trusted_file(&linked), Ok(key.clone()), "a link resolves");
        for mode in [0o664, 0o646, 0o666] {
            chmod(&key, mode);
            assert_eq!(
                trusted_file(&key),
                Err(format!(
                    "writable by group or others (mode {mode:04o}): others could change it; \
                     root would trust what they put there (chmod go-w)"
                ))
            );
        }
        chmod(&key, 0o644);
        chown(&key, Some(NOBODY), None).expect("chown");
        assert_eq!(
            trusted_file(&key),
            Err(format!(
                "owned by uid {NOBODY}, neither root nor uid 0 that abupdate runs as: its owner \
                 could change it; root would trust what they put there"
            ))
        );
        chown(&key, Some(0), None).expect("chown back");
        // Safe itself, in a directory others could write: refused there.
        chmod(&keys, 0o777);
        assert_eq!(
            trusted_file(&key),
            Err(format!(
                "directory {} is writable by group or others (mode 0777): others could replace {}; \
                 root would trust what they put there",
                keys.display(),
                key.display()
            ))
        );
        assert_eq!(trusted_file(&d), Err("not a regular file".into()));
    }

    /// A directory of trusted files (keys, config drop-ins, the state) may
    /// not be sticky: what others add there would be read as root's, where
    /// a program others add to a sticky `health.d` is refused on its own.
    #[test]
    fn a_trusted_directory_must_be_roots_alone_and_sticky_is_not_enough() {
        let d = root_dir("trusted-dir");
        let safe = dir(&d, "keys", 0o755);
        assert_eq!(trusted_dir(&safe), Ok(safe.clone()));
        let linked = d.join("keys.link");
        symlink(&safe, &linked).expect("symlink");
        assert_eq!(trusted_dir(&linked), Ok(safe.clone()), "a link resolves");
        for mode in [0o775, 0o757, 0o1777] {
            let open = dir(&d, &format!("open-{mode:o}"), mode);
            assert_eq!(
                trusted_dir(&open),
                Err(format!(
                    "writable by group or others (mode {mode:04o}): others could add or replace \
                     files in it; root would trust what they put there (chmod go-w)"
                ))
            );
        }
        let sticky = dir(&d, "sticky", 0o1777);
        assert_eq!(program_dir(&sticky), Ok(sticky.clone()), "programs: fine");
        let theirs = dir(&d, "theirs", 0o755);
        chown(&theirs, Some(NOBODY), None).expect("chown");
        assert!(
            trusted_dir(&theirs).is_err_and(|e| e.starts_with(&format!("owned by uid {NOBODY}"))),
            "{:?}",
            trusted_dir(&theirs)
        );
        let file = d.join("f");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(trusted_dir(&file), Err("not a directory".into()));
    }

    #[test]
    fn a_link_loop_and_a_file_taken_for_a_directory_fail_in_the_kernels_words() {
        let d = root_dir("loop");
        symlink(d.join("b"), d.join("a")).expect("symlink");
        symlink(d.join("a"), d.join("b")).expect("symlink");
        assert_eq!(
            program(&d.join("a")),
            Err("Too many levels of symbolic links (os error 40)".into())
        );
        let ok = script(&d.join("ok"), "ok");
        assert_eq!(
            program(&ok.join("x")),
            Err("Not a directory (os error 20)".into())
        );
    }

    /// The link is swapped between the check and the run (what the
    /// attacker raced): the program judged is the one that runs.
    #[test]
    fn the_command_runs_the_file_judged_though_the_link_is_swapped_after() {
        let d = root_dir("swap");
        let lib = dir(&d, "lib", 0o755);
        let good = script(&lib.join("good"), "judged");
        let other = script(&lib.join("other"), "swapped-in");
        let link = dir(&d, "health.d", 0o755).join("10-ok");
        symlink(&good, &link).expect("symlink");
        let mut cmd = command(&link).expect("a safe link");
        assert_eq!(cmd.get_program(), good.as_os_str());
        let new = link.with_file_name(".10-ok.new");
        symlink(&other, &new).expect("symlink");
        std::fs::rename(&new, &link).expect("swap the link");
        let out = cmd.output().expect("run");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "judged\n");
    }

    /// A bare name (the reboot command's `systemctl`) is looked up as a
    /// shell would, and the first directory holding it decides: a copy in
    /// a directory others can write is refused, naming it, though a safe
    /// one comes later in `PATH`.
    #[test]
    fn a_bare_name_runs_from_the_first_directory_of_path_that_holds_it_when_safe() {
        let d = root_dir("on-path");
        let safe = dir(&d, "safe", 0o755);
        let good = script(&safe.join("reboot-now"), "safe");
        let open = dir(&d, "open", 0o777);
        let search = |dirs: &[&Path]| std::env::join_paths(dirs).expect("PATH");
        let cmd = command_on_path("reboot-now", Some(&search(&[&safe]))).expect("safe");
        assert_eq!(cmd.get_program(), good.as_os_str());
        // Relative entries are never searched; a directory without the name
        // is passed over.
        let cmd = command_on_path(
            "reboot-now",
            Some(&search(&[Path::new("safe"), &open, &safe])),
        )
        .expect("relative entry skipped");
        assert_eq!(cmd.get_program(), good.as_os_str());
        let planted = script(&open.join("reboot-now"), "planted");
        let e = command_on_path("reboot-now", Some(&search(&[&open, &safe]))).expect_err("open");
        assert!(e.starts_with(&format!("{}: ", planted.display())), "{e}");
        assert!(e.contains("mode 0777"), "{e}");
        // A name with a slash is a path; a name found nowhere says where it
        // was looked for.
        let cmd = command_on_path(good.to_str().expect("utf-8"), None).expect("a path");
        assert_eq!(cmd.get_program(), good.as_os_str());
        assert_eq!(
            command_on_path("no-such-program", Some(&search(&[&safe]))).map(|_| ()),
            Err(format!(
                "no-such-program: not found in PATH ({})",
                safe.display()
            ))
        );
    }

    /// An empty `PATH`, or one of relative entries only, is no `PATH`: the
    /// default is searched (stop 58: searched nowhere, a unit check and
    /// the reboot command failed). A usable one is kept.
    #[test]
    fn a_path_without_an_absolute_directory_is_no_path() {
        for none in [None, Some(""), Some(":"), Some(".:bin")] {
            assert_eq!(
                search_path(none.map(OsStr::new)),
                OsStr::new(DEFAULT_PATH),
                "{none:?}"
            );
        }
        assert_eq!(search_path(Some(OsStr::new(".:/opt/bin"))), ".:/opt/bin");
        let e = command_on_path("no-such-program", Some(OsStr::new(""))).map(|_| ());
        assert_eq!(
            e,
            Err(format!(
                "no-such-program: not found in PATH ({DEFAULT_PATH})"
            ))
        );
    }
}
