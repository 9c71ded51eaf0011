//! Release building: images in; compressed payloads, hashes, a manifest
//! and its minisign signature out.
//!
//! Invariant: the manifest states exactly the bytes that were written next
//! to it (sizes and SHA-256 of both the image and the payload), computed
//! from the same single pass that wrote them, and it is signed last.

use crate::install::hex;
use crate::manifest::{Compression, Image, ManifestDoc, Rollout, FORMAT};
use crate::timefmt::{format_rfc3339, now};
use crate::trust::minisign;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct PackOptions {
    pub secret_key: PathBuf,
    pub compatible: String,
    pub version: String,
    pub images: Vec<(String, PathBuf)>,
    pub out: PathBuf,
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub expires_days: u64,
    /// zstd level; `None` ships the images uncompressed.
    pub level: Option<i32>,
    /// zstd window log; above 23 enables long-distance matching (`--long`).
    pub window_log: Option<u32>,
    pub rollout: Option<Rollout>,
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Output<'a, W: Write> {
    Raw(&'a mut W),
    Zstd(zstd::stream::write::Encoder<'static, &'a mut W>),
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn pack_image(class: &str, input: &Path, opts: &PackOptions) -> Result<Image, String> {
    let name = match opts.level {
        Some(_) => format!("{class}-{}.img.zst", opts.version),
        None => format!("{class}-{}.img", opts.version),
    };
    let out_path = opts.out.join(&name);
    let mut reader = File::open(input).map_err(|e| err(input, e))?;
    let out = File::create(&out_path).map_err(|e| err(&out_path, e))?;
    let mut sink = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, out),
        hasher: Sha256::new(),
        count: 0,
    };
    let mut image_hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 4 << 20];
    {
        let mut out = match opts.level {
            Some(level) => {
                let mut e = zstd::stream::write::Encoder::new(&mut sink, level)
                    .map_err(|e| err(&out_path, e))?;
                let threads = std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1);
                e.multithread(threads).map_err(|e| err(&out_path, e))?;
                e.include_checksum(true).map_err(|e| err(&out_path, e))?;
                if let Some(w) = opts.window_log {
                    e.window_log(w).map_err(|e| err(&out_path, e))?;
                    if w > 23 {
                        e.long_distance_matching(true)
                            .map_err(|e| err(&out_path, e))?;
                    }
                }
                Output::Zstd(e)
            }
            None => Output::Raw(&mut sink),
        };
        loop {
            let n = reader.read(&mut buf).map_err(|e| err(input, e))?;
            if n == 0 {
                break;
            }
            image_hasher.update(&buf[..n]);
            size += n as u64;
            match &mut out {
                Output::Zstd(e) => e.write_all(&buf[..n]),
                Output::Raw(w) => w.write_all(&buf[..n]),
            }
            .map_err(|e| err(&out_path, e))?;
        }
        if let Output::Zstd(e) = out {
            e.finish().map_err(|e| err(&out_path, e))?;
        }
    }
    sink.flush().map_err(|e| err(&out_path, e))?;
    let (download_size, download_sha) = (sink.count, hex(&sink.hasher.finalize()));
    let image_sha = hex(&image_hasher.finalize());
    Ok(match opts.level {
        Some(_) => Image {
            url: name,
            size,
            sha256: image_sha,
            compression: Compression::Zstd,
            download_size: Some(download_size),
            download_sha256: Some(download_sha),
            window_log: opts.window_log,
        },
        None => Image {
            url: name,
            size,
            sha256: image_sha,
            compression: Compression::None,
            download_size: None,
            download_sha256: None,
            window_log: None,
        },
    })
}

/// Build the release directory; returns the manifest's path.
pub fn pack(opts: &PackOptions) -> Result<PathBuf, String> {
    crate::manifest::Version::parse(&opts.version).map_err(|e| format!("--version: {e}"))?;
    if opts.images.is_empty() {
        return Err("pack: give at least one --image CLASS=PATH".into());
    }
    let key_text =
        std::fs::read_to_string(&opts.secret_key).map_err(|e| err(&opts.secret_key, e))?;
    let key = minisign::SecretKey::parse(&key_text).map_err(|e| err(&opts.secret_key, e))?;
    std::fs::create_dir_all(&opts.out).map_err(|e| err(&opts.out, e))?;
    let mut images = BTreeMap::new();
    for (class, path) in &opts.images {
        images.insert(class.clone(), pack_image(class, path, opts)?);
    }
    let created = opts.created.unwrap_or_else(now);
    let expires = opts
        .expires
        .unwrap_or(created + opts.expires_days as i64 * 86400);
    let doc = ManifestDoc {
        format: FORMAT,
        compatible: opts.compatible.clone(),
        version: opts.version.clone(),
        created: format_rfc3339(created),
        expires: format_rfc3339(expires),
        images,
        rollout: opts.rollout.clone(),
    };
    let mut body = serde_json::to_vec_pretty(&doc).map_err(|e| format!("release.json: {e}"))?;
    body.push(b'\n');
    write_signed(&opts.out.join("release.json"), &body, &key)?;
    Ok(opts.out.join("release.json"))
}

/// Write `body` to `path` and its signature to `path.minisig`.
pub fn write_signed(path: &Path, body: &[u8], key: &minisign::SecretKey) -> Result<(), String> {
    std::fs::write(path, body).map_err(|e| err(path, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comment = format!("timestamp:{}\tfile:{file_name}\thashed", now());
    let sig_path = PathBuf::from(format!("{}.minisig", path.display()));
    std::fs::write(&sig_path, minisign::sign(key, body, &comment)).map_err(|e| err(&sig_path, e))
}
