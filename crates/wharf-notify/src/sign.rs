//! The signature every delivery carries (docs/notifications.md,
//! "Verifying a delivery").
//!
//! `X-Wharf-Timestamp` is the Unix time (seconds) the attempt was sent;
//! `X-Wharf-Signature` is `sha256=` and the lower-case hex HMAC-SHA256,
//! keyed with the endpoint's secret, of the timestamp, a `.`, and the
//! body's exact bytes. Signing the timestamp with the body lets a
//! receiver refuse a delivery replayed later: it checks the signature,
//! then that the timestamp is recent (five minutes is the documented
//! tolerance). Each retry is signed afresh with its own timestamp.
//!
//! Owns: the message signed, the header names and format, and a
//! constant-time [`verify`]. The HMAC is `ring`'s (already the TLS
//! stack's cryptography).
//!
//! Must never: sign anything but the bytes sent, or compare signatures in
//! variable time.

use ring::hmac;

/// The header holding the Unix time (seconds) the delivery was signed.
pub const TIMESTAMP_HEADER: &str = "x-wharf-timestamp";
/// The header holding `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-wharf-signature";
/// The header holding the event's id (also in the body).
pub const EVENT_ID_HEADER: &str = "x-wharf-event-id";
/// The header holding the attempt's number, from 1.
pub const ATTEMPT_HEADER: &str = "x-wharf-delivery-attempt";

fn tag(secret: &[u8], timestamp: u64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    ctx.sign()
}

/// The `X-Wharf-Signature` value of `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(tag(secret, timestamp, body).as_ref())
    )
}

/// Whether `header` (an `X-Wharf-Signature` value) signs `body` sent at
/// `timestamp` with `secret`; constant-time. The timestamp's age is the
/// receiver's to check.
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    let Some(given) = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = timestamp.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HMAC-SHA256 by its definition (RFC 2104) over sha2, independent of
    /// `ring`.
    fn reference_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
        use sha2::{Digest as _, Sha256};
        let mut k = if key.len() > 64 {
            Sha256::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(64, 0);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    #[test]
    fn rfc4231_test_case_2() {
        // Key "Jefe", data "what do ya want for nothing?".
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            reference_hmac(b"Jefe", b"what do ya want for nothing?"),
            tag.as_ref()
        );
    }

    #[test]
    fn the_signature_covers_timestamp_dot_body() {
        let secret = b"whsec_0123456789abcdef";
        let body = br#"{"events":[]}"#;
        let sig = signature(secret, 1_700_000_000, body);
        let expected = reference_hmac(secret, b"1700000000.{\"events\":[]}");
        assert_eq!(sig, format!("sha256={}", hex::encode(expected)));
        assert!(verify(secret, 1_700_000_000, body, &sig));
        assert!(!verify(secret, 1_700_000_001, body, &sig), "another time");
        assert!(!verify(secret, 1_700_000_000, b"{}", &sig), "another body");
        assert!(!verify(b"other secret", 1_700_000_000, body, &sig));
        assert!(!verify(secret, 1_700_000_000, body, "sha1=00"));
        assert!(!verify(secret, 1_700_000_000, body, "sha256=zz"));
    }
}
