//! Staged rollout, decided on the host from static files.
//!
//! Invariant: whether this host takes a release is a pure function of the
//! signed `rollout` block, the time, and the host's position; the position is
//! stable across releases (so the fleet's order is predictable and the first
//! wave is always the same canaries) and reveals nothing of the machine id.

use crate::manifest::Rollout;
use crate::timefmt::{format_rfc3339, parse_rfc3339};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Fixed application id keying the position hash (as
/// `sd_id128_get_machine_app_specific` does), so the position cannot be
/// joined with other uses of the machine id.
pub const APP_ID: [u8; 16] = *b"abupdate-rollout";

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // `new_from_slice` fails only for MACs with a fixed key size; HMAC
    // takes a key of any length (a long one is hashed first).
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The machine id as its 16 bytes when it is the usual 32 hex digits, else
/// its trimmed text.
fn machine_id_key(machine_id: &str) -> Vec<u8> {
    let t = machine_id.trim();
    if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..16)
            .filter_map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
            .collect()
    } else {
        t.as_bytes().to_vec()
    }
}

/// A stable, opaque id of this host for reports (hex of the keyed hash).
pub fn host_id(machine_id: &str) -> String {
    crate::install::hex(&hmac_sha256(&machine_id_key(machine_id), &APP_ID)[..16])
}

/// The host's place in the fleet: a stable fraction in [0, 1).
pub fn position(machine_id: &str) -> f64 {
    let mac = hmac_sha256(&machine_id_key(machine_id), &APP_ID);
    let mut first = [0u8; 8];
    first.copy_from_slice(&mac[..8]);
    // 53 bits: exactly representable, and strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Percentage of the fleet the rollout covers at `now`; `Err` names a bad field.
pub fn percentage(r: &Rollout, now: i64) -> Result<f64, String> {
    if let Some(p) = r.percent {
        return Ok(p.clamp(0.0, 100.0));
    }
    let Some(start) = &r.start else {
        return Ok(r.start_percentage.unwrap_or(100.0).clamp(0.0, 100.0));
    };
    let start = parse_rfc3339(start).map_err(|e| format!("rollout.start: {e}"))?;
    if now < start {
        return Ok(0.0);
    }
    let first = r.start_percentage.unwrap_or(0.0).clamp(0.0, 100.0);
    let minutes = r.duration_minutes.unwrap_or(0);
    if minutes == 0 {
        return Ok(100.0);
    }
    let elapsed = (now - start) as f64 / 60.0;
    Ok((first + (100.0 - first) * elapsed / minutes as f64).min(100.0))
}

/// Where a host stands in a rollout.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Standing {
    /// The host's place in the fleet, 0 to 1.
    pub position: f64,
    /// Current coverage in percent (0 while paused).
    pub percentage: f64,
    /// Whether the rollout includes the host now.
    pub included: bool,
    /// Why the host waits, when it does.
    pub reason: Option<String>,
}

/// Decide whether a host at `position` takes a release with `rollout` now.
pub fn decide(rollout: Option<&Rollout>, position: f64, now: i64) -> Result<Standing, String> {
    let Some(r) = rollout else {
        return Ok(Standing {
            position,
            percentage: 100.0,
            included: true,
            reason: None,
        });
    };
    if r.paused {
        return Ok(Standing {
            position,
            percentage: 0.0,
            included: false,
            reason: Some("the rollout is paused".into()),
        });
    }
    let pct = percentage(r, now)?;
    let included = position * 100.0 < pct;
    let reason = (!included).then(|| {
        let mut why = format!(
            "this host is at {:.2}% of the fleet; the rollout covers {:.2}%",
            position * 100.0,
            pct
        );
        if let (Some(at), Some(start)) = (eta(r, position), &r.start) {
            let _ = start;
            why.push_str(&format!(", reaching it at {}", format_rfc3339(at)));
        }
        why
    });
    Ok(Standing {
        position,
        percentage: pct,
        included,
        reason,
    })
}

/// When a linear ramp reaches `position`, if it does.
pub fn eta(r: &Rollout, position: f64) -> Option<i64> {
    if r.paused || r.percent.is_some() {
        return None;
    }
    let start = parse_rfc3339(r.start.as_deref()?).ok()?;
    let first = r.start_percentage.unwrap_or(0.0);
    let target = position * 100.0;
    if target < first {
        return Some(start);
    }
    let minutes = r.duration_minutes? as f64;
    let frac = (target - first) / (100.0 - first).max(f64::MIN_POSITIVE);
    Some(start + (frac * minutes * 60.0 - 1e-6).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(start_pct: f64, minutes: u64) -> Rollout {
        Rollout {
            start: Some("2026-11-21T00:00:00Z".into()),
            start_percentage: Some(start_pct),
            duration_minutes: Some(minutes),
            ..Default::default()
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            crate::install::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_6_a_key_longer_than_a_block() {
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            crate::install::hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// A host's place and id never change across abupdate versions (the
    /// first wave stays the same canaries): pinned, computed independently
    /// (Python's `hmac`).
    #[test]
    fn position_and_host_id_are_pinned() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(host_id(id), "c169aa2448a93672516d094edd7d24a7");
        assert_eq!(position(id), 0.7555185640891622);
    }

    #[test]
    fn position_is_stable_and_hides_the_id() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(position(id), position(&format!("{id}\n")));
        assert_ne!(position(id), position("0123456789abcdef0123456789abcdee"));
        assert!((0.0..1.0).contains(&position(id)));
        assert!(!host_id(id).contains("0123456789abcdef"));
    }

    #[test]
    fn linear_ramp_and_fixed_percent() {
        let start = parse_rfc3339("2026-11-21T00:00:00Z").expect("t");
        let r = ramp(1.0, 4320);
        assert_eq!(percentage(&r, start - 1), Ok(0.0));
        assert_eq!(percentage(&r, start), Ok(1.0));
        let half = percentage(&r, start + 2160 * 60).expect("pct");
        assert!((half - 50.5).abs() < 1e-9, "{half}");
        assert_eq!(percentage(&r, start + 4320 * 60), Ok(100.0));
        assert_eq!(percentage(&r, start + 9000 * 60), Ok(100.0));
        let fixed = Rollout {
            percent: Some(5.0),
            ..Default::default()
        };
        assert_eq!(percentage(&fixed, 0), Ok(5.0));
    }

    #[test]
    fn decide_includes_by_position_and_pause_freezes() {
        let start = parse_rfc3339("2026-11-21T00:00:00Z").expect("t");
        let r = ramp(10.0, 60);
        assert!(decide(Some(&r), 0.05, start).expect("d").included);
        let late = decide(Some(&r), 0.55, start).expect("d");
        assert!(!late.included);
        assert!(
            late.reason
                .as_deref()
                .is_some_and(|w| w.contains("reaching it at 2026-11-21T00:30:00Z")),
            "{late:?}"
        );
        assert!(decide(Some(&r), 0.55, start + 31 * 60).expect("d").included);
        let mut paused = r.clone();
        paused.paused = true;
        let d = decide(Some(&paused), 0.0, start + 3600).expect("d");
        assert!(!d.included && d.reason.as_deref() == Some("the rollout is paused"));
        assert!(decide(None, 0.99, 0).expect("d").included);
        let bad = Rollout {
            start: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(decide(Some(&bad), 0.1, 0).is_err());
    }

    #[test]
    fn positions_are_uniform_over_ten_thousand_ids() {
        // Chi-square over 20 buckets: 19 degrees of freedom, p = 0.001 at 43.8.
        let mut buckets = [0u32; 20];
        for i in 0..10_000u32 {
            let id = format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9e3779b97f4a7c15f39cc0605cedc835)
            );
            buckets[(position(&id) * 20.0) as usize] += 1;
        }
        let expected = 500.0;
        let chi2: f64 = buckets
            .iter()
            .map(|&n| (n as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 43.8, "chi-square {chi2} over {buckets:?}");
        let max_dev = buckets
            .iter()
            .map(|&n| (n as f64 - expected).abs() / expected)
            .fold(0.0, f64::max);
        assert!(max_dev < 0.15, "max deviation {max_dev}");
    }
}
