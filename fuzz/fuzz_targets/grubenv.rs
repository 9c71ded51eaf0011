//! `GrubEnv::parse` on arbitrary bytes. Properties: no panic; what parses
//! re-encodes (when it fits one sector) to a block that parses to the same
//! environment, and setting our variables keeps every other one.
#![no_main]

use abupdate::boot::grubenv::{GrubEnv, BLOCK_SIZE, SIGNATURE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw input, and the input laid into a real block (signature, padding),
    // so the fuzzer spends its time on the variable lines.
    let mut block = SIGNATURE.to_vec();
    block.extend_from_slice(&data[..data.len().min(BLOCK_SIZE - SIGNATURE.len())]);
    block.resize(BLOCK_SIZE, b'#');
    for input in [data, &block[..]] {
        let Ok(env) = GrubEnv::parse(input) else {
            continue;
        };
        if let Ok(b) = env.to_block() {
            assert_eq!(b.len(), BLOCK_SIZE);
            assert!(
                b[512..].iter().all(|&c| c == b'#'),
                "second sector not padding"
            );
            assert_eq!(GrubEnv::parse(&b).expect("our block parses"), env);
        }
        let mut changed = env.clone();
        if changed.set("ORDER", "B A").is_ok() && changed.set("B_TRY", "0").is_ok() {
            if let Ok(b) = changed.to_block() {
                let back = GrubEnv::parse(&b).expect("changed block parses");
                assert_eq!(back.get("ORDER"), Some("B A"));
                for (n, v) in env.vars() {
                    if n != "ORDER" && n != "B_TRY" {
                        assert_eq!(back.get(n), Some(v.as_str()), "lost {n}");
                    }
                }
            }
        }
    }
});
