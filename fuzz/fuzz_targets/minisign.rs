//! The minisign parsers (public key, secret key, signature) on arbitrary
//! text, and signature verification of whatever parses. Properties: no
//! panic; keys round-trip through their file form; nothing the fuzzer makes
//! verifies against a key it does not hold.
#![no_main]

use abupdate::trust::minisign::{PublicKey, SecretKey, Signature};
use abupdate::trust::{verify_threshold, KeyRing};
use libfuzzer_sys::fuzz_target;

// A fixed key pair (made with `abupdate keygen`) the fuzzer cannot sign with.
const PUBLIC: &str = "untrusted comment: minisign public key 414855CB3B12C6F7\n\
RWT3xhI7y1VIQf4Y8xSqEiej1Iw7eFqm+3Uh2/f6A+FNZTA3+MtPuTIB\n";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(pk) = PublicKey::parse(&text) {
        let back = PublicKey::parse(&pk.to_file_string()).expect("our own .pub parses");
        assert_eq!(back, pk);
        assert_eq!(PublicKey::parse(&pk.to_base64()).expect("bare line"), pk);
    }
    if let Ok(sk) = SecretKey::parse(&text) {
        let back = SecretKey::parse(&sk.to_file_string()).expect("our own key parses");
        assert_eq!(back.key_id(), sk.key_id());
        assert_eq!(back.public_key(), sk.public_key());
    }
    if let Ok(sig) = Signature::parse(&text) {
        let key = PublicKey::parse(PUBLIC).expect("the fixed key parses");
        {
            assert!(
                sig.verify(&key, data).is_err(),
                "a fuzzed signature verified: forgery or broken verification"
            );
            let ring = KeyRing::from_keys(vec![key]);
            let sigs = vec![("fuzz.minisig".to_string(), text.to_string())];
            assert!(verify_threshold(b"release", &sigs, &ring, 1).is_err());
        }
    }
});
