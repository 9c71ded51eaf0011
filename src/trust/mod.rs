//! Trust: which bytes may be believed.
//!
//! Invariant: nothing from a release is acted upon before its manifest has
//! valid signatures from `threshold` distinct trusted keys, each checked with
//! strict Ed25519 verification of both the signature and the trusted comment
//! (see [`minisign`]). Trusted keys come only from `*.pub` files in the
//! configured key directories, and only when nobody but root could have
//! put them there ([`crate::safe_path::trusted_dir`] and
//! [`crate::safe_path::trusted_file`]: a key directory others can write
//! would trust whatever they sign); a key id in a signature is a lookup
//! hint, never a reason to trust.
//!
//! "Distinct" means distinct Ed25519 public keys, never distinct key ids:
//! the 8-byte id is a label that no signature covers, so whoever holds one
//! key can copy its signature under any id, and the same key may sit in two
//! `.pub` files under two ids. [`verify_threshold`] is the one place that
//! counts.

pub mod gate;
pub mod minisign;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use minisign::{key_id_hex, MinisignError, PublicKey, Signature};

/// Trusted public keys, looked up by key id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<PublicKey>,
    /// Where the keys were looked for, for "no trusted keys in …".
    dirs: Vec<PathBuf>,
}

impl KeyRing {
    /// Loads every `*.pub` file in each directory, in name order. A missing
    /// directory is skipped (a host may use only one of the defaults); an
    /// unreadable directory or an unreadable or invalid key file is an error
    /// naming it, because silently dropping a key can turn a threshold
    /// failure into a confusing one later. The same key in two directories
    /// is counted once.
    pub fn load(dirs: &[PathBuf]) -> Result<KeyRing, TrustError> {
        let mut ring = KeyRing {
            keys: Vec::new(),
            dirs: dirs.to_vec(),
        };
        for dir in dirs {
            // A directory that is not there holds no key (a host may ship
            // one of the two defaults); one that is must be root's alone.
            if std::fs::metadata(dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
                continue;
            }
            let resolved = crate::safe_path::trusted_dir(dir).map_err(|why| {
                TrustError::OthersCouldChange {
                    path: dir.clone(),
                    why,
                }
            })?;
            let files =
                crate::files::listed(&resolved, b".pub").map_err(|e| TrustError::KeyDir {
                    dir: dir.clone(),
                    error: e,
                })?;
            for path in files.into_iter().map(|name| dir.join(name)) {
                let resolved = crate::safe_path::trusted_file(&path).map_err(|why| {
                    TrustError::OthersCouldChange {
                        path: path.clone(),
                        why,
                    }
                })?;
                let key = read_key_file(&resolved, &path)?;
                ring.insert(key);
            }
        }
        Ok(ring)
    }

    /// A key ring of `keys` (the same key once).
    pub fn from_keys(keys: Vec<PublicKey>) -> KeyRing {
        let mut ring = KeyRing::default();
        for k in keys {
            ring.insert(k);
        }
        ring
    }

    fn insert(&mut self, key: PublicKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Number of distinct keys: distinct Ed25519 public keys, however many
    /// ids (files) each one is listed under.
    pub fn len(&self) -> usize {
        let mut seen: Vec<&[u8; 32]> = Vec::new();
        for k in &self.keys {
            if !seen.contains(&k.ed25519_bytes()) {
                seen.push(k.ed25519_bytes());
            }
        }
        seen.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Why no manifest could ever meet `threshold` (0 counts as 1) with
    /// these keys: none at all, or fewer distinct keys than the threshold.
    /// The one rule the trust gate ([`verify_threshold`]) and a trial's
    /// `trusted-files` check share.
    pub fn cannot_meet(&self, threshold: usize) -> Option<TrustError> {
        let keys = self.len();
        let threshold = threshold.max(1);
        match keys {
            0 => Some(TrustError::NoTrustedKeys {
                dirs: self.dirs.clone(),
            }),
            _ if keys < threshold => Some(TrustError::TooFewKeys {
                dirs: self.dirs.clone(),
                keys,
                threshold,
            }),
            _ => None,
        }
    }

    /// All keys carrying `key_id`; normally one, but ids are only 64 bits
    /// and nothing stops two key files from sharing one.
    fn candidates<'a>(&'a self, key_id: &'a [u8; 8]) -> impl Iterator<Item = &'a PublicKey> {
        self.keys.iter().filter(move |k| &k.key_id == key_id)
    }
}

/// The public key in the file at `path` (judged by the caller), its
/// errors naming it as `shown` (the configured name).
fn read_key_file(path: &Path, shown: &Path) -> Result<PublicKey, TrustError> {
    let io_err = |error| TrustError::KeyFileRead {
        path: shown.to_path_buf(),
        error,
    };
    let mut bytes = Vec::new();
    crate::files::open_regular(path)
        .and_then(|f| {
            f.take(minisign::MAX_FILE_SIZE as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(io_err)?;
    let invalid = |error| TrustError::KeyFileInvalid {
        path: shown.to_path_buf(),
        error,
    };
    if bytes.len() > minisign::MAX_FILE_SIZE {
        return Err(invalid(MinisignError::TooLarge {
            kind: minisign::FileKind::PublicKey,
            size: bytes.len(),
        }));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        invalid(MinisignError::Malformed {
            kind: minisign::FileKind::PublicKey,
            reason: "not UTF-8 text".into(),
        })
    })?;
    PublicKey::parse(&text).map_err(invalid)
}

/// Why a manifest or key set is not trusted. One line each, naming the file
/// or key concerned.
#[derive(Debug)]
pub enum TrustError {
    /// The key ring is empty.
    NoTrustedKeys {
        /// The directories looked in.
        dirs: Vec<PathBuf>,
    },
    /// Fewer distinct trusted keys than the threshold: no manifest could
    /// meet it.
    TooFewKeys {
        /// The directories looked in.
        dirs: Vec<PathBuf>,
        /// Distinct keys found.
        keys: usize,
        /// Signatures by distinct trusted keys needed.
        threshold: usize,
    },
    /// A key directory exists but cannot be listed.
    KeyDir {
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A key directory or `*.pub` file that others than root (or the user
    /// abupdate runs as) could change ([`crate::safe_path`]): whatever key
    /// they put there would be trusted.
    OthersCouldChange {
        /// The directory or file, as configured.
        path: PathBuf,
        /// Why, one line.
        why: String,
    },
    /// A `*.pub` file cannot be read.
    KeyFileRead {
        /// The key file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// A `*.pub` file is not a usable minisign public key.
    KeyFileInvalid {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: MinisignError,
    },
    /// No signature files were given at all; `missing` names the first
    /// one looked for, when the caller knows it.
    NoSignatures {
        /// The first signature file looked for, when known.
        missing: Option<String>,
    },
    /// `keygen` would overwrite a key file.
    KeyFileExists {
        /// The file.
        path: PathBuf,
    },
    /// `keygen` could not make a key (no randomness).
    KeyGen(MinisignError),
    /// A secret key file that `sign` cannot use.
    SecretKeyInvalid {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: MinisignError,
    },
    /// `verify`: the signature does not check out with the key given.
    Verify {
        /// The signature file, as shown.
        name: String,
        /// The underlying error.
        error: MinisignError,
    },
    /// A signature file could not be parsed.
    MalformedSignature {
        /// The signature file, as shown.
        name: String,
        /// The underlying error.
        error: MinisignError,
    },
    /// A well-formed signature by a key that is not in the key ring.
    UntrustedKey {
        /// The signature file, as shown.
        name: String,
        /// The key id concerned.
        key_id: [u8; 8],
    },
    /// A trusted key's signature that does not cover these bytes.
    BadSignature {
        /// The signature file, as shown.
        name: String,
        /// The key id concerned.
        key_id: [u8; 8],
    },
    /// A trusted key's signature whose trusted comment was altered.
    BadTrustedComment {
        /// The signature file, as shown.
        name: String,
        /// The key id concerned.
        key_id: [u8; 8],
    },
    /// All signatures checked out, but too few distinct trusted keys.
    NotEnough {
        /// The manifest, as named in messages.
        subject: String,
        /// Distinct trusted keys with a valid signature.
        valid: usize,
        /// How many are needed.
        threshold: usize,
        /// Valid signatures that repeated an already counted key (under its
        /// own id or another one).
        repeated: usize,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| crate::text::show_path(d))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TrustError::*;
        match self {
            NoTrustedKeys { dirs } if dirs.is_empty() => f.write_str("no trusted keys configured"),
            NoTrustedKeys { dirs } => write!(f, "no trusted keys in {}", display_dirs(dirs)),
            TooFewKeys {
                dirs,
                keys,
                threshold,
            } => {
                let s = if *keys == 1 { "" } else { "s" };
                write!(f, "{keys} distinct trusted key{s}")?;
                if !dirs.is_empty() {
                    write!(f, " in {}", display_dirs(dirs))?;
                }
                write!(f, ", fewer than the threshold, {threshold}")
            }
            KeyDir { dir, error } => {
                write!(f, "{}: cannot read key directory: {error}", crate::text::show_path(dir))
            }
            OthersCouldChange { path, why } => {
                write!(f, "{}: {why}", crate::text::show_path(path))
            }
            KeyFileRead { path, error } => {
                write!(f, "{}: cannot read trusted key: {error}", crate::text::show_path(path))
            }
            KeyFileInvalid { path, error } => write!(f, "{}: {error}", crate::text::show_path(path)),
            NoSignatures { missing: None } => f.write_str("no signature to check"),
            NoSignatures {
                missing: Some(name),
            } => write!(f, "{name}: missing (a release must be signed)"),
            KeyFileExists { path } => {
                write!(f, "{}: exists (use --force to overwrite)", crate::text::show_path(path))
            }
            KeyGen(error) => write!(f, "keygen: {error}"),
            SecretKeyInvalid { path, error } => write!(f, "{}: {error}", crate::text::show_path(path)),
            Verify { name, error } => write!(f, "{name}: {error}"),
            MalformedSignature { name, error } => write!(f, "{name}: {error}"),
            UntrustedKey { name, key_id } => {
                write!(f, "{name}: signed by untrusted key {}", key_id_hex(key_id))
            }
            BadSignature { name, key_id } => write!(
                f,
                "{name}: signature does not match the manifest (key {})",
                key_id_hex(key_id)
            ),
            BadTrustedComment { name, key_id } => write!(
                f,
                "{name}: trusted comment does not match its signature, the file was altered (key {})",
                key_id_hex(key_id)
            ),
            NotEnough {
                subject,
                valid,
                threshold,
                repeated,
            } => {
                let s = if *valid == 1 { "" } else { "s" };
                write!(
                    f,
                    "{subject}: {valid} valid signature{s} from a trusted key, threshold is {threshold}"
                )?;
                if *repeated > 0 {
                    write!(f, " ({repeated} more by an already counted key)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TrustError {}

/// How specific a failure is: when the threshold is missed, the most
/// specific one explains it best (a forged or corrupted signature matters
/// more than a key nobody installed).
fn rank(e: &TrustError) -> u8 {
    match e {
        TrustError::BadSignature { .. } | TrustError::BadTrustedComment { .. } => 3,
        TrustError::MalformedSignature { .. } => 2,
        TrustError::UntrustedKey { .. } => 1,
        _ => 0,
    }
}

/// What the signed file is called in "not enough signatures" messages:
/// the first signature's name without `.minisig`, else "manifest".
fn subject(signatures: &[(String, String)]) -> String {
    signatures
        .first()
        .and_then(|(name, _)| name.strip_suffix(".minisig"))
        .filter(|s| !s.is_empty())
        .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned())
        .unwrap_or_else(|| "manifest".to_owned())
}

/// `signatures` are (name for messages, e.g. "https://…/release.json.minisig", file text).
/// Ok = the key ids of the distinct trusted keys whose valid signatures
/// count (one id per key); needs >= threshold of them.
///
/// A bad signature file does not fail the check by itself when enough other
/// signatures are valid (so one key can be rotated out without a flag day).
/// When the threshold is missed, the error is the most specific one seen:
/// an invalid signature, then a malformed file, then an untrusted key, then
/// "not enough". Two signatures by the same Ed25519 key count once, whatever
/// key ids they carry and whichever key files list that key; threshold 0 is
/// treated as 1.
pub fn verify_threshold(
    message: &[u8],
    signatures: &[(String, String)],
    keys: &KeyRing,
    threshold: usize,
) -> Result<Vec<[u8; 8]>, TrustError> {
    let threshold = threshold.max(1);
    if let Some(never) = keys.cannot_meet(threshold) {
        return Err(never);
    }
    if signatures.is_empty() {
        return Err(TrustError::NoSignatures { missing: None });
    }

    let mut prehash: Option<[u8; 64]> = None;
    // The distinct Ed25519 keys counted so far, and the id each was seen under.
    let mut counted: Vec<[u8; 32]> = Vec::new();
    let mut valid: Vec<[u8; 8]> = Vec::new();
    let mut repeated = 0;
    let mut worst: Option<TrustError> = None;
    let mut note = |e: TrustError| {
        if worst.as_ref().is_none_or(|w| rank(&e) > rank(w)) {
            worst = Some(e);
        }
    };

    for (name, text) in signatures {
        let sig = match Signature::parse(text) {
            Ok(s) => s,
            Err(error) => {
                note(TrustError::MalformedSignature {
                    name: name.clone(),
                    error,
                });
                continue;
            }
        };
        let key_id = sig.key_id;
        let mut failure = None;
        let mut verified_by = None;
        for key in keys.candidates(&key_id) {
            let result = if sig.prehashed {
                let h = prehash.get_or_insert_with(|| blake2b_512(message));
                sig.verify_prehashed(key, h)
            } else {
                sig.verify(key, message)
            };
            match result {
                Ok(()) => {
                    verified_by = Some(key);
                    break;
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(key) = verified_by {
            // Counted by the key that verified, not by the id the signature
            // claims: ids are unsigned labels.
            if counted.contains(key.ed25519_bytes()) {
                repeated += 1;
            } else {
                counted.push(*key.ed25519_bytes());
                valid.push(key_id);
            }
            continue;
        }
        let name = name.clone();
        note(match failure {
            None => TrustError::UntrustedKey { name, key_id },
            Some(MinisignError::BadTrustedComment { .. }) => {
                TrustError::BadTrustedComment { name, key_id }
            }
            Some(_) => TrustError::BadSignature { name, key_id },
        });
    }

    if valid.len() >= threshold {
        return Ok(valid);
    }
    Err(worst.unwrap_or(TrustError::NotEnough {
        subject: subject(signatures),
        valid: valid.len(),
        threshold,
        repeated,
    }))
}

fn blake2b_512(message: &[u8]) -> [u8; 64] {
    // Reading from a slice cannot fail; the fallback only avoids an unwrap.
    minisign::prehash(message).unwrap_or([0; 64])
}

#[cfg(test)]
mod tests {
    use super::minisign::{generate_keypair, sign, SecretKey};
    use super::*;
    use crate::testutil::TempDir;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;

    const MANIFEST: &[u8] = br#"{"format":1,"version":"2026.11.3"}"#;

    fn keys(n: usize) -> Vec<(SecretKey, PublicKey)> {
        (0..n)
            .map(|_| generate_keypair().expect("urandom"))
            .collect()
    }

    fn sig(sk: &SecretKey, i: usize) -> (String, String) {
        (
            format!("https://example.net/r/release.json.minisig.{i}"),
            sign(sk, MANIFEST, "timestamp:1\tfile:release.json"),
        )
    }

    fn named(name: &str, text: String) -> (String, String) {
        (name.to_owned(), text)
    }

    fn ring(ks: &[(SecretKey, PublicKey)]) -> KeyRing {
        KeyRing::from_keys(ks.iter().map(|(_, p)| p.clone()).collect())
    }

    fn tamper_comment(text: &str) -> String {
        text.replace("timestamp:1", "timestamp:2")
    }

    #[test]
    fn two_of_three_with_one_bad_signature_passes() {
        let ks = keys(3);
        let r = ring(&ks);
        let sigs = vec![
            sig(&ks[0].0, 0),
            named("b.minisig", sign(&ks[1].0, b"other bytes", "t")),
            sig(&ks[2].0, 2),
        ];
        let ok = verify_threshold(MANIFEST, &sigs, &r, 2).expect("2 of 3");
        assert_eq!(ok, vec![ks[0].1.key_id, ks[2].1.key_id]);
        // The same set misses a threshold of 3, and says why: the bad one.
        let e = verify_threshold(MANIFEST, &sigs, &r, 3).expect_err("3 of 3");
        assert_eq!(
            e.to_string(),
            format!(
                "b.minisig: signature does not match the manifest (key {})",
                ks[1].1.key_id_hex()
            )
        );
    }

    #[test]
    fn same_key_twice_counts_once() {
        let ks = keys(2);
        let r = ring(&ks);
        let sigs = vec![
            named("release.json.minisig", sign(&ks[0].0, MANIFEST, "a")),
            named("mirror/release.json.minisig", sign(&ks[0].0, MANIFEST, "b")),
        ];
        assert_eq!(
            verify_threshold(MANIFEST, &sigs, &r, 1).expect("1"),
            vec![ks[0].1.key_id]
        );
        let e = verify_threshold(MANIFEST, &sigs, &r, 2).expect_err("2");
        assert!(matches!(
            e,
            TrustError::NotEnough {
                valid: 1,
                threshold: 2,
                repeated: 1,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "release.json: 1 valid signature from a trusted key, threshold is 2 \
             (1 more by an already counted key)"
        );
    }

    /// The same Ed25519 key as `key`, labelled with another key id: what
    /// anyone can write into a second `.pub` file.
    fn relabelled_key(key: &PublicKey, id: [u8; 8]) -> PublicKey {
        let mut raw = BASE64.decode(key.to_base64()).expect("b64");
        raw[2..10].copy_from_slice(&id);
        PublicKey::parse(&BASE64.encode(&raw)).expect("relabelled key")
    }

    /// `sig` with its key id bytes replaced: the id is not signed, so the
    /// signature itself stays valid for the same Ed25519 key.
    fn relabelled_signature(sig: &str, id: [u8; 8]) -> String {
        let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
        let mut raw = BASE64.decode(&lines[1]).expect("b64");
        raw[2..10].copy_from_slice(&id);
        lines[1] = BASE64.encode(&raw);
        lines.join("\n") + "\n"
    }

    #[test]
    fn one_key_under_two_key_ids_counts_once() {
        let ks = keys(2);
        let real = &ks[0].1;
        let other_id = [7u8; 8];
        let alias = relabelled_key(real, other_id);
        assert_ne!(alias.key_id, real.key_id);
        let alone = KeyRing::from_keys(vec![real.clone(), alias.clone()]);
        assert_eq!(alone.len(), 1, "one Ed25519 key, listed under two ids");
        // A second, unused key: the ring could meet 2, so what is counted
        // is the signatures.
        let r = KeyRing::from_keys(vec![real.clone(), alias, ks[1].1.clone()]);
        assert_eq!(r.len(), 2);
        let genuine = sign(&ks[0].0, MANIFEST, "timestamp:1\tfile:release.json");
        let forged = relabelled_signature(&genuine, other_id);
        // Each signature verifies on its own (as `minisign -V` would say)...
        let one = |name: &str, text: &str| {
            verify_threshold(MANIFEST, &[named(name, text.to_owned())], &r, 1)
        };
        assert_eq!(
            one("a.minisig", &genuine).expect("genuine"),
            vec![real.key_id]
        );
        assert_eq!(
            one("b.minisig", &forged).expect("relabelled"),
            vec![other_id]
        );
        // ...but together they are one key, not two.
        let sigs = vec![
            named("release.json.minisig", genuine),
            named("release.json.1.minisig", forged),
        ];
        let e = verify_threshold(MANIFEST, &sigs, &r, 2).expect_err("one key met threshold 2");
        assert_eq!(
            e.to_string(),
            "release.json: 1 valid signature from a trusted key, threshold is 2 \
             (1 more by an already counted key)"
        );
        assert_eq!(
            verify_threshold(MANIFEST, &sigs, &r, 1).expect("1"),
            vec![real.key_id]
        );
        // The ring of that one key alone could never meet 2: said first.
        let e = verify_threshold(MANIFEST, &sigs, &alone, 2).expect_err("one key, threshold 2");
        assert_eq!(
            e.to_string(),
            "1 distinct trusted key, fewer than the threshold, 2"
        );
    }

    #[test]
    fn the_same_signature_file_twice_counts_once() {
        let ks = keys(2);
        let r = ring(&ks);
        let text = sign(&ks[0].0, MANIFEST, "timestamp:1\tfile:release.json");
        let sigs = vec![
            named("release.json.minisig", text.clone()),
            named("release.json.1.minisig", text),
        ];
        let e = verify_threshold(MANIFEST, &sigs, &r, 2).expect_err("copied file");
        assert!(
            matches!(
                e,
                TrustError::NotEnough {
                    valid: 1,
                    repeated: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn untrusted_key() {
        let ks = keys(2);
        let r = ring(&ks[..1]);
        let sigs = vec![named("release.json.minisig", sign(&ks[1].0, MANIFEST, "t"))];
        let e = verify_threshold(MANIFEST, &sigs, &r, 1).expect_err("untrusted");
        assert_eq!(
            e.to_string(),
            format!(
                "release.json.minisig: signed by untrusted key {}",
                ks[1].1.key_id_hex()
            )
        );
    }

    #[test]
    fn not_enough() {
        let ks = keys(2);
        let r = ring(&ks);
        let sigs = vec![named("release.json.minisig", sign(&ks[0].0, MANIFEST, "t"))];
        let e = verify_threshold(MANIFEST, &sigs, &r, 2).expect_err("1 of 2");
        assert_eq!(
            e.to_string(),
            "release.json: 1 valid signature from a trusted key, threshold is 2"
        );
        assert!(matches!(
            verify_threshold(MANIFEST, &[], &r, 1),
            Err(TrustError::NoSignatures { .. })
        ));
    }

    #[test]
    fn threshold_zero_means_one() {
        let ks = keys(1);
        let r = ring(&ks);
        let bad = vec![named("x.minisig", sign(&ks[0].0, b"not it", "t"))];
        assert!(matches!(
            verify_threshold(MANIFEST, &bad, &r, 0),
            Err(TrustError::BadSignature { .. })
        ));
        let good = vec![sig(&ks[0].0, 0)];
        assert_eq!(
            verify_threshold(MANIFEST, &good, &r, 0).expect("ok").len(),
            1
        );
    }

    #[test]
    fn a_ring_that_could_never_meet_its_threshold_is_refused_before_any_signature() {
        let ks = keys(2);
        let dirs = vec![PathBuf::from("/etc/abupdate/keys")];
        let with = |n: usize| KeyRing {
            keys: ks[..n].iter().map(|k| k.1.clone()).collect(),
            dirs: dirs.clone(),
        };
        let none = "no trusted keys in /etc/abupdate/keys";
        let one = "1 distinct trusted key in /etc/abupdate/keys, fewer than the threshold, 2";
        let two = "2 distinct trusted keys in /etc/abupdate/keys, fewer than the threshold, 3";
        // (keys, threshold, what is said); threshold 0 counts as 1.
        let cases = [
            (0, 0, Some(none)),
            (0, 1, Some(none)),
            (1, 2, Some(one)),
            (2, 3, Some(two)),
            (1, 0, None),
            (1, 1, None),
            (2, 2, None),
        ];
        for (n, threshold, want) in cases {
            let said = with(n).cannot_meet(threshold).map(|e| e.to_string());
            assert_eq!(said.as_deref(), want, "{n} keys, threshold {threshold}");
        }
        // The gate says so first, whatever the signatures: a bad one (the
        // most specific reason otherwise) would hide that no release could
        // ever pass.
        let bad = vec![named("x.minisig", sign(&ks[0].0, b"not it", "t"))];
        assert!(matches!(
            verify_threshold(MANIFEST, &bad, &with(1), 2),
            Err(TrustError::TooFewKeys {
                keys: 1,
                threshold: 2,
                ..
            })
        ));
        assert!(matches!(
            verify_threshold(MANIFEST, &bad, &with(2), 2),
            Err(TrustError::BadSignature { .. })
        ));
    }

    #[test]
    fn most_specific_reason_wins_regardless_of_order() {
        let ks = keys(3);
        let r = ring(&ks[..2]);
        let untrusted = named("u.minisig", sign(&ks[2].0, MANIFEST, "t"));
        let malformed = named("m.minisig", "garbage".to_owned());
        let bad_comment = named(
            "c.minisig",
            tamper_comment(&sign(&ks[0].0, MANIFEST, "timestamp:1")),
        );
        let good = sig(&ks[1].0, 1);

        let e = verify_threshold(
            MANIFEST,
            &[
                untrusted.clone(),
                malformed.clone(),
                bad_comment.clone(),
                good.clone(),
            ],
            &r,
            2,
        )
        .expect_err("threshold 2");
        assert!(
            matches!(e, TrustError::BadTrustedComment { ref name, .. } if name == "c.minisig"),
            "{e}"
        );
        assert!(e
            .to_string()
            .contains("c.minisig: trusted comment does not match"));

        let e = verify_threshold(MANIFEST, &[malformed.clone(), untrusted.clone()], &r, 1)
            .expect_err("malformed beats untrusted");
        assert_eq!(
            e.to_string(),
            "m.minisig: not a minisign signature: line 1 does not start with \"untrusted comment: \""
        );
        let e = verify_threshold(MANIFEST, &[untrusted.clone(), good.clone()], &r, 2)
            .expect_err("untrusted beats not enough");
        assert!(matches!(e, TrustError::UntrustedKey { .. }));
        // With the threshold met, the bad ones are tolerated.
        let ok = verify_threshold(MANIFEST, &[untrusted, malformed, bad_comment, good], &r, 1)
            .expect("1 good");
        assert_eq!(ok, vec![ks[1].1.key_id]);
    }

    #[test]
    fn wrong_manifest_fails_even_with_all_keys() {
        let ks = keys(2);
        let r = ring(&ks);
        let sigs = vec![sig(&ks[0].0, 0), sig(&ks[1].0, 1)];
        let mut other = MANIFEST.to_vec();
        other[3] ^= 1;
        assert!(matches!(
            verify_threshold(&other, &sigs, &r, 1),
            Err(TrustError::BadSignature { .. })
        ));
    }

    #[test]
    fn colliding_key_ids_try_every_candidate() {
        let ks = keys(2);
        // A second key that claims the first one's id: it must neither
        // shadow the real key nor make the real key's signature fail.
        let fake = {
            let mut raw = BASE64.decode(ks[1].1.to_base64()).expect("b64");
            raw[2..10].copy_from_slice(&ks[0].1.key_id);
            PublicKey::parse(&BASE64.encode(&raw)).expect("fake")
        };
        let r = KeyRing::from_keys(vec![fake, ks[0].1.clone()]);
        assert_eq!(r.len(), 2);
        let ok = verify_threshold(MANIFEST, &[sig(&ks[0].0, 0)], &r, 1).expect("real key found");
        assert_eq!(ok, vec![ks[0].1.key_id]);
    }

    #[test]
    fn empty_ring_names_the_directories() {
        let r = KeyRing::load(&[
            PathBuf::from("/nonexistent/abupdate/etc-keys"),
            PathBuf::from("/nonexistent/abupdate/lib-keys"),
        ])
        .expect("missing dirs are skipped");
        assert!(r.is_empty());
        let e = verify_threshold(MANIFEST, &[], &r, 1).expect_err("empty");
        assert_eq!(
            e.to_string(),
            "no trusted keys in /nonexistent/abupdate/etc-keys, /nonexistent/abupdate/lib-keys"
        );
    }

    fn temp_dir(tag: &str) -> TempDir {
        TempDir::new(&format!("trust-{tag}"))
    }

    #[test]
    fn load_reads_pub_files_dedupes_and_names_bad_files() {
        let ks = keys(2);
        let a = temp_dir("a");
        let b = temp_dir("b");
        std::fs::write(a.join("one.pub"), ks[0].1.to_file_string()).expect("write");
        std::fs::write(a.join("two.pub"), ks[1].1.to_file_string()).expect("write");
        std::fs::write(a.join("README"), "not a key").expect("write");
        std::fs::write(a.join("old.pub~"), "not a key").expect("write");
        // Same key shipped in both directories, once under another id.
        std::fs::write(b.join("one-copy.pub"), ks[0].1.to_file_string()).expect("write");
        let alias = relabelled_key(&ks[0].1, [9; 8]);
        std::fs::write(b.join("one-alias.pub"), alias.to_file_string()).expect("write");
        let r =
            KeyRing::load(&[a.to_path_buf(), b.to_path_buf(), a.join("missing")]).expect("load");
        assert_eq!(r.len(), 2);
        let sigs = vec![sig(&ks[0].0, 0), sig(&ks[1].0, 1)];
        assert_eq!(
            verify_threshold(MANIFEST, &sigs, &r, 2).expect("2").len(),
            2
        );
        let k0 = sign(&ks[0].0, MANIFEST, "t");
        let aliased = vec![
            named("release.json.minisig", k0.clone()),
            named("release.json.1.minisig", relabelled_signature(&k0, [9; 8])),
        ];
        assert!(verify_threshold(MANIFEST, &aliased, &r, 2).is_err());

        std::fs::write(b.join("broken.pub"), "untrusted comment: x\nno-pe\n").expect("write");
        let e = KeyRing::load(&[a.to_path_buf(), b.to_path_buf()]).expect_err("broken key");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&b.join("broken.pub").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("line 2 is not base64"), "{msg}");

        std::fs::remove_file(b.join("broken.pub")).expect("rm");
        std::fs::create_dir(b.join("dir.pub")).expect("mkdir");
        let e = KeyRing::load(&[b.to_path_buf()]).expect_err("directory named .pub");
        assert_eq!(
            e.to_string(),
            format!("{}: not a regular file", b.join("dir.pub").display())
        );

        let file_as_dir = a.join("one.pub");
        let e = KeyRing::load(std::slice::from_ref(&file_as_dir)).expect_err("not a directory");
        assert_eq!(
            e.to_string(),
            format!("{}: not a directory", file_as_dir.display())
        );
    }

    /// A key directory or key file others could write would make root
    /// trust whatever they sign: refused, naming it, not skipped.
    #[test]
    fn a_key_directory_or_key_others_could_change_is_refused_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        let ks = keys(1);
        let d = temp_dir("open");
        chmod(&d, 0o755);
        let key = d.join("one.pub");
        std::fs::write(&key, ks[0].1.to_file_string()).expect("write");
        chmod(&key, 0o644);
        assert_eq!(KeyRing::load(&[d.to_path_buf()]).expect("safe").len(), 1);
        chmod(&d, 0o1777);
        let e = KeyRing::load(&[d.to_path_buf()]).expect_err("open directory");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: writable by group or others (mode 1777): others could add or replace files \
                 in it; root would trust what they put there (chmod go-w)",
                d.display()
            )
        );
        chmod(&d, 0o755);
        chmod(&key, 0o664);
        let e = KeyRing::load(&[d.to_path_buf()]).expect_err("open key");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: writable by group or others (mode 0664): others could change it; root \
                 would trust what they put there (chmod go-w)",
                key.display()
            )
        );
    }
}
