//! Helpers shared by the integration tests: the test host, HTTP, TLS and
//! S3 servers, the hostile server, the bootloader stand-ins, the one model of
//! GRUB's slot choice, and Prometheus.

pub mod channel;
pub mod grub;
pub mod host;
pub mod hostile_server;
pub mod http;
#[cfg(feature = "failpoints")]
pub mod loaders;
pub mod prometheus;
pub mod s3;
pub mod tls;
