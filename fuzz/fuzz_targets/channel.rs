//! `Channel::parse` (channel.json) on arbitrary bytes, then `check_time`
//! and `choose` on whatever parses. Properties: no panic; every error names
//! the channel's URL; what parses keeps the parser's promises (`expires`
//! after `created`, each version once, each manifest not empty, each pin
//! 64 lowercase hex digits); a choice installs only a listed release that
//! is newer than the booted one and not withdrawn, and never one that
//! failed here.
#![no_main]

use abupdate::channel::{check_time, choose, Channel, Choice, TimeFacts};
use abupdate::manifest::Version;
use libfuzzer_sys::fuzz_target;

const URL: &str = "https://updates.example.com/channel.json";

fuzz_target!(|data: &[u8]| {
    let ch = match Channel::parse(URL, data) {
        Ok(ch) => ch,
        Err(e) => {
            assert!(e.to_string().contains(URL), "{e}");
            return;
        }
    };
    assert!(ch.expires > ch.created);
    for (i, r) in ch.releases.iter().enumerate() {
        assert!(!r.manifest.is_empty());
        assert!(ch.releases[..i].iter().all(|o| o.version != r.version));
        if let Some(h) = &r.sha256 {
            assert!(h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        }
    }
    // The floor of these very bytes: never a replay of themselves.
    let floor = abupdate::manifest::Floor {
        created: ch.created,
        bytes: abupdate::manifest::FloorBytes::Known(ch.sha256.clone()),
        version: None,
    };
    for now in [ch.created, ch.expires, ch.created.saturating_sub(1)] {
        let facts = TimeFacts {
            now,
            newest_created_seen: Some(ch.created),
            floor: Some(&floor),
        };
        if let Err(e) = check_time(URL, &ch, &facts) {
            assert!(e.to_string().contains(URL), "{e}");
        }
    }
    let mut booted: Vec<Version> = ch.releases.iter().map(|r| r.version.clone()).collect();
    booted.push(Version::parse("0.1").expect("fixed version"));
    let failed: Vec<Version> = ch.releases.iter().take(1).map(|r| r.version.clone()).collect();
    for b in &booted {
        for failed in [&[][..], &failed[..]] {
            match choose(&ch, Some(b), failed) {
                Choice::Install { index, .. } => {
                    let r = &ch.releases[index];
                    assert!(!ch.halt && !r.withdrawn && r.version > *b);
                    assert!(!failed.contains(&r.version));
                }
                Choice::FailedBarrier { index } => {
                    let r = &ch.releases[index];
                    assert!(r.barrier && failed.contains(&r.version));
                }
                Choice::Halted => assert!(ch.halt),
                Choice::UpToDate { .. } | Choice::BootedUnknown => {}
            }
        }
    }
    assert_eq!(choose(&ch, None, &[]) == Choice::BootedUnknown, !ch.halt);
});
