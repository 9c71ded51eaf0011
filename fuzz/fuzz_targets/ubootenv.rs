//! The U-Boot env codec and the redundant-copy writer's decision on
//! arbitrary bytes. Properties: no panic; a decoded copy re-encodes into the
//! same size with the same strings, byte for byte (the stored list is
//! identical, only padding may differ); setting and removing our variables
//! keeps every other stored string byte for byte and in order; and for two
//! copies with any contents and flags, the write goes to the copy readers do
//! NOT use, with a flag that makes it the one they use next, and what is
//! written decodes.
#![no_main]

use abupdate::boot::ubootenv::{
    crc32, crc_valid, select_copy, write_target, FlagScheme, UbootEnv,
};
use libfuzzer_sys::fuzz_target;

const OURS: [&[u8]; 3] = [b"BOOT_ORDER", b"BOOT_A_LEFT", b"BOOT_B_LEFT"];

fn others(e: &UbootEnv) -> Vec<Vec<u8>> {
    e.entries()
        .iter()
        .filter(|s| {
            let name = s.split(|&b| b == b'=').next().unwrap_or(&[]);
            !OURS.contains(&name)
        })
        .cloned()
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // Raw, and with the CRC fixed so the data parser is reached.
    let mut fixed = data.to_vec();
    for redundant in [false, true] {
        let header = if redundant { 5 } else { 4 };
        if fixed.len() > header {
            let c = crc32(&fixed[header..]).to_le_bytes();
            fixed[..4].copy_from_slice(&c);
        }
        for input in [data, &fixed[..]] {
            let Ok(env) = UbootEnv::decode_copy(input, redundant) else {
                continue;
            };
            assert!(crc_valid(input, redundant).is_ok());
            let flag = env.flag();
            assert_eq!(flag.is_some(), redundant);
            let img = env
                .encode_copy(input.len(), flag)
                .expect("what decoded from N bytes re-encodes into N bytes");
            assert_eq!(img.len(), input.len());
            let list: usize = env.entries().iter().map(|e| e.len() + 1).sum::<usize>() + 1;
            assert_eq!(
                img[header..header + list],
                input[header..header + list],
                "stored strings not kept byte for byte"
            );
            let back = UbootEnv::decode_copy(&img, redundant).expect("our copy decodes");
            assert_eq!(back.entries(), env.entries());
            assert_eq!(back.flag(), flag);

            // What a backend does: set and remove our variables only.
            let mut changed = env.clone();
            changed.set("BOOT_ORDER", b"B A \xff").expect("set");
            changed.set("BOOT_B_LEFT", "1").expect("set");
            changed.remove("BOOT_A_LEFT");
            assert_eq!(others(&changed), others(&env), "a variable we do not own changed");
            assert_eq!(changed.get("BOOT_ORDER"), Some(&b"B A \xff"[..]));
            if let Ok(img) = changed.encode_copy(input.len(), flag) {
                let back = UbootEnv::decode_copy(&img, redundant).expect("changed copy decodes");
                assert_eq!(back.entries(), changed.entries());
            }
        }
    }

    // Two redundant copies: the input's halves, each sometimes with its
    // CRC fixed (so both valid, one, or none), flags from the input.
    let half = data.len() / 2;
    if half > 5 {
        let mut copies = [data[..half].to_vec(), data[half..2 * half].to_vec()];
        for (i, c) in copies.iter_mut().enumerate() {
            if data[0] >> i & 1 == 1 {
                let crc = crc32(&c[5..]).to_le_bytes();
                c[..4].copy_from_slice(&crc);
            }
        }
        let valid = [
            crc_valid(&copies[0], true).is_ok(),
            crc_valid(&copies[1], true).is_ok(),
        ];
        let flags = [copies[0][4], copies[1][4]];
        let current = select_copy(FlagScheme::Incremental, valid, flags);
        let (target, flag) = write_target(valid, flags);
        assert_ne!(Some(target), current, "the copy in use would be written");
        // The env a writer starts from: the current copy's, when it parses.
        let env = current
            .and_then(|i| UbootEnv::decode_copy(&copies[i], true).ok())
            .unwrap_or_default();
        if let Ok(img) = env.encode_copy(half, Some(flag)) {
            copies[target] = img;
            let valid = [
                crc_valid(&copies[0], true).is_ok(),
                crc_valid(&copies[1], true).is_ok(),
            ];
            let flags = [copies[0][4], copies[1][4]];
            assert_eq!(
                select_copy(FlagScheme::Incremental, valid, flags),
                Some(target),
                "readers do not take the copy just written"
            );
            let back = UbootEnv::decode_copy(&copies[target], true).expect("written copy decodes");
            assert_eq!(back.entries(), env.entries());
        }
    }
});
