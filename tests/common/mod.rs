pub mod host;
pub mod http;
