//! `Config::from_str` (config.toml) on arbitrary text. Properties: no panic;
//! every error names the file; what parses has both slots with the same
//! classes and a threshold of at least one, and every duration is one an
//! `Instant` can be advanced by (no deadline can overflow later).
#![no_main]

use abupdate::config::Config;
use abupdate::slot::SlotName;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_str(text, Path::new("/etc/abupdate/config.toml")) {
        Ok(c) => {
            assert!(c.update.threshold >= 1);
            assert!(c.slots[&SlotName::A]
                .keys()
                .eq(c.slots[&SlotName::B].keys()));
            assert!((1..=9).contains(&c.bootloader.tries));
            let now = std::time::Instant::now();
            for d in [
                c.update.connect_timeout,
                c.update.read_timeout,
                c.update.jitter,
                c.update.backoff_base,
                c.update.backoff_max,
                c.health.timeout,
                c.health.check_timeout,
                c.health.interval,
                c.report.webhook_timeout,
            ] {
                assert!(now.checked_add(d.saturating_mul(4)).is_some(), "{d:?}");
            }
            assert!(!c.health.check_timeout.is_zero() && !c.health.timeout.is_zero());
        }
        Err(e) => assert!(
            e.to_string().starts_with("/etc/abupdate/config.toml"),
            "{e}"
        ),
    }
});
