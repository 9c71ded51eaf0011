//! SHIM until the trust branch lands.
#![allow(dead_code, unused_variables)]
#[derive(Debug)]
pub struct MinisignError;
impl std::fmt::Display for MinisignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shim")
    }
}
impl std::error::Error for MinisignError {}
pub struct PublicKey {
    pub key_id: [u8; 8],
}
impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, MinisignError> {
        todo!()
    }
    pub fn to_file_string(&self) -> String {
        todo!()
    }
    pub fn key_id_hex(&self) -> String {
        todo!()
    }
}
pub struct SecretKey;
impl SecretKey {
    pub fn parse(text: &str) -> Result<Self, MinisignError> {
        todo!()
    }
    pub fn to_file_string(&self) -> String {
        todo!()
    }
    pub fn public_key(&self) -> PublicKey {
        todo!()
    }
}
pub fn generate_keypair() -> Result<(SecretKey, PublicKey), MinisignError> {
    todo!()
}
pub struct Signature {
    pub key_id: [u8; 8],
    pub prehashed: bool,
    pub trusted_comment: String,
}
impl Signature {
    pub fn parse(text: &str) -> Result<Self, MinisignError> {
        todo!()
    }
    pub fn verify(&self, key: &PublicKey, message: &[u8]) -> Result<(), MinisignError> {
        todo!()
    }
    pub fn verify_prehashed(
        &self,
        key: &PublicKey,
        blake2b_512: &[u8; 64],
    ) -> Result<(), MinisignError> {
        todo!()
    }
}
pub fn prehash(reader: impl std::io::Read) -> std::io::Result<[u8; 64]> {
    todo!()
}
pub fn sign(key: &SecretKey, message: &[u8], trusted_comment: &str) -> String {
    todo!()
}
pub fn sign_prehashed(key: &SecretKey, blake2b_512: &[u8; 64], trusted_comment: &str) -> String {
    todo!()
}
