//! Kite checksums: lowercase hex SHA-256 without separators.
//!
//! Contract: [`session_checksum`] is what `POST /session/token` sends
//! (`api_key + request_token + api_secret`); [`postback_checksum`] is what Kite puts in an
//! order postback (`order_id + order_timestamp + api_secret`), and [`verify_postback`]
//! compares it without early exit.

use sha2::{Digest, Sha256};

fn hex_sha256(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The checksum of a session exchange.
pub fn session_checksum(api_key: &str, request_token: &str, api_secret: &str) -> String {
    hex_sha256(&[api_key, request_token, api_secret])
}

/// The checksum Kite attaches to an order update.
pub fn postback_checksum(order_id: &str, order_timestamp: &str, api_secret: &str) -> String {
    hex_sha256(&[order_id, order_timestamp, api_secret])
}

/// True when `given` is the postback checksum of this order (constant time in the length).
pub fn verify_postback(
    order_id: &str,
    order_timestamp: &str,
    api_secret: &str,
    given: &str,
) -> bool {
    let want = postback_checksum(order_id, order_timestamp, api_secret);
    want.len() == given.len()
        && want
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_checksum_matches_the_documented_test_vector() {
        let sum = session_checksum("kitefront", "reqtok123", "secret456");
        assert_eq!(
            sum,
            "022395bdf53a198d6c8b0e427b8a22f8e37cda604dfc57bfab3c3d736f024c83"
        );
    }

    #[test]
    fn the_session_checksum_is_sha256_of_the_concatenation() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            session_checksum("a", "b", "c"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_postback_checksum_verifies_and_a_changed_one_does_not() {
        let sum = postback_checksum("220303000308932", "2022-03-03 09:24:25", "s3cr3t");
        assert!(verify_postback(
            "220303000308932",
            "2022-03-03 09:24:25",
            "s3cr3t",
            &sum
        ));
        let mut bad = sum.clone();
        bad.replace_range(0..1, if sum.starts_with('0') { "1" } else { "0" });
        assert!(!verify_postback(
            "220303000308932",
            "2022-03-03 09:24:25",
            "s3cr3t",
            &bad
        ));
        assert!(!verify_postback(
            "220303000308932",
            "2022-03-03 09:24:25",
            "s3cr3t",
            "ab"
        ));
    }
}
