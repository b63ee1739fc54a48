//! RocketMQ 5 request signatures, as the official clients make them: the `authorization` header
//! `MQv2-HMAC-SHA1 Credential=<access key>, SignedHeaders=x-mq-date-time, Signature=<hex
//! HMAC-SHA1 of the x-mq-date-time header under the secret key>`, beside `x-mq-date-time`. The
//! broker's check is the gRPC front end's `auth.rs`; clients (`wasmq bench grpc`, the tests) sign
//! with [`sign`].

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The signature scheme.
pub const SCHEME: &str = "MQv2-HMAC-SHA1";

/// The hex HMAC-SHA1 of `date_time` under `secret`.
#[must_use]
pub fn signature(secret: &[u8], date_time: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(date_time.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature` (raw bytes) is `date_time`'s under `secret`, compared in constant time.
#[must_use]
pub fn verify(secret: &[u8], date_time: &str, signature: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else { return false };
    mac.update(date_time.as_bytes());
    mac.verify_slice(signature).is_ok()
}

/// Adds `x-mq-date-time` (`date_time`, `yyyyMMddTHHmmssZ`) and the signed `authorization` of
/// `access_key` / `secret` to a request's metadata.
pub fn sign(metadata: &mut tonic::metadata::MetadataMap, access_key: &str, secret: &str, date_time: &str) {
    let auth =
        format!("{SCHEME} Credential={access_key}, SignedHeaders=x-mq-date-time, Signature={}", signature(secret.as_bytes(), date_time));
    if let (Ok(d), Ok(a)) = (date_time.parse(), auth.parse()) {
        metadata.insert("x-mq-date-time", d);
        metadata.insert("authorization", a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_under_its_secret_and_date_only() {
        let s = signature(b"s3cret", "20261208T120000Z");
        let raw = hex::decode(&s).unwrap();
        assert!(verify(b"s3cret", "20261208T120000Z", &raw));
        assert!(!verify(b"guess", "20261208T120000Z", &raw));
        assert!(!verify(b"s3cret", "20261208T120001Z", &raw));
        let mut m = tonic::metadata::MetadataMap::new();
        sign(&mut m, "app", "s3cret", "20261208T120000Z");
        assert_eq!(m.get("authorization").unwrap(), &format!("{SCHEME} Credential=app, SignedHeaders=x-mq-date-time, Signature={s}"));
    }
}
