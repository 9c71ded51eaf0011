//! Interoperability with the real `minisign` binary (jedisct1/minisign).
//!
//! Each direction is checked: files minisign writes are read and verified by
//! abupdate, and files abupdate writes are accepted by `minisign -V` / `-S` /
//! `-R`. A modified file must fail on both sides. When the binary is absent
//! the tests print a loud notice and pass; CI installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use abupdate::trust::minisign::{
    generate_keypair, prehash, sign, MinisignError, PublicKey, SecretKey, Signature,
};

fn have_minisign() -> bool {
    match Command::new("minisign").arg("-v").output() {
        Ok(o) => {
            eprintln!("using {}", String::from_utf8_lossy(&o.stdout).trim());
            true
        }
        Err(e) => {
            eprintln!(
                "\n!!!!!!!! SKIPPING minisign interop test: cannot run `minisign` ({e}).\n\
                 !!!!!!!! Install it (apt-get install minisign) to check compatibility.\n"
            );
            false
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        TempDir(crate::common::host::scratch(&format!(
            "minisign-interop-{tag}"
        )))
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).expect("write temp file");
        p
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read temp file")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs minisign in `dir`; stdin is /dev/null unless given, so a password
/// prompt can never hang the test.
fn minisign(dir: &TempDir, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("minisign");
    cmd.args(args).current_dir(&dir.0);
    let out = match stdin {
        None => cmd.stdin(Stdio::null()).output(),
        Some(input) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn minisign");
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
            child.wait_with_output()
        }
    };
    out.expect("run minisign")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen_w(dir: &TempDir) -> (PathBuf, PathBuf) {
    let out = minisign(dir, &["-G", "-W", "-p", "k.pub", "-s", "k.key"], None);
    ok(&out, "minisign -G -W");
    (dir.path("k.pub"), dir.path("k.key"))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

const DATA: &[u8] = b"{\"format\":1,\"version\":\"2026.11.3\"}\n";

fn modified() -> Vec<u8> {
    let mut m = DATA.to_vec();
    m[12] ^= 1;
    m
}

/// (1) minisign's default (prehashed) signature verifies with ours.
#[test]
fn minisign_prehashed_signature_verifies_with_ours() {
    if !have_minisign() {
        return;
    }
    let d = TempDir::new("prehashed");
    keygen_w(&d);
    let file = d.write("release.json", DATA);
    ok(
        &minisign(
            &d,
            &[
                "-S",
                "-s",
                "k.key",
                "-m",
                p(&file),
                "-t",
                "v=2026.11.3\tch=stable",
            ],
            None,
        ),
        "minisign -S",
    );
    let pk = PublicKey::parse(&d.read("k.pub")).expect("parse minisign .pub");
    let sig = Signature::parse(&d.read("release.json.minisig")).expect("parse .minisig");
    assert!(sig.prehashed, "minisign 0.11 signs prehashed by default");
    assert_eq!(sig.key_id, pk.key_id);
    assert_eq!(sig.trusted_comment, "v=2026.11.3\tch=stable");
    sig.verify(&pk, DATA).expect("minisign signature verifies");
    sig.verify_prehashed(&pk, &prehash(DATA).expect("hash"))
        .expect("streamed check verifies");

    assert!(matches!(
        sig.verify(&pk, &modified()),
        Err(MinisignError::BadSignature { .. })
    ));
    // minisign's own key-id line agrees with ours.
    assert!(d.read("k.pub").starts_with(&format!(
        "untrusted comment: minisign public key {}\n",
        pk.key_id_hex()
    )));
}

/// (2) minisign's legacy (`-l`, sig_alg `Ed`) signature verifies with ours.
#[test]
fn minisign_legacy_signature_verifies_with_ours() {
    if !have_minisign() {
        return;
    }
    let d = TempDir::new("legacy");
    keygen_w(&d);
    let file = d.write("release.json", DATA);
    ok(
        &minisign(&d, &["-S", "-l", "-s", "k.key", "-m", p(&file)], None),
        "minisign -S -l",
    );
    let pk = PublicKey::parse(&d.read("k.pub")).expect("parse .pub");
    let sig = Signature::parse(&d.read("release.json.minisig")).expect("parse legacy sig");
    assert!(!sig.prehashed, "-l makes an `Ed` signature");
    sig.verify(&pk, DATA).expect("legacy signature verifies");
    assert!(matches!(
        sig.verify(&pk, &modified()),
        Err(MinisignError::BadSignature { .. })
    ));
    assert!(matches!(
        sig.verify_prehashed(&pk, &prehash(DATA).expect("hash")),
        Err(MinisignError::LegacyNeedsMessage { .. })
    ));
}

/// (3) Our key pair and signature are accepted by `minisign -V`, which
/// prints the trusted comment; a modified file is refused.
#[test]
fn our_signature_verifies_with_minisign() {
    if !have_minisign() {
        return;
    }
    let d = TempDir::new("ours-to-minisign");
    let (sk, pk) = generate_keypair().expect("keygen");
    let pub_file = d.write("ours.pub", pk.to_file_string());
    let file = d.write("release.json", DATA);
    let comment = "timestamp:1795000000\tfile:release.json\tversion:2026.11.3";
    d.write("release.json.minisig", sign(&sk, DATA, comment));

    let out = ok(
        &minisign(&d, &["-V", "-p", p(&pub_file), "-m", p(&file)], None),
        "minisign -V of our signature",
    );
    assert!(
        out.contains(&format!("Trusted comment: {comment}")),
        "minisign output: {out}"
    );
    // -H: minisign insists the signature is prehashed; ours is.
    ok(
        &minisign(
            &d,
            &["-V", "-H", "-P", &pk.to_base64(), "-m", p(&file)],
            None,
        ),
        "minisign -V -H -P",
    );

    d.write("release.json", modified());
    let out = minisign(&d, &["-V", "-p", p(&pub_file), "-m", p(&file)], None);
    assert!(!out.status.success(), "minisign accepted a modified file");

    // And a tampered trusted comment is caught by minisign too.
    d.write("release.json", DATA);
    let tampered = d
        .read("release.json.minisig")
        .replace("2026.11.3", "2026.11.4");
    d.write("release.json.minisig", tampered);
    let out = minisign(&d, &["-V", "-p", p(&pub_file), "-m", p(&file)], None);
    assert!(
        !out.status.success(),
        "minisign accepted an altered trusted comment"
    );
}

/// (4) Our secret key file signs with `minisign -S` (no password prompt),
/// and both sides verify the result; `minisign -R` recovers our .pub.
#[test]
fn our_secret_key_works_in_minisign() {
    if !have_minisign() {
        return;
    }
    let d = TempDir::new("our-seckey");
    let (sk, pk) = generate_keypair().expect("keygen");
    let key_file = d.write("ours.key", sk.to_file_string());
    let file = d.write("payload.bin", DATA);
    ok(
        &minisign(
            &d,
            &[
                "-S",
                "-s",
                p(&key_file),
                "-m",
                p(&file),
                "-t",
                "made by minisign",
            ],
            None,
        ),
        "minisign -S with our key",
    );
    let sig = Signature::parse(&d.read("payload.bin.minisig")).expect("parse");
    assert_eq!(sig.key_id, pk.key_id);
    sig.verify(&pk, DATA).expect("verifies with our public key");
    assert!(sig.verify(&pk, &modified()).is_err());
    let pub_file = d.write("ours.pub", pk.to_file_string());
    ok(
        &minisign(&d, &["-V", "-p", p(&pub_file), "-m", p(&file)], None),
        "minisign -V",
    );

    ok(
        &minisign(&d, &["-R", "-s", p(&key_file), "-p", "recreated.pub"], None),
        "minisign -R",
    );
    assert_eq!(d.read("recreated.pub"), pk.to_file_string());
}

/// (5) A `minisign -G -W` secret key loads here and belongs to its .pub
/// (minisign 0.11 leaves the checksum of such keys all zero), and what we
/// sign with it minisign accepts.
#[test]
fn minisign_unencrypted_secret_key_loads() {
    if !have_minisign() {
        return;
    }
    let d = TempDir::new("w-key");
    keygen_w(&d);
    let sk = SecretKey::parse(&d.read("k.key")).expect("parse -W secret key");
    let pk = PublicKey::parse(&d.read("k.pub")).expect("parse .pub");
    assert_eq!(sk.public_key(), pk);
    assert_eq!(sk.key_id(), pk.key_id);

    let file = d.write("f", DATA);
    d.write("f.minisig", sign(&sk, DATA, "signed by abupdate"));
    let out = ok(
        &minisign(&d, &["-V", "-p", "k.pub", "-m", p(&file)], None),
        "minisign -V",
    );
    assert!(out.contains("Trusted comment: signed by abupdate"), "{out}");
}

/// A password-protected key is refused with the actionable message; once
/// `minisign -C -W` removes the password the key carries minisign's real
/// BLAKE2b checksum, which ours must reproduce (and a corrupted one fail).
#[test]
fn password_keys_refused_and_minisign_checksum_matches_ours() {
    if !have_minisign() {
        return;
    }
    let d = TempDir::new("pw-key");
    ok(
        &minisign(&d, &["-G", "-p", "e.pub", "-s", "e.key"], Some("pw\npw\n")),
        "minisign -G with password",
    );
    let e = SecretKey::parse(&d.read("e.key")).expect_err("encrypted key");
    assert!(matches!(e, MinisignError::PasswordProtected));
    assert_eq!(
        e.to_string(),
        "secret key is password-protected; make one with `minisign -G -W` or `abupdate keygen`"
    );

    ok(
        &minisign(&d, &["-C", "-W", "-s", "e.key"], Some("pw\n")),
        "minisign -C -W",
    );
    let text = d.read("e.key");
    let sk = SecretKey::parse(&text).expect("decrypted key with real checksum");
    assert_eq!(
        sk.public_key(),
        PublicKey::parse(&d.read("e.pub")).expect("pub")
    );

    // The checksum is the last 32 bytes (43 base64 chars + '='); it is
    // non-zero here, so flipping one of its bits must be detected.
    let line = text.lines().nth(1).expect("key line").to_owned();
    assert!(!line.ends_with("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
    let pos = line.len() - 10;
    let flipped: String = line
        .char_indices()
        .map(|(i, c)| {
            if i == pos {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    assert!(matches!(
        SecretKey::parse(&text.replace(&line, &flipped)),
        Err(MinisignError::ChecksumMismatch { .. })
    ));
}

/// Regression (one key in sixteen failed `our_secret_key_works_in_minisign`):
/// a key id whose top hex digit is 0 must be written as minisign writes it,
/// without leading zeros, so `minisign -R` recreates our `.pub` exactly.
#[test]
fn key_ids_with_leading_zeros_match_minisign() {
    if !have_minisign() {
        return;
    }
    let d = TempDir::new("leading-zeros");
    let (sk, pk) = (0..400)
        .map(|_| generate_keypair().expect("keypair"))
        .find(|(_, pk)| u64::from_le_bytes(pk.key_id) >> 60 == 0)
        .expect("a key id with a leading zero digit in 400 tries");
    let key_file = d.write("zero.key", sk.to_file_string());
    ok(
        &minisign(&d, &["-R", "-s", p(&key_file), "-p", "recreated.pub"], None),
        "minisign -R",
    );
    assert_eq!(d.read("recreated.pub"), pk.to_file_string());
}

/// What `pack` and `fleet` publish, m-of-n with a key minisign made
/// (`-G -W`) and one of ours: every signature they write, under the
/// standard names and under the names bound to the manifest's bytes, is
/// accepted by `minisign -V` for the manifest it belongs to.
#[test]
fn minisign_accepts_every_signature_pack_and_fleet_write() {
    if !have_minisign() {
        return;
    }
    let d = TempDir::new("pack-fleet");
    let (m_pub, m_key) = keygen_w(&d);
    let (sk, pk) = generate_keypair().expect("keygen");
    let ours_key = d.write("ours.key", sk.to_file_string());
    let keys = d.path("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    std::fs::copy(&m_pub, keys.join("minisign.pub")).expect("copy");
    std::fs::write(keys.join("ours.pub"), pk.to_file_string()).expect("write");
    let image = d.write("rootfs.img", vec![7u8; 300_000]);
    let rel = d.path("rel");
    let bin = env!("CARGO_BIN_EXE_abupdate");
    let out = Command::new(bin)
        .args(["pack", "--secret", p(&m_key), "--secret", p(&ours_key)])
        .args([
            "--compatible",
            "interop",
            "--version",
            "2.0",
            "--level",
            "3",
        ])
        .args(["--percent", "1", "--out", p(&rel)])
        .arg(format!("--image=rootfs={}", p(&image)))
        .output()
        .expect("pack");
    ok(&out, "abupdate pack");
    let reports = d.write(
        "reports.jsonl",
        r#"{"host":"h","compatible":"interop","release":"2.0","outcome":"committed","time":1}"#,
    );
    let m = rel.join("release.json");
    let out = Command::new(bin)
        .args([
            "fleet",
            "--manifest",
            p(&m),
            "--keys",
            p(&keys),
            "--threshold",
            "2",
        ])
        .args(["--secret", p(&m_key), "--secret", p(&ours_key)])
        .args([
            "--reports",
            p(&reports),
            "--waves",
            "1,5,100",
            "--fleet-size",
            "10",
        ])
        .output()
        .expect("fleet");
    ok(&out, "abupdate fleet");
    let body = std::fs::read(&m).expect("manifest");
    assert!(
        String::from_utf8_lossy(&body).contains("5.0"),
        "not advanced"
    );
    let tag = abupdate::publish::bound_tag(&body);
    let ours_pub = keys.join("ours.pub");
    for (sig, key) in [
        ("release.json.minisig".to_string(), &m_pub),
        ("release.json.1.minisig".to_string(), &ours_pub),
        (format!("release.json.{tag}.minisig"), &m_pub),
        (format!("release.json.{tag}.1.minisig"), &ours_pub),
    ] {
        let sig = rel.join(sig);
        ok(
            &minisign(&d, &["-V", "-p", p(key), "-m", p(&m), "-x", p(&sig)], None),
            &format!("minisign -V -x {}", sig.display()),
        );
    }
}

/// `abupdate keygen` places each key file whole: the secret key 0600, no
/// temporary file left beside it; without `--force` an existing key (either
/// file) stays byte for byte and nothing new appears; with `--force` both
/// are replaced by a pair that minisign itself signs and verifies with.
#[test]
fn keygen_places_whole_keys_and_never_overwrites_without_force() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("keygen");
    let keygen = |force: bool| {
        let mut cmd = Command::new(crate::common::host::bin());
        cmd.args(["keygen", "--secret"])
            .arg(d.path("a.key"))
            .arg("--public")
            .arg(d.path("a.pub"));
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("run abupdate keygen")
    };
    let names = || {
        let mut n: Vec<String> = std::fs::read_dir(&d.0)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    ok(&keygen(false), "keygen");
    assert_eq!(names(), ["a.key", "a.pub"], "no temporary file left");
    let mode = std::fs::metadata(d.path("a.key"))
        .expect("a.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is private");
    let (secret, public) = (d.read("a.key"), d.read("a.pub"));

    // --secret and --public naming one file, however spelled or linked,
    // would leave only the public key: refused, the secret kept.
    std::os::unix::fs::symlink(d.path("a.key"), d.path("link.key")).expect("symlink");
    for public in [d.path("./a.key"), d.path("link.key")] {
        let out = Command::new(crate::common::host::bin())
            .args(["keygen", "--force", "--secret"])
            .arg(d.path("a.key"))
            .arg("--public")
            .arg(&public)
            .output()
            .expect("run abupdate keygen");
        assert_eq!(out.status.code(), Some(2), "{public:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("are one file"), "{err}");
        assert_eq!(d.read("a.key"), secret, "{public:?}: the secret changed");
    }
    std::fs::remove_file(d.path("link.key")).expect("rm link");

    // An existing pair, or only its public half, is refused and kept.
    for remove_secret in [false, true] {
        if remove_secret {
            std::fs::remove_file(d.path("a.key")).expect("rm");
        }
        let out = keygen(false);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("exists (use --force"), "{err}");
        assert_eq!(d.read("a.pub"), public, "the public key changed");
        let want: &[&str] = if remove_secret {
            &["a.pub"]
        } else {
            &["a.key", "a.pub"]
        };
        assert_eq!(names(), want, "a file appeared");
    }

    ok(&keygen(true), "keygen --force");
    assert_eq!(names(), ["a.key", "a.pub"]);
    assert_ne!(d.read("a.pub"), public, "--force made a new pair");
    assert_ne!(d.read("a.key"), secret);
    if !have_minisign() {
        return;
    }
    let file = d.write("release.json", DATA);
    ok(
        &Command::new(crate::common::host::bin())
            .args(["sign", "--secret"])
            .arg(d.path("a.key"))
            .arg(&file)
            .output()
            .expect("run abupdate sign"),
        "abupdate sign",
    );
    ok(
        &minisign(&d, &["-V", "-p", "a.pub", "-m", p(&file)], None),
        "minisign -V with the new public key",
    );
}
