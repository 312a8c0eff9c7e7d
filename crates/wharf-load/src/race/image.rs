//! The content pushers push: a seeded random generator, the pool of shared
//! layers, and images built from it (pure; no I/O).
//!
//! Every image has a config of its own (so every manifest is distinct and
//! deleting one never deletes another's manifest), one to three layers from
//! the shared pool (so images share layers across pushers and repositories,
//! which is what makes a race with the collector interesting), and up to
//! two layers of its own (so deleting an image leaves bytes to reclaim).

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// SplitMix64: small, fast and good enough to pick operations and fill
/// blobs; one seed replays a pusher's choices exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One blob: its digest and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub bytes: Bytes,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256(&bytes),
            bytes: Bytes::from(bytes),
        }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// How images are made.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Layers in the shared pool.
    pub shared: usize,
    /// Sizes of every layer, in bytes (inclusive bounds).
    pub min_layer: usize,
    pub max_layer: usize,
}

/// The layers every pusher draws from: the same for a given seed.
pub fn shared_pool(seed: u64, shape: &Shape) -> Vec<Blob> {
    let mut rng = Rng::new(seed ^ 0x5348_4152_4544); // "SHARED"
    (0..shape.shared)
        .map(|_| {
            let n = rng.between(shape.min_layer as u64, shape.max_layer as u64) as usize;
            Blob::new(rng.bytes(n))
        })
        .collect()
}

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// An image as pushed: the manifest's bytes and digest, and every blob it
/// references (config first).
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Bytes,
    pub digest: String,
    pub blobs: Vec<Blob>,
}

impl Image {
    /// A new image for pusher `pusher`'s push number `seq`: distinct from
    /// every other image (its config names both and a random nonce).
    pub fn generate(rng: &mut Rng, pool: &[Blob], shape: &Shape, pusher: usize, seq: u64) -> Image {
        let mut layers: Vec<Blob> = Vec::new();
        if !pool.is_empty() {
            let want = rng.between(1, 3.min(pool.len() as u64)) as usize;
            while layers.len() < want {
                let b = &pool[rng.below(pool.len() as u64) as usize];
                if !layers.iter().any(|l| l.digest == b.digest) {
                    layers.push(b.clone());
                }
            }
        }
        for _ in 0..rng.between(if pool.is_empty() { 1 } else { 0 }, 2) {
            let n = rng.between(shape.min_layer as u64, shape.max_layer as u64) as usize;
            layers.push(Blob::new(rng.bytes(n)));
        }
        let label = format!("p{pusher}-{seq}-{:016x}", rng.next_u64());
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.wharf.gc-race": label}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.digest).collect::<Vec<_>>()},
        }))
        .expect("JSON of plain values");
        let config = Blob::new(config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": LAYER_TYPE, "digest": l.digest, "size": l.size(),
            })).collect::<Vec<_>>(),
        }))
        .expect("JSON of plain values");
        let mut blobs = vec![config];
        blobs.extend(layers);
        Image {
            digest: sha256(&manifest),
            manifest: Bytes::from(manifest),
            blobs,
        }
    }
}

/// The blobs a manifest references (config, then layers), as `(digest,
/// size)`; `None` when it is not an image manifest.
pub fn references(manifest: &[u8]) -> Option<Vec<(String, u64)>> {
    let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let desc =
        |d: &serde_json::Value| Some((d["digest"].as_str()?.to_string(), d["size"].as_u64()?));
    let mut out = vec![desc(&v["config"])?];
    for l in v["layers"].as_array()? {
        out.push(desc(l)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            shared: 16,
            min_layer: 1024,
            max_layer: 4096,
        }
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        for _ in 0..1000 {
            let x = a.between(3, 5);
            assert!((3..=5).contains(&x));
        }
        assert_eq!(a.bytes(13).len(), 13);
        let hits = (0..10_000).filter(|_| a.chance(0.25)).count();
        assert!((2000..3000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| a.chance(0.0)));
    }

    #[test]
    fn pool_is_the_same_for_a_seed() {
        let p = shared_pool(42, &shape());
        assert_eq!(p.len(), 16);
        assert_eq!(p, shared_pool(42, &shape()));
        assert_ne!(p[0], shared_pool(43, &shape())[0]);
        for b in &p {
            assert!((1024..=4096).contains(&b.bytes.len()));
            assert_eq!(b.digest, sha256(&b.bytes));
        }
    }

    #[test]
    fn images_share_pool_layers_and_are_distinct() {
        let pool = shared_pool(1, &shape());
        let mut rng = Rng::new(9);
        let imgs: Vec<Image> = (0..200)
            .map(|i| Image::generate(&mut rng, &pool, &shape(), 3, i))
            .collect();
        let mut digests: Vec<&str> = imgs.iter().map(|i| i.digest.as_str()).collect();
        digests.sort();
        digests.dedup();
        assert_eq!(digests.len(), 200, "every manifest is distinct");
        for img in &imgs {
            assert_eq!(img.digest, sha256(&img.manifest));
            let refs = references(&img.manifest).unwrap();
            let mine: Vec<(String, u64)> = img
                .blobs
                .iter()
                .map(|b| (b.digest.clone(), b.size()))
                .collect();
            assert_eq!(refs, mine, "the manifest names exactly the blobs pushed");
            let shared = img.blobs[1..].iter().filter(|b| pool.contains(b)).count();
            assert!((1..=3).contains(&shared));
            assert!(img.blobs.len() - 1 - shared <= 2);
        }
    }

    #[test]
    fn references_refuses_non_manifests() {
        assert!(references(b"{}").is_none());
        assert!(references(b"not json").is_none());
    }
}
