//! `UbootEnvConfig::parse` (libubootenv's fw_env.config) on arbitrary text.
//! Properties: no panic; what parses names one or two devices of one sane
//! size, and errors name the file.
#![no_main]

use abupdate::boot::ubootenv::UbootEnvConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match UbootEnvConfig::parse(&text, "/etc/fw_env.config") {
        Ok(c) => {
            assert!(matches!(c.devices().len(), 1 | 2));
            assert!(c.size() >= 8 && c.size() <= 16 << 20);
            assert!(c.devices().iter().all(|d| d.size == c.size()));
        }
        Err(e) => assert!(e.to_string().starts_with("/etc/fw_env.config: ")),
    }
});
