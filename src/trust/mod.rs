//! Trust: which bytes may be believed.
//!
//! Invariant: nothing from a release is acted upon before its manifest has
//! valid signatures from `threshold` distinct trusted keys.

pub mod minisign;
// SHIM until the trust branch lands.
#[derive(Debug)]
pub struct TrustError;
impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shim")
    }
}
impl std::error::Error for TrustError {}
pub struct KeyRing;
impl KeyRing {
    pub fn load(dirs: &[std::path::PathBuf]) -> Result<KeyRing, TrustError> {
        todo!()
    }
    pub fn from_keys(keys: Vec<minisign::PublicKey>) -> KeyRing {
        todo!()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        todo!()
    }
}
pub fn verify_threshold(
    message: &[u8],
    signatures: &[(String, String)],
    keys: &KeyRing,
    threshold: usize,
) -> Result<Vec<[u8; 8]>, TrustError> {
    todo!()
}
