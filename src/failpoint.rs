//! Named crash points for the fault-injection tests.
//!
//! With the `failpoints` feature, `ABUPDATE_FAILPOINT=name` (or `name:N` for
//! the N-th hit) aborts the process at that point, as a kill -9 or a power
//! cut would stop it. Without the feature, [`hit`] compiles to nothing.

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("ABUPDATE_FAILPOINT") else {
        return;
    };
    let (point, nth) = match spec.split_once(':') {
        Some((p, n)) => (p.to_string(), n.parse::<u64>().unwrap_or(1)),
        None => (spec.clone(), 1),
    };
    if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("abupdate: failpoint {name} hit, aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
