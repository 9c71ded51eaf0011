//! Standard base64 (RFC 4648 alphabet, `=` padding), as minisign writes it.
//!
//! Invariant: a byte string has exactly one accepted text form. Decoding
//! rejects missing padding, characters outside the alphabet and non-zero
//! trailing bits, so that a key or signature line cannot be re-encoded into
//! a second spelling that also parses (and so that `decode(encode(x)) == x`
//! and `encode(decode(s)) == s` both hold for every accepted input).

use std::fmt;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a base64 string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base64Error {
    /// Empty, or not a multiple of 4 characters (minisign requires padding).
    Length(usize),
    /// A byte outside the alphabet, or `=` where data is expected.
    InvalidByte { position: usize },
    /// Padding in the wrong place or of the wrong amount.
    Padding,
    /// The unused low bits of the last symbol are not zero.
    NonCanonical,
}

impl fmt::Display for Base64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base64Error::Length(n) => write!(f, "length {n} is not a positive multiple of 4"),
            Base64Error::InvalidByte { position } => {
                write!(f, "invalid character at position {}", position + 1)
            }
            Base64Error::Padding => f.write_str("misplaced '=' padding"),
            Base64Error::NonCanonical => f.write_str("non-canonical final character"),
        }
    }
}

impl std::error::Error for Base64Error {}

pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    let sym = |v: u32| char::from(ALPHABET[(v & 63) as usize]);
    let mut chunks = data.chunks_exact(3);
    for chunk in &mut chunks {
        if let [a, b, c] = *chunk {
            let v = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
            out.extend([sym(v >> 18), sym(v >> 12), sym(v >> 6), sym(v)]);
        }
    }
    match *chunks.remainder() {
        [a] => {
            let v = u32::from(a) << 16;
            out.extend([sym(v >> 18), sym(v >> 12), '=', '=']);
        }
        [a, b] => {
            let v = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend([sym(v >> 18), sym(v >> 12), sym(v >> 6), '=']);
        }
        _ => {}
    }
    out
}

fn value(b: u8) -> Option<u32> {
    let v = match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return Err(Base64Error::Length(bytes.len()));
    }
    let groups = bytes.len() / 4;
    let mut out = Vec::with_capacity(groups * 3);
    for (g, quad) in bytes.chunks_exact(4).enumerate() {
        let last = g + 1 == groups;
        let base = g * 4;
        // Padding is only legal as "xx==" or "xxx=" in the final group.
        let pad = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 0 && !last {
            return Err(Base64Error::Padding);
        }
        if pad > 2 {
            return Err(Base64Error::Padding);
        }
        let mut v: u32 = 0;
        for (i, &b) in quad.iter().enumerate() {
            let s = if i >= 4 - pad {
                0
            } else {
                match value(b) {
                    Some(s) => s,
                    None if b == b'=' => return Err(Base64Error::Padding),
                    None => return Err(Base64Error::InvalidByte { position: base + i }),
                }
            };
            v = (v << 6) | s;
        }
        let [_, b0, b1, b2] = v.to_be_bytes();
        match pad {
            0 => out.extend([b0, b1, b2]),
            1 => {
                if b2 != 0 {
                    return Err(Base64Error::NonCanonical);
                }
                out.extend([b0, b1]);
            }
            _ => {
                if b1 != 0 || b2 != 0 {
                    return Err(Base64Error::NonCanonical);
                }
                out.push(b0);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).as_deref(), Ok(plain.as_bytes()));
        }
        assert_eq!(encode(b""), "");
    }

    #[test]
    fn round_trips_every_length_and_byte() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            let enc = encode(&data[..len]);
            if len == 0 {
                assert_eq!(decode(&enc), Err(Base64Error::Length(0)));
            } else {
                assert_eq!(decode(&enc).as_deref(), Ok(&data[..len]), "len {len}");
            }
        }
        let hi: Vec<u8> = (0..=255u8).rev().collect();
        assert_eq!(decode(&encode(&hi)), Ok(hi));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(""), Err(Base64Error::Length(0)));
        assert_eq!(decode("Zg"), Err(Base64Error::Length(2)));
        assert_eq!(decode("Zm9vY"), Err(Base64Error::Length(5)));
        assert_eq!(decode("Zm9v\n"), Err(Base64Error::Length(5)));
        assert_eq!(
            decode("Zm-v"),
            Err(Base64Error::InvalidByte { position: 2 })
        );
        assert_eq!(
            decode("Zm9 "),
            Err(Base64Error::InvalidByte { position: 3 })
        );
        // URL-safe alphabet is not minisign's.
        assert_eq!(
            decode("Zm_v"),
            Err(Base64Error::InvalidByte { position: 2 })
        );
        assert_eq!(decode("Zg==Zm9v"), Err(Base64Error::Padding));
        assert_eq!(decode("Z==="), Err(Base64Error::Padding));
        assert_eq!(decode("===="), Err(Base64Error::Padding));
        assert_eq!(decode("Z=g="), Err(Base64Error::Padding));
        // "Zh==" carries bits that "Zg==" drops: a second spelling of "f".
        assert_eq!(decode("Zh=="), Err(Base64Error::NonCanonical));
        assert_eq!(decode("Zm9="), Err(Base64Error::NonCanonical));
        assert!(decode("Zé==").is_err());
    }
}
