//! `UbootEnvConfig::parse` (libubootenv's fw_env.config) on arbitrary bytes.
//! Properties: no panic; what parses names one or two devices of one sane
//! size, each device path byte for byte as written, and errors name the file.
#![no_main]

use abupdate::boot::ubootenv::UbootEnvConfig;
use libfuzzer_sys::fuzz_target;
use std::os::unix::ffi::OsStrExt;

fuzz_target!(|data: &[u8]| {
    match UbootEnvConfig::parse(data, "/etc/fw_env.config") {
        Ok(c) => {
            assert!(matches!(c.devices().len(), 1 | 2));
            assert!(c.size() >= 8 && c.size() <= 16 << 20);
            assert!(c.devices().iter().all(|d| d.size == c.size()));
            for d in c.devices() {
                let p = d.path.as_os_str().as_bytes();
                assert!(!p.is_empty() && data.windows(p.len()).any(|w| w == p));
            }
        }
        Err(e) => assert!(e.to_string().starts_with("/etc/fw_env.config: ")),
    }
});
