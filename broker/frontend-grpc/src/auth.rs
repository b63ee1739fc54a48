//! RocketMQ 5 request signatures: `authorization: MQv2-HMAC-SHA1 Credential=<access key>,
//! SignedHeaders=x-mq-date-time, Signature=<hex HMAC-SHA1 of the x-mq-date-time header under the
//! secret key>`, checked against the broker's configured access keys when it has any (without
//! any, anonymous clients are accepted; the security issue widens this).

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use tonic::codegen::http::HeaderMap;

/// The signature scheme RocketMQ 5 clients use.
const SCHEME: &str = "MQv2-HMAC-SHA1";

/// Access keys and their secrets. Its `Debug` shows the access keys only.
#[derive(Clone, Default)]
pub struct AccessKeys(HashMap<String, String>);

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_tuple("AccessKeys").field(&keys).finish()
    }
}

impl AccessKeys {
    /// From `(access key, secret key)` pairs.
    #[must_use]
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks a request's signature; returns its access key, or why it is refused (naming the
    /// access key, never a secret).
    ///
    /// # Errors
    /// No or a malformed `authorization` header, an unknown access key, a wrong signature.
    pub fn check(&self, headers: &HeaderMap) -> Result<String, String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let auth = header("authorization")
            .ok_or("the request carries no access key (no authorization header); this broker requires access keys")?;
        let fields = auth.strip_prefix(SCHEME).ok_or_else(|| format!("the authorization header is not {SCHEME}"))?;
        let field = |name: &str| fields.split(',').map(str::trim).find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')));
        let credential = field("Credential").ok_or("the authorization header names no Credential")?;
        // Some clients append a scope after the access key (`ak/...`).
        let access_key = credential.split('/').next().unwrap_or(credential);
        if access_key.is_empty() {
            return Err("the request carries no access key; this broker requires access keys".into());
        }
        let signature = field("Signature").ok_or("the authorization header has no Signature")?;
        let signature = hex::decode(signature).map_err(|_| "the Signature is not hexadecimal".to_owned())?;
        let date_time = header("x-mq-date-time").ok_or("the signed header x-mq-date-time is missing")?;
        let secret = self.0.get(access_key).ok_or_else(|| format!("unknown access key {access_key:?}"))?;
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
        mac.update(date_time.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&signature).map_err(|_| format!("wrong signature for access key {access_key:?}"))?;
        Ok(access_key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    fn signed(ak: &str, sk: &str, date: &str) -> HeaderMap {
        let mut mac = Hmac::<Sha1>::new_from_slice(sk.as_bytes()).unwrap();
        mac.update(date.as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert("x-mq-date-time", HeaderValue::from_str(date).unwrap());
        let auth = format!("{SCHEME} Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig}");
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        h
    }

    #[test]
    fn a_signature_is_checked_against_the_access_keys_secret() {
        let keys = AccessKeys::new([("app".to_owned(), "s3cret".to_owned())]);
        assert_eq!(keys.check(&signed("app", "s3cret", "20261207T120000Z")), Ok("app".to_owned()));
        let wrong = keys.check(&signed("app", "guess", "20261207T120000Z")).unwrap_err();
        assert!(wrong.contains("wrong signature for access key \"app\""), "{wrong}");
        assert!(keys.check(&signed("other", "s3cret", "x")).unwrap_err().contains("unknown access key"));
        assert!(keys.check(&HeaderMap::new()).unwrap_err().contains("carries no access key"));
        assert!(keys.check(&signed("", "", "x")).unwrap_err().contains("carries no access key"));
        // The date signed is the date sent: a signature over another date does not pass.
        let mut moved = signed("app", "s3cret", "20261207T120000Z");
        moved.insert("x-mq-date-time", HeaderValue::from_static("20261207T120001Z"));
        assert!(keys.check(&moved).is_err());
        assert!(!format!("{keys:?}").contains("s3cret"), "secrets stay out of Debug");
    }
}
