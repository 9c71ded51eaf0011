//! Site-wide reboot coordination with FleetLock, the protocol Fedora
//! CoreOS's zincati speaks (servers: airlock on etcd, fleetlock on
//! Kubernetes): a counting semaphore per reboot group, taken with
//! `POST {base}/v1/pre-reboot` and given back with
//! `POST {base}/v1/steady-state`, each with the header
//! `fleet-lock-protocol: true` and the body
//! `{"client_params": {"id": ID, "group": GROUP}}`; 200 means done, any
//! other status is a refusal (with an optional `{"kind", "value"}` body).
//!
//! Invariant: a host reboots into a trial only while it holds its group's
//! lock, and gives the lock back only once the trial's verdict is in and a
//! good slot runs again (the commit; after a rollback, the boot into the
//! old slot; after a trial that never came up, the fallback's boot).
//!
//! The rule for which reboots wait for the lock: the planned ones, those a
//! host in good health is asked to make (the reboot into a trial, and the
//! late rollback of a release the release channel withdrew: the whole site
//! sees a withdrawal at the same tick). Such a rollback switches the boot
//! order first, so any reboot boots the old slot, and its reboot waits for
//! the lock like an update's (`state::PlannedReboot`, released by the
//! healthy boot of the old slot). The reboot of a failing host does not
//! wait (a failed trial, a probation's count of unclean restarts or failed
//! checks): it is down or crashing already, and coordination must not keep
//! it broken (`agent::probation::Cause::waits_for_lock`). From
//! the lock request until a release succeeds, `state.json` says the lock
//! may be held (`fleetlock`), so a release that failed is tried again by
//! the next run: a site is never locked by a host that forgot.
//!
//! Both operations are idempotent on the server (the lock is recursive and
//! owned by the id), so asking again after a lost answer is safe.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::FleetLock;
use crate::fetch::{redact, FetchError, Transport};

/// The largest answer read (an error body explains a refusal).
const MAX_ANSWER: u64 = 16 << 10;

/// The longest `kind`/`value` of a refusal shown, in bytes of its quoted text.
const MAX_SHOWN: usize = 200;

/// A group as the protocol allows it: `^[a-zA-Z0-9.-]+$`.
pub fn check_group(group: &str) -> Result<(), String> {
    if !group.is_empty()
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "{group:?}: a group is letters, digits, '.' and '-' (the site's id)"
        ))
    }
}

/// The two operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Take a reboot slot of the group.
    Lock,
    /// Give it back.
    Unlock,
}

impl Op {
    /// The operation's path below the server's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Op::Lock => "v1/pre-reboot",
            Op::Unlock => "v1/steady-state",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    client_params: ClientParams<'a>,
}

#[derive(Serialize)]
struct ClientParams<'a> {
    id: &'a str,
    group: &'a str,
}

/// The request body for host `id` in `group`.
pub fn request_body(id: &str, group: &str) -> Vec<u8> {
    serde_json::to_vec(&Body {
        client_params: ClientParams { id, group },
    })
    .unwrap_or_default()
}

/// What the server said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 200: done.
    Done,
    /// Any status but 200; `kind` and `value` from its JSON body when it has
    /// them (shown cut short and without control characters: they are the
    /// server's bytes).
    Refused {
        /// The HTTP status.
        status: u16,
        /// The refusal body's `kind`, if any.
        kind: Option<String>,
        /// The refusal body's `value`, if any.
        value: Option<String>,
    },
}

#[derive(Deserialize)]
struct Rejection {
    kind: Option<String>,
    value: Option<String>,
}

/// A server's `kind` or `value` as it may reach a terminal or a message:
/// quoted by the one shared rule ([`crate::text::show_bounded`]: controls,
/// bidi overrides escaped, cut marked), its surrounding whitespace dropped
/// (it says nothing). Mapping controls to spaces let a U+202E through raw.
fn shown(text: String) -> String {
    crate::text::show_bounded(text.trim().as_bytes(), MAX_SHOWN, false)
}

/// The protocol's reading of a response.
pub fn interpret(status: u16, body: &[u8]) -> Answer {
    if status == 200 {
        return Answer::Done;
    }
    let parsed: Option<Rejection> = serde_json::from_slice(body).ok();
    let (kind, value) = parsed.map_or((None, None), |r| (r.kind, r.value));
    Answer::Refused {
        status,
        kind: kind.map(shown).filter(|s| !s.is_empty()),
        value: value.map(shown).filter(|s| !s.is_empty()),
    }
}

/// Why a lock operation did not happen; names the URL.
#[derive(Debug)]
pub enum FleetLockError {
    /// The server said no (for `pre-reboot`: the group's slots are taken).
    Refused {
        /// The URL asked (shown without user info).
        url: String,
        /// The operation refused.
        op: Op,
        /// The HTTP status.
        status: u16,
        /// The refusal body's `kind`, if any.
        kind: Option<String>,
        /// The refusal body's `value`, if any.
        value: Option<String>,
    },
    /// The server could not be asked.
    Unreachable {
        /// The operation asked.
        op: Op,
        /// Why it got no answer.
        error: FetchError,
    },
    /// The lock was to be given back before a reboot into a slot whose
    /// build never gives it back, and was not: the reboot waits.
    NotGivenBack {
        /// The group.
        group: String,
        /// The slot the reboot goes into.
        slot: String,
        /// What the give-back said.
        reason: String,
    },
}

impl fmt::Display for FleetLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetLockError::Refused {
                url,
                op,
                status,
                kind,
                value,
            } => {
                let what = match op {
                    Op::Lock => "reboot lock not granted",
                    Op::Unlock => "reboot lock not released",
                };
                write!(f, "{}: {what} (HTTP {status}", redact(url))?;
                if let Some(k) = kind {
                    write!(f, " {k}")?;
                }
                if let Some(v) = value {
                    write!(f, ": {v}")?;
                }
                f.write_str(")")
            }
            FleetLockError::Unreachable { op, error } => {
                let what = match op {
                    Op::Lock => "cannot ask for the reboot lock",
                    Op::Unlock => "cannot release the reboot lock",
                };
                write!(f, "{what}: {error}")
            }
            FleetLockError::NotGivenBack {
                group,
                slot,
                reason,
            } => write!(
                f,
                "the reboot lock of group {group} could not be given back before the reboot into slot {slot} ({reason}): the reboot waits for the next run"
            ),
        }
    }
}

impl std::error::Error for FleetLockError {}

/// One host's client of one lock server and group.
pub struct Client<'a> {
    /// The transport (timeouts, proxy, trust roots; no update-server credentials).
    pub transport: &'a Transport,
    /// The server and the group.
    pub config: &'a FleetLock,
    /// The host's id (`rollout::host_id`: stable, not the machine id).
    pub id: String,
}

impl Client<'_> {
    /// Perform `op`. `Ok` only on the server's 200.
    pub fn call(&self, op: Op) -> Result<(), FleetLockError> {
        let url = crate::fetch::endpoint(&self.config.url, op.path())
            .map_err(|error| FleetLockError::Unreachable { op, error })?;
        let body = request_body(&self.id, &self.config.group);
        let (status, answer) = self
            .transport
            .post_json(&url, &[("fleet-lock-protocol", "true")], &body, MAX_ANSWER)
            .map_err(|error| FleetLockError::Unreachable { op, error })?;
        match interpret(status, &answer) {
            Answer::Done => Ok(()),
            Answer::Refused {
                status,
                kind,
                value,
            } => Err(FleetLockError::Refused {
                url,
                op,
                status,
                kind,
                value,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_protocols() {
        let body = request_body("c988d2509fdf4cdcbed39037c56406fb", "store-17");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"client_params": {"id": "c988d2509fdf4cdcbed39037c56406fb", "group": "store-17"}})
        );
        assert_eq!(Op::Lock.path(), "v1/pre-reboot");
        assert_eq!(Op::Unlock.path(), "v1/steady-state");
    }

    #[test]
    fn only_200_is_done_and_a_refusal_keeps_its_kind_and_value() {
        assert_eq!(interpret(200, b""), Answer::Done);
        assert_eq!(
            interpret(
                409,
                br#"{"kind":"failed_lock_semaphore_full","value":"semaphore currently full"}"#
            ),
            Answer::Refused {
                status: 409,
                kind: Some("failed_lock_semaphore_full".into()),
                value: Some("semaphore currently full".into()),
            }
        );
        // 204 is not 200; a body that is not the error schema says nothing.
        assert_eq!(
            interpret(204, b""),
            Answer::Refused {
                status: 204,
                kind: None,
                value: None
            }
        );
        assert_eq!(
            interpret(500, b"<html>oops</html>"),
            Answer::Refused {
                status: 500,
                kind: None,
                value: None
            }
        );
        let long = format!(r#"{{"kind":"k","value":"{}\u0007end"}}"#, "x".repeat(500));
        let Answer::Refused { value, .. } = interpret(423, long.as_bytes()) else {
            panic!("done")
        };
        let value = value.expect("value");
        assert!(value.len() <= MAX_SHOWN, "{value}");
        assert!(value.ends_with(crate::text::CUT), "{value}");
        assert!(!value.contains('\u{7}'));
    }

    /// A refusal's text reaches stderr and `--json` escaped by the shared
    /// rule: ESC, BEL, a bidi override (U+202E) and a newline become
    /// `\xNN`, nothing of them raw.
    #[test]
    fn a_refusals_controls_and_bidi_override_are_escaped() {
        let body = r#"{"kind":"x\u001b]0;pwned\u0007\u202e\n2nd line","value":"ok\u001b[2J"}"#;
        let Answer::Refused { kind, value, .. } = interpret(409, body.as_bytes()) else {
            panic!("done")
        };
        assert_eq!(
            kind.as_deref(),
            Some("x\\x1b]0;pwned\\x07\\xe2\\x80\\xae\\x0a2nd line")
        );
        assert_eq!(value.as_deref(), Some("ok\\x1b[2J"));
    }

    #[test]
    fn groups_are_the_protocols_labels() {
        for good in ["default", "store-17", "eu.west.3"] {
            assert!(check_group(good).is_ok(), "{good}");
        }
        for bad in ["", "store 17", "store/17", "große", "a_b"] {
            assert!(check_group(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_url_without_user_info() {
        let e = FleetLockError::Refused {
            url: "https://user:pw@lock.example/base/v1/pre-reboot".into(),
            op: Op::Lock,
            status: 409,
            kind: Some("failed_lock_semaphore_full".into()),
            value: Some("semaphore currently full".into()),
        };
        assert_eq!(
            e.to_string(),
            "https://***@lock.example/base/v1/pre-reboot: reboot lock not granted (HTTP 409 failed_lock_semaphore_full: semaphore currently full)"
        );
    }
}
