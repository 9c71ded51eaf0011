//! `GrubEnv::parse` on arbitrary bytes. Properties: no panic; what parses
//! re-encodes (when it fits the block) to a block that parses to the same
//! variables byte for byte; setting our variables (to any bytes GRUB can
//! hold) keeps every other variable byte for byte and in order, and the
//! value set reads back exactly; the block keeps GRUB's layout; and the
//! sector a change is written as (`changed_sector`) is the only one that
//! differs, or the change is refused because both do.
#![no_main]

use abupdate::boot::grubenv::{changed_sector, GrubEnv, BLOCK_SIZE, SECTOR, SIGNATURE};
use libfuzzer_sys::fuzz_target;

const OURS: [&[u8]; 4] = [b"ORDER", b"A_OK", b"B_TRY", b"B_LEFT"];

fn check_layout(b: &[u8; BLOCK_SIZE]) {
    assert!(b.starts_with(SIGNATURE));
}

fn check_sector(before: &[u8; BLOCK_SIZE], after: &[u8; BLOCK_SIZE]) {
    let same = |at: usize| before[at..at + SECTOR] == after[at..at + SECTOR];
    match changed_sector(before, after) {
        Ok(None) => assert!(same(0) && same(SECTOR)),
        Ok(Some(at)) => assert!(!same(at) && same(SECTOR - at), "another sector changed"),
        Err(_) => assert!(!same(0) && !same(SECTOR), "refused a one-sector change"),
    }
}

fuzz_target!(|data: &[u8]| {
    // The input split at its last 0xfe: a block body, then a value to set.
    let cut = data.iter().rposition(|&b| b == 0xfe).unwrap_or(data.len());
    let (body, value) = (&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    // Raw input, and the body laid into a real block (signature, padding),
    // so the fuzzer spends its time on the variable lines.
    let mut block = SIGNATURE.to_vec();
    block.extend_from_slice(&body[..body.len().min(BLOCK_SIZE - SIGNATURE.len())]);
    block.resize(BLOCK_SIZE, b'#');
    for input in [data, &block[..]] {
        let Ok(env) = GrubEnv::parse(input) else {
            continue;
        };
        if let Ok(b) = env.to_block() {
            check_layout(&b);
            assert_eq!(GrubEnv::parse(&b).expect("our block parses"), env);
        }
        for (i, name) in OURS.iter().enumerate() {
            let mut changed = env.clone();
            // Any bytes but NUL are a value GRUB can hold.
            let v: Vec<u8> = value.iter().copied().filter(|&b| b != 0).collect();
            changed.set(name, &v).expect("our name, a NUL-free value");
            changed.set(OURS[(i + 1) % OURS.len()], "B A").expect("set");
            let Ok(b) = changed.to_block() else {
                continue;
            };
            check_layout(&b);
            if let Ok(before) = env.to_block() {
                check_sector(&before, &b);
            }
            let back = GrubEnv::parse(&b).expect("changed block parses");
            assert_eq!(back.get(name), Some(&v[..]), "value set reads back");
            let others = |e: &GrubEnv| -> Vec<(Vec<u8>, Vec<u8>)> {
                e.vars()
                    .iter()
                    .filter(|(n, _)| !OURS.contains(&n.as_slice()))
                    .cloned()
                    .collect()
            };
            assert_eq!(others(&back), others(&env), "a variable we do not own changed");
        }
    }
});
