//! `UbootEnv::decode_copy` on arbitrary bytes, both layouts. Properties: no
//! panic; a decoded copy re-encodes into the same size and decodes to the
//! same variables and flag.
#![no_main]

use abupdate::boot::ubootenv::{crc32, UbootEnv};
use libfuzzer_sys::fuzz_target;

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
            let flag = env.flag();
            assert_eq!(flag.is_some(), redundant);
            let img = env
                .encode_copy(input.len(), flag)
                .expect("what decoded from N bytes re-encodes into N bytes");
            assert_eq!(img.len(), input.len());
            let back = UbootEnv::decode_copy(&img, redundant).expect("our copy decodes");
            assert_eq!(back.vars(), env.vars());
            assert_eq!(back.flag(), flag);
        }
    }
});
