//! `Manifest::parse` on arbitrary bytes (the signed manifest, with its
//! segment and delta tables and their source regions), then `evaluate` on whatever parses.
//! Properties: no panic; a parsed manifest re-serialises to JSON that parses
//! to the same release; version order is consistent.
#![no_main]

use abupdate::manifest::{evaluate, HostFacts, Manifest, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    // Round trip through the schema.
    let again = serde_json::to_vec(&m.doc).expect("a parsed manifest serialises");
    let m2 = Manifest::parse(&again).expect("re-serialised manifest parses");
    assert_eq!(m2.version, m.version);
    assert_eq!(m2.created, m.created);
    assert_eq!(m2.expires, m.expires);
    assert_eq!(m2.doc.images.len(), m.doc.images.len());
    for (class, img) in &m.doc.images {
        let i2 = &m2.doc.images[class];
        assert_eq!(i2.size, img.size);
        assert_eq!(i2.sha256, img.sha256);
        assert_eq!(i2.download_size(), img.download_size());
        assert_eq!(i2.download_sha256(), img.download_sha256());
    }
    // Version order: reflexive and antisymmetric against a fixed version.
    let fixed = Version::parse("2026.11.3").expect("fixed version");
    assert_eq!(m.version.cmp(&m.version), std::cmp::Ordering::Equal);
    assert_eq!(m.version.cmp(&fixed), fixed.cmp(&m.version).reverse());
    let failed = [m.version.to_string()];
    let classes: Vec<String> = m.doc.images.keys().cloned().collect();
    let floor = abupdate::manifest::Floor {
        created: m.created,
        bytes: abupdate::manifest::FloorBytes::Known(m.sha256.clone()),
        version: Some(m.doc.version.clone()),
    };
    use abupdate::manifest::TrackRule;
    for (booted, failed, allow, track) in [
        (Some(&fixed), &[][..], false, TrackRule::Exactly("stable")),
        (None, &failed[..], true, TrackRule::NotOther("stable")),
    ] {
        let _ = evaluate(
            &m,
            &HostFacts {
                compatible: "acme-edge-x86_64",
                track,
                booted_version: booted,
                failed_versions: failed,
                cancelled_versions: &[],
                now: 1_795_168_800,
                newest_created_seen: Some(m.created),
                floor: Some(&floor),
                fetched: "https://u.example/release.json",
                slot_classes: &classes,
                max_window_log: 27,
                allow_downgrade: allow,
            },
        );
    }
});
