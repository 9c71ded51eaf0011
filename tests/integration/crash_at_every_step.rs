//! A kill -9 (abort) after every durable step of the install and health
//! flows leaves a grubenv that the real `grub-editenv` reads, a primary slot
//! that is good and complete, a `state.json` that parses, and a host on
//! which re-running the same command finishes the job.

use crate::common::host::{image, text, HostOptions, TestHost};
use sha2::{Digest, Sha256};
use std::os::unix::process::ExitStatusExt;

const IMAGE_LEN: usize = 10 << 20;

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// The slot our GRUB script would boot next, without changing the env.
fn primary(h: &TestHost) -> &'static str {
    let v = h.grub_vars();
    let get = |k: String| v.get(&k).cloned().unwrap_or_default();
    let order = v.get("ORDER").cloned().unwrap_or_else(|| "A B".into());
    let first = order
        .split_whitespace()
        .find(|s| get(format!("{s}_OK")) == "1" && get(format!("{s}_TRY")) != "1")
        .unwrap_or("none");
    match first {
        "A" => "A",
        "B" => "B",
        _ => "none",
    }
}

fn assert_bootable(h: &TestHost, point: &str, a_image: &str, b_image: &str) {
    assert!(
        std::panic::catch_unwind(|| h.grub_vars()).is_ok(),
        "{point}: grub-editenv cannot read the env"
    );
    let _ = h.state(); // panics if state.json does not parse
    match primary(h) {
        "A" => assert_eq!(
            sha(&h.slot_bytes(0, IMAGE_LEN)),
            a_image,
            "{point}: primary A is not the good image"
        ),
        "B" => assert_eq!(
            sha(&h.slot_bytes(1, IMAGE_LEN)),
            b_image,
            "{point}: primary B is not the complete new image"
        ),
        other => panic!("{point}: no bootable slot ({other}): {:?}", h.grub_vars()),
    }
}

fn setup(name: &str) -> (TestHost, String, String) {
    let h = TestHost::new(
        name,
        "1.0",
        HostOptions {
            slot_size: 16 << 20,
            ..Default::default()
        },
    );
    // Slot A holds a full 1.0 image so its hash is checkable.
    let a = image("1.0", IMAGE_LEN);
    crate::common::host::write_at_start(&h.slots[0], &a);
    let b = image("2.0", IMAGE_LEN);
    let m = h.pack("r2", "2.0", &b, &[]);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        cfg.replace(
            "[update]\n",
            &format!("[update]\nurl = \"file://{}\"\n", m.display()),
        ),
    )
    .expect("config");
    (h, sha(&a), sha(&b))
}

#[test]
fn install_survives_a_crash_after_every_step() {
    let points = [
        "state-written:1",
        "target-marked-bad",
        "state-written:2",
        "segment-written:1",
        "segment-written:2",
        "fsync",
        "read-back",
        "activated",
        "state-written:3",
        "reboot-requested",
    ];
    let mut covered = Vec::new();
    for point in points {
        let (mut h, a_sha, b_sha) = setup(&format!("crash-install-{}", point.replace(':', "-")));
        let out = h.abupdate_env(&["update"], &[("ABUPDATE_FAILPOINT", point)]);
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{point}: did not abort: {}",
            text(&out)
        );
        assert_bootable(&h, point, &a_sha, &b_sha);

        // Re-running finishes the job (unless the crash came after the
        // reboot request, when the job was already done).
        if point != "reboot-requested" {
            let out = h.abupdate(&["update"]);
            assert!(
                out.status.success(),
                "{point}: re-run failed: {}",
                text(&out)
            );
        }
        assert_bootable(&h, point, &a_sha, &b_sha);
        assert_eq!(
            h.boot(),
            "B",
            "{point}: the finished install does not boot B"
        );
        let out = h.abupdate(&["health"]);
        assert!(
            text(&out).contains("committed 2.0"),
            "{point}: {}",
            text(&out)
        );
        covered.push(point);
    }
    println!(
        "install failpoints covered ({}): {}",
        covered.len(),
        covered.join(", ")
    );
}

#[test]
fn health_survives_a_crash_after_every_step() {
    let mut covered = Vec::new();
    for (point, failing) in [
        ("health-verdict", false),
        ("committed", false),
        ("state-written:1", false),
        ("health-verdict", true),
        ("rolled-back", true),
        ("state-written:1", true),
    ] {
        let label = format!("{point}{}", if failing { " (failing trial)" } else { "" });
        let (mut h, a_sha, b_sha) = setup(&format!(
            "crash-health-{}-{failing}",
            point.replace(':', "-")
        ));
        assert!(h.abupdate(&["update"]).status.success());
        assert_eq!(h.boot(), "B");
        if failing {
            h.add_health_check("10-fail", "exit 1");
        }
        let out = h.abupdate_env(&["health"], &[("ABUPDATE_FAILPOINT", point)]);
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{label}: did not abort: {}",
            text(&out)
        );
        let _ = h.grub_vars();
        let _ = h.state();
        // The service runs again (restart or next attempt) and finishes;
        // after the last durable step there is nothing left to finish.
        let out = h.abupdate(&["health"]);
        assert!(
            h.state()["transaction"].is_null(),
            "{label}: still pending: {}",
            text(&out)
        );
        assert_bootable(&h, &label, &a_sha, &b_sha);
        if failing {
            assert_eq!(h.state()["failed"][0]["version"], "2.0", "{label}");
            assert_eq!(primary(&h), "A", "{label}");
            assert_eq!(h.boot(), "A", "{label}");
        } else {
            assert_eq!(h.state()["slots"]["B"]["status"], "good", "{label}");
            assert!(
                h.grub_vars().get("B_OK").is_some_and(|v| v == "1"),
                "{label}"
            );
            assert_eq!(h.boot(), "B", "{label}");
        }
        covered.push(label);
    }
    println!(
        "health failpoints covered ({}): {}",
        covered.len(),
        covered.join(", ")
    );
}
