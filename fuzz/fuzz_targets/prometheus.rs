//! The fleet controller's parsers of outside bytes: a Prometheus API
//! answer (`parse_answer`) and `--selector` (`parse_selector`). Properties:
//! no panic; an accepted answer holds only finite values; an accepted
//! selector re-rendered as PromQL parses back to the same matchers.
#![no_main]

use abupdate::fleet::prometheus::{parse_answer, parse_selector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = parse_answer(data) {
        assert!(samples.iter().all(|s| s.value.is_finite()));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(matchers) = parse_selector(text) {
        let rendered: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
        let again = parse_selector(&rendered.join(","));
        assert_eq!(again.as_ref(), Ok(&matchers), "{rendered:?}");
    }
});
