//! SHIM until the fetch branch lands.
#![allow(dead_code, unused_variables)]
use std::path::{Path, PathBuf};
use std::time::Duration;
pub struct TransportOptions {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub proxy: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub user_agent: String,
}
impl Default for TransportOptions {
    fn default() -> Self {
        todo!()
    }
}
pub struct Transport;
#[derive(Debug)]
pub struct FetchError;
impl FetchError {
    pub fn kind(&self) -> &'static str {
        "x"
    }
}
impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shim")
    }
}
impl std::error::Error for FetchError {}
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}
pub enum Document {
    Fetched {
        body: Vec<u8>,
        validators: Validators,
    },
    NotModified,
    NotFound,
}
pub struct PayloadReader;
impl std::io::Read for PayloadReader {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        todo!()
    }
}
impl PayloadReader {
    pub fn bytes_from_network(&self) -> u64 {
        0
    }
    pub fn resumed_from(&self) -> u64 {
        0
    }
}
impl Transport {
    pub fn new(opts: &TransportOptions) -> Result<Transport, FetchError> {
        todo!()
    }
    pub fn get_document(
        &self,
        location: &str,
        limit: u64,
        validators: Option<&Validators>,
    ) -> Result<Document, FetchError> {
        todo!()
    }
    pub fn open_payload(
        &self,
        location: &str,
        size: u64,
        partial: Option<&Path>,
    ) -> Result<PayloadReader, FetchError> {
        todo!()
    }
}
pub fn resolve(manifest_location: &str, reference: &str) -> Result<String, FetchError> {
    todo!()
}
