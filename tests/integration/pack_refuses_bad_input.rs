//! `pack` refuses what would make a broken or dangerous release, with one
//! line naming the option or file, before it writes anything; and it never
//! replaces a payload that a published manifest may point to.

use crate::common::host::{
    bin, image, run, scratch, sha, snapshot, text, HostOptions, TestHost, COMPATIBLE,
};
use std::path::Path;
use std::process::{Command, Output};

fn pack(key: &Path, out: &Path, args: &[&str]) -> Output {
    run(Command::new(bin())
        .args(["pack", "--secret"])
        .arg(key)
        .args(["--compatible", COMPATIBLE, "--level", "3", "--out"])
        .arg(out)
        .args(args))
}

/// Issue 20.8 (pack half) and the minors of issue 20: an image class
/// escaping `--out`, a class given twice, an empty class, a directory or an
/// empty file as the image (also with `--segment-size 1`), a percentage
/// that is not one, `--expires` before `--created`, an `--expires-days`
/// that overflows, `--segment-size 0` were all accepted.
#[test]
fn pack_refuses_bad_input_and_writes_nothing() {
    let h = TestHost::new("pack-refuses", "1.0", HostOptions::default());
    let work = scratch("pack-refuses-work");
    let img = work.join("rootfs.img");
    std::fs::write(&img, image("2.0", 1 << 20)).expect("image");
    let other = work.join("other.img");
    std::fs::write(&other, image("2.1", 1 << 20)).expect("image");
    let empty = work.join("empty.img");
    std::fs::write(&empty, b"").expect("image");
    let i = |class: &str, p: &Path| format!("--image={class}={}", p.display());
    let dir = work.join("a-directory");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cases: Vec<(&str, Vec<String>, i32, &str)> = vec![
        (
            "class escaping --out",
            vec![i("../../escaped", &img)],
            2,
            "../../escaped",
        ),
        ("empty class", vec![i("", &img)], 2, "a class is"),
        (
            "duplicate class",
            vec![i("rootfs", &img), i("rootfs", &other)],
            2,
            "class given twice",
        ),
        (
            "directory as image",
            vec![i("rootfs", &dir)],
            1,
            "not a regular file",
        ),
        (
            "empty image",
            vec![i("rootfs", &empty)],
            1,
            "an empty image",
        ),
        (
            "empty image in segments",
            vec![i("rootfs", &empty), "--segment-size=1".into()],
            1,
            "an empty image",
        ),
        (
            "percent nan",
            vec![i("rootfs", &img), "--percent=nan".into()],
            2,
            "--percent NaN",
        ),
        (
            "percent inf",
            vec![i("rootfs", &img), "--percent=inf".into()],
            2,
            "--percent inf",
        ),
        (
            "percent 150",
            vec![i("rootfs", &img), "--percent=150".into()],
            2,
            "--percent 150",
        ),
        (
            "percent -5",
            vec![i("rootfs", &img), "--percent=-5".into()],
            2,
            "--percent -5",
        ),
        (
            "expires before created",
            vec![
                i("rootfs", &img),
                "--created=2030-01-02T00:00:00Z".into(),
                "--expires=2030-01-01T00:00:00Z".into(),
            ],
            2,
            "is not after --created",
        ),
        // Found from outside: these two exited 1 after making --out.
        (
            "expires in the past",
            vec![i("rootfs", &img), "--expires=2001-01-01T00:00:00Z".into()],
            2,
            "is not after the manifest's created",
        ),
        (
            "expires past the hosts' limit",
            vec![
                i("rootfs", &img),
                "--created=2026-12-01T00:00:00Z".into(),
                "--expires=2036-11-29T00:00:00Z".into(),
            ],
            2,
            "is more than 3650 days after the manifest's created",
        ),
        (
            "expires-days overflow",
            vec![i("rootfs", &img), "--expires-days=999999999999999".into()],
            2,
            "--expires-days",
        ),
        (
            "segment size 0",
            vec![i("rootfs", &img), "--segment-size=0".into()],
            2,
            "--segment-size 0",
        ),
        (
            "segment size overflow",
            vec![i("rootfs", &img), "--segment-size=99999999999999".into()],
            2,
            "--segment-size",
        ),
    ];
    for (what, args, code, want) in cases {
        let out_dir = work.join("out/release");
        let _ = std::fs::remove_dir_all(work.join("out"));
        let args: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .chain(["--version", "2.0"])
            .collect();
        let out = pack(&h.secret_key, &out_dir, &args);
        assert_eq!(out.status.code(), Some(code), "{what}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{what}: not one line: {err}"
        );
        assert!(err.contains(want), "{what}: {err}");
        assert!(!out_dir.exists(), "{what}: --out made");
        assert!(
            !work.join("escaped-2.0.img.zst").exists()
                && !work.join("out/escaped-2.0.img.zst").exists(),
            "{what}: wrote outside --out"
        );
    }
}

/// Found from outside: `--created` and `--expires` both in the past
/// signed a release every host refuses as expired, silently. It is still
/// written (releases for tests of expiry are made so), with a note saying
/// hosts refuse it.
#[test]
fn a_release_packed_already_expired_is_written_with_a_note() {
    let h = TestHost::new("pack-expired", "1.0", HostOptions::default());
    let work = scratch("pack-expired-work");
    let img = work.join("rootfs.img");
    std::fs::write(&img, image("2.0", 1 << 20)).expect("image");
    let image_arg = format!("--image=rootfs={}", img.display());
    let dates = [
        "--created=2020-01-01T00:00:00Z",
        "--expires=2021-01-01T00:00:00Z",
    ];
    let out_dir = work.join("out");
    let args = [&image_arg, dates[0], dates[1], "--version", "2.0"];
    let out = pack(&h.secret_key, &out_dir, &args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("note: --expires 2021-01-01T00:00:00Z is not after this clock (",)
            && text(&out).contains("hosts refuse this release as expired"),
        "{}",
        text(&out)
    );
    assert!(out_dir.join("release.json").exists());
}

/// Issue 20.3: re-packing the same version into a published directory
/// rewrote its payload in place; killed midway, it left the old manifest
/// and signature over a truncated payload and hosts marked the slot bad.
/// A payload a published manifest may point to is never replaced: the
/// same bytes are kept, other bytes are refused (now already as another
/// build of the version, before any payload is written).
#[test]
fn re_packing_a_version_with_other_bytes_never_touches_the_published_payload() {
    let h = TestHost::new("pack-no-clobber", "1.0", HostOptions::default());
    let work = scratch("pack-no-clobber-work");
    let (a, b) = (work.join("a.img"), work.join("b.img"));
    std::fs::write(&a, image("2.0", 1 << 20)).expect("image");
    let mut other = image("2.0", 1 << 20);
    other[4096] ^= 1;
    std::fs::write(&b, other).expect("image");
    for (round, args) in [vec!["--percent", "100"], vec!["--segment-size", "1"]]
        .into_iter()
        .enumerate()
    {
        // A directory per round: the host keeps what it verified from each
        // place, and two packs in one second share a `created`.
        let out_dir = work.join(format!("rel-{round}"));
        let with = |p: &Path| {
            let mut v = vec![format!("--image=rootfs={}", p.display())];
            v.extend(args.iter().map(|s| s.to_string()));
            v.extend(["--version".to_string(), "2.0".to_string()]);
            v
        };
        let run_with = |p: &Path| {
            let v = with(p);
            pack(
                &h.secret_key,
                &out_dir,
                &v.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        };
        let out = run_with(&a);
        assert!(out.status.success(), "{}", text(&out));
        let published = snapshot(&out_dir);
        let out = run_with(&b);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("already holds version 2.0 as build"), "{err}");
        assert_eq!(
            snapshot(&out_dir),
            published,
            "{args:?}: the directory changed"
        );
        // The same bytes again: the payload is kept, the manifest re-signed.
        let out = run_with(&a);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let again = snapshot(&out_dir);
        assert_eq!(again["rootfs-2.0.img.zst"], published["rootfs-2.0.img.zst"]);
        let m = out_dir.join("release.json");
        let out = h.abupdate(&["install", "--no-reboot", m.to_str().expect("p")]);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
}

/// Found from outside: a `pack` that failed after writing a payload (here
/// its second image's name is taken by other bytes) left the first image's
/// payload in `--out`, named by no manifest; packing the version again was
/// then refused ("already exists with other bytes"), and a sync of the
/// directory would have published it. A failed `pack` removes the payloads
/// it wrote, and only those: the taken name stays, and so does a payload
/// the published manifest names.
#[test]
fn a_failed_pack_leaves_no_payload_behind() {
    let h = TestHost::new("pack-no-orphan", "1.0", HostOptions::default());
    let work = scratch("pack-no-orphan-work");
    let (a, b) = (work.join("a.img"), work.join("b.img"));
    std::fs::write(&a, image("3.0", 1 << 20)).expect("image");
    std::fs::write(&b, image("3.0b", 1 << 20)).expect("image");
    let out_dir = work.join("rel");
    std::fs::create_dir_all(&out_dir).expect("out");
    // A release packed here before, whose payload must stay.
    let first = pack(
        &h.secret_key,
        &out_dir,
        &[
            &format!("--image=rootfs={}", a.display()),
            "--version",
            "2.0",
        ],
    );
    assert!(first.status.success(), "{}", text(&first));
    let taken = out_dir.join("second-3.0.img.zst");
    std::fs::write(&taken, b"someone else's bytes").expect("taken");
    let before = snapshot(&out_dir);
    let args = [
        format!("--image=rootfs={}", a.display()),
        format!("--image=second={}", b.display()),
        "--version".into(),
        "3.0".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pack(&h.secret_key, &out_dir, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("second-3.0.img.zst: already exists"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(&out_dir), before, "a payload was left behind");
    std::fs::remove_file(&taken).expect("free the name");
    let out = pack(&h.secret_key, &out_dir, &args);
    assert!(out.status.success(), "packing 3.0 again: {}", text(&out));
}

/// `pack --out DIR` over a signed release.json of the same version with
/// other images (another build) replaced it silently whenever no payload
/// name collided (the image uncompressed now, or a class added): hosts
/// that installed the first build refuse the second as "not newer", and
/// the fleet stayed split between two builds under one version. Refused
/// now with one line naming the file, the version and both builds, exit 1,
/// nothing written; the same images again (the same build) are re-packed.
#[test]
fn another_build_of_the_version_in_the_directory_is_refused_naming_both_builds() {
    let h = TestHost::new("pack-rebuild", "1.0", HostOptions::default());
    let work = scratch("pack-rebuild-work");
    let (root, other, boot) = (
        work.join("root.img"),
        work.join("other.img"),
        work.join("boot.img"),
    );
    let root_bytes = image("2.0", 1 << 20);
    let mut other_bytes = root_bytes.clone();
    other_bytes[4096] ^= 1;
    let boot_bytes = image("boot", 1 << 16);
    for (path, bytes) in [
        (&root, &root_bytes),
        (&other, &other_bytes),
        (&boot, &boot_bytes),
    ] {
        std::fs::write(path, bytes).expect("image");
    }
    let build = |images: &[(&str, &[u8])]| {
        let listing: Vec<_> = images.iter().map(|(c, d)| (*c, sha(d), d.len())).collect();
        abupdate::manifest::build_id(listing.iter().map(|(c, s, n)| (*c, s.as_str(), *n as u64)))
    };
    let first = build(&[("rootfs", &root_bytes)]);
    let image_arg = |class: &str, p: &Path| format!("--image={class}={}", p.display());
    let out_dir = work.join("rel");
    let m = out_dir.join("release.json");
    let root_arg = image_arg("rootfs", &root);
    let out = pack(&h.secret_key, &out_dir, &[&root_arg, "--version", "2.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let published = snapshot(&out_dir);
    for (args, rebuilt) in [
        (
            vec![image_arg("rootfs", &other), "--no-compress".into()],
            build(&[("rootfs", &other_bytes)]),
        ),
        (
            vec![root_arg.clone(), image_arg("boot", &boot)],
            build(&[("rootfs", &root_bytes), ("boot", &boot_bytes)]),
        ),
    ] {
        let mut given: Vec<&str> = args.iter().map(String::as_str).collect();
        given.extend(["--version", "2.0"]);
        let out = pack(&h.secret_key, &out_dir, &given);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            format!(
                "abupdate: {}: already holds version 2.0 as build {first}; these images are build \
                 {rebuilt}, which hosts that installed build {first} refuse as not newer: \
                 pack them as a new --version",
                m.display()
            ),
            "{args:?}"
        );
        assert_eq!(
            snapshot(&out_dir),
            published,
            "{args:?}: the directory changed"
        );
    }
    // The same images again: the same build, re-signed; another version of
    // other images is a new release.
    let out = pack(&h.secret_key, &out_dir, &[&root_arg, "--version", "2.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("manifest")).expect("json");
    assert_eq!(
        doc["images"],
        serde_json::from_slice::<serde_json::Value>(&published["release.json"]).expect("json")
            ["images"]
    );
    let other_arg = image_arg("rootfs", &other);
    let out = pack(&h.secret_key, &out_dir, &[&other_arg, "--version", "2.1"]);
    assert!(out.status.success(), "{}", text(&out));
    // Found from outside (stop 47): another product's release over this
    // one was written, and this product's hosts lost their release. It is
    // refused, naming what the directory holds, as `fleet --out` refuses.
    let published = snapshot(&out_dir);
    let out = run(Command::new(bin())
        .args(["pack", "--secret"])
        .arg(&h.secret_key)
        .args(["--compatible", "other-product", "--level", "3", "--out"])
        .arg(&out_dir)
        .args([other_arg.as_str(), "--version", "0.5"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "abupdate: {}: holds release 2.1 of {COMPATIBLE}, not of other-product: pack would \
             replace it (use another --out, or remove it first)",
            m.display()
        )
    );
    assert_eq!(snapshot(&out_dir), published, "the directory changed");
    // `--out` a file: named as what it is not (it said "File exists").
    let file = work.join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let out = pack(&h.secret_key, &file, &[&root_arg, "--version", "3.0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "abupdate: {}: not a directory (a release directory, --out)",
            file.display()
        )
    );
    // `--out` a link to nothing (found from outside: "File exists" again).
    let dangling = work.join("a-dangling-link");
    std::os::unix::fs::symlink(work.join("nowhere"), &dangling).expect("symlink");
    let out = pack(&h.secret_key, &dangling, &[&root_arg, "--version", "3.0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "abupdate: {}: a symbolic link to nothing (a release directory, --out)",
            dangling.display()
        )
    );
}

/// Attack 7, N5: the guard compared version strings, so `--version 2.0.0`
/// (or `2`, `02.0`, `2.0.0.0`) over a directory holding 2.0 signed other
/// images; hosts compare versions as numbers (`2.0` = `2.0.0`) and those on
/// 2.0 refused the release as not newer. Each is refused now, naming the
/// version as the directory holds it; `2.0.1` is a new release.
#[test]
fn another_build_under_an_equal_version_written_otherwise_is_refused() {
    let h = TestHost::new("pack-rebuild-spelling", "1.0", HostOptions::default());
    let work = scratch("pack-rebuild-spelling-work");
    let (root, other) = (work.join("root.img"), work.join("other.img"));
    let root_bytes = image("2.0", 1 << 20);
    let mut other_bytes = root_bytes.clone();
    other_bytes[4096] ^= 1;
    std::fs::write(&root, &root_bytes).expect("image");
    std::fs::write(&other, &other_bytes).expect("image");
    let out_dir = work.join("rel");
    let m = out_dir.join("release.json");
    let root_arg = format!("--image=rootfs={}", root.display());
    let other_arg = format!("--image=rootfs={}", other.display());
    let out = pack(&h.secret_key, &out_dir, &[&root_arg, "--version", "2.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let published = snapshot(&out_dir);
    for version in ["2.0.0", "2", "02.0", "2.00", "2.0.0.0"] {
        let out = pack(&h.secret_key, &out_dir, &[&other_arg, "--version", version]);
        assert_eq!(out.status.code(), Some(1), "{version}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!(
                "abupdate: {}: already holds version 2.0 as build",
                m.display()
            )),
            "{version}: {err}"
        );
        let unchanged = snapshot(&out_dir) == published;
        assert!(unchanged, "{version}: the directory changed");
    }
    let out = pack(&h.secret_key, &out_dir, &[&other_arg, "--version", "2.0.1"]);
    assert!(out.status.success(), "{}", text(&out));
}
