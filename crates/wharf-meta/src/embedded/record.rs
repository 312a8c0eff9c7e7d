//! How the embedded store writes a [`ManifestRecord`]: a compact binary
//! form, about a third of the JSON it wrote before (digests as their raw
//! hash bytes, the common media types as one byte, lengths as varints).
//! The manifests table is the largest of the file, and the file's size is
//! what a repair after a crash reads and what the page cache must hold.
//!
//! Owns: [`encode`] and [`decode`] of the manifests table's values.
//! Records written as JSON by earlier versions are still read (a JSON
//! value starts with `{`, a binary one with [`VERSION`]); a record is
//! rewritten in the binary form whenever it is stored again.
//!
//! Must never: read past a value's end, accept trailing bytes, or decode a
//! digest or string the types would refuse: every malformed value is a
//! `Corrupt` error naming the manifests table, never a panic.
//!
//! The layout, in order (a varint is LEB128, at most 10 bytes; a string is
//! a varint length and that many UTF-8 bytes; an option is a byte 0 or 1,
//! then the value if 1):
//!
//! - the byte [`VERSION`];
//! - digest: a byte naming the algorithm (1 sha256, 2 sha512), then the
//!   hash's 32 or 64 bytes;
//! - media type: a byte, 1 to 4 for the four manifest media types (see
//!   [`MEDIA_TYPES`]), or 0 and a string;
//! - size: a varint;
//! - artifact type: an option of a string;
//! - annotations: an option of a varint count and that many (key, value)
//!   strings, in key order;
//! - subject: an option of a digest;
//! - references: a varint count and that many digests.

use std::collections::BTreeMap;
use std::path::Path;

use redb::WriteTransaction;
use wharf_core::digest::Algorithm;
use wharf_core::Digest;

use super::gc::mark_form;
use crate::{ManifestRecord, MetaError};

/// The first byte of a binary record (a JSON record starts with `{`).
pub(super) const VERSION: u8 = 1;

/// The `schema` table's entry naming the newest record form the file may
/// hold: this build writes [`VERSION`], and refuses a file marked with a
/// later one (written by a newer Wharf) rather than fail on its records
/// one request at a time.
const FORMAT_KEY: &str = "manifest_record_format";

/// Marks the file as holding binary records, or refuses it if a newer
/// build marked it with a form this one cannot read.
pub(super) fn check_format(txn: &WriteTransaction, path: &Path) -> Result<(), MetaError> {
    mark_form(
        txn,
        path,
        FORMAT_KEY,
        u64::from(VERSION),
        "manifest records",
    )
    .map(|_| ())
}

/// The media types written as one byte: index + 1.
const MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// `record` in the binary form.
pub(super) fn encode(record: &ManifestRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + 34 * record.references.len());
    out.push(VERSION);
    put_digest(&mut out, &record.digest);
    match MEDIA_TYPES.iter().position(|m| *m == record.media_type) {
        Some(i) => out.push(i as u8 + 1),
        None => {
            out.push(0);
            put_str(&mut out, &record.media_type);
        }
    }
    put_varint(&mut out, record.size);
    put_option(&mut out, record.artifact_type.as_deref(), put_str);
    put_option(&mut out, record.annotations.as_ref(), |out, map| {
        put_varint(out, map.len() as u64);
        for (k, v) in map {
            put_str(out, k);
            put_str(out, v);
        }
    });
    put_option(&mut out, record.subject.as_ref(), put_digest);
    put_varint(&mut out, record.references.len() as u64);
    for r in &record.references {
        put_digest(&mut out, r);
    }
    out
}

/// A manifests table value, binary or (written by an earlier version) JSON.
pub(super) fn decode(bytes: &[u8]) -> Result<ManifestRecord, MetaError> {
    match bytes.first() {
        Some(&VERSION) => Reader { rest: &bytes[1..] }
            .record()
            .map_err(|why| super::corrupt("manifest record", why)),
        _ => serde_json::from_slice(bytes).map_err(|e| super::corrupt("manifest record", e)),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_option<T>(out: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(v) => {
            out.push(1);
            put(out, v);
        }
        None => out.push(0),
    }
}

pub(super) fn put_digest(out: &mut Vec<u8>, d: &Digest) {
    out.push(match d.algorithm() {
        Algorithm::Sha256 => 1,
        Algorithm::Sha512 => 2,
    });
    // A digest's hex is lowercase and even-length by construction.
    let hex = d.hex().as_bytes();
    for pair in hex.chunks_exact(2) {
        out.push((nibble(pair[0]) << 4) | nibble(pair[1]));
    }
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// Reads a digest written by [`put_digest`] from the start of `rest`, and
/// moves `rest` past it.
pub(super) fn take_digest(rest: &mut &[u8]) -> Result<Digest, String> {
    let mut reader = Reader { rest };
    let digest = reader.digest()?;
    *rest = reader.rest;
    Ok(digest)
}

/// Reads a binary record; every error is a short reason.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn record(mut self) -> Result<ManifestRecord, String> {
        let digest = self.digest()?;
        let media_type = match self.byte()? {
            0 => self.string()?,
            i @ 1..=4 => MEDIA_TYPES[usize::from(i) - 1].to_string(),
            other => return Err(format!("unknown media type code {other}")),
        };
        let size = self.varint()?;
        let artifact_type = self.option(Self::string)?;
        let annotations = self.option(|r| {
            let n = r.count()?;
            let mut map = BTreeMap::new();
            for _ in 0..n {
                let k = r.string()?;
                map.insert(k, r.string()?);
            }
            Ok(map)
        })?;
        let subject = self.option(Self::digest)?;
        let n = self.count()?;
        let mut references = Vec::with_capacity(n);
        for _ in 0..n {
            references.push(self.digest()?);
        }
        if !self.rest.is_empty() {
            return Err(format!("{} bytes past the record's end", self.rest.len()));
        }
        Ok(ManifestRecord {
            digest,
            media_type,
            size,
            artifact_type,
            annotations,
            subject,
            references,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!(
                "cut short: {n} bytes wanted, {} left",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// A count of items still to read: never more than the bytes left, so
    /// a corrupt count cannot make a huge allocation.
    fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.rest.len())
            .ok_or_else(|| format!("count {n} exceeds the {} bytes left", self.rest.len()))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| format!("string not UTF-8: {e}"))
    }

    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.byte()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(format!("option marker {other}")),
        }
    }

    fn digest(&mut self) -> Result<Digest, String> {
        let (name, len) = match self.byte()? {
            1 => ("sha256", 32),
            2 => ("sha512", 64),
            other => return Err(format!("unknown digest algorithm code {other}")),
        };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(name.len() + 1 + 2 * len);
        text.push_str(name);
        text.push(':');
        for b in self.take(len)? {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        text.parse().map_err(|e| format!("digest: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(seed: &str) -> Digest {
        Digest::sha256_of(seed.as_bytes())
    }

    fn full() -> ManifestRecord {
        ManifestRecord {
            digest: digest("m"),
            media_type: MEDIA_TYPES[0].into(),
            size: 1234,
            artifact_type: Some("application/vnd.example.sbom".into()),
            annotations: Some(BTreeMap::from([
                (
                    "org.opencontainers.image.created".into(),
                    "2026-12-08".into(),
                ),
                ("é".into(), String::new()),
            ])),
            subject: Some(Digest::of(Algorithm::Sha512, b"s")),
            references: vec![
                digest("a"),
                digest("b"),
                Digest::of(Algorithm::Sha512, b"c"),
            ],
        }
    }

    #[test]
    fn every_field_round_trips_and_the_binary_form_is_smaller() {
        let bare = ManifestRecord {
            digest: digest("x"),
            media_type: "application/vnd.example.unknown+json".into(),
            size: u64::MAX,
            artifact_type: None,
            annotations: None,
            subject: None,
            references: vec![],
        };
        for record in [full(), bare] {
            let bytes = encode(&record);
            assert_eq!(decode(&bytes).unwrap(), record);
            let json = serde_json::to_vec(&record).unwrap();
            assert!(
                bytes.len() * 2 < json.len(),
                "{} vs {}",
                bytes.len(),
                json.len()
            );
        }
    }

    #[test]
    fn records_written_as_json_are_still_read() {
        let record = full();
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(decode(&json).unwrap(), record);
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused_without_a_panic() {
        let bytes = encode(&full());
        for cut in 1..bytes.len() {
            let e = decode(&bytes[..cut]).unwrap_err();
            assert!(matches!(e, MetaError::Internal(_)), "{cut}: {e:?}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn corrupt_codes_and_counts_are_refused() {
        let bytes = encode(&full());
        // The digest's algorithm code, then the media type code.
        for (at, value) in [(1, 9u8), (34, 9)] {
            let mut bad = bytes.clone();
            bad[at] = value;
            assert!(decode(&bad).is_err(), "byte {at} = {value}");
        }
        // A huge reference count right after an empty record's subject.
        let mut bad = encode(&ManifestRecord {
            references: vec![],
            ..full()
        });
        bad.pop();
        bad.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&bad).is_err());
        // Any single byte flipped: an error or a record, never a panic.
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x5a;
            let _ = decode(&flipped);
        }
    }
}
