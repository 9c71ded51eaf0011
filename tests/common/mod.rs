pub mod host;
pub mod http;
pub mod prometheus;
