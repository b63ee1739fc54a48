//! Who a gRPC request comes from: RocketMQ 5 request signatures, `authorization:
//! MQv2-HMAC-SHA1 Credential=<access key>, SignedHeaders=x-mq-date-time, Signature=<hex
//! HMAC-SHA1 of the x-mq-date-time header under the secret key>`. The access key is a user's
//! name and the secret its access secret (`wasmq user access-key`); a request without the
//! header is anonymous, which is refused once the broker has users. What each RPC then needs
//! is `authz.rs`'s.

use std::net::IpAddr;

use tonic::codegen::http::HeaderMap;
use wasmq_service::{Identity, Security};

use wasmq_rocketmq_api::sign::SCHEME;

/// A signature as a request carries it.
#[derive(Debug, PartialEq, Eq)]
struct Signed<'a> {
    access_key: &'a str,
    signature: Vec<u8>,
    date_time: &'a str,
}

/// The request's signature fields; `None` without an `authorization` header.
fn parse(headers: &HeaderMap) -> Option<Result<Signed<'_>, String>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let auth = headers.get("authorization")?;
    Some((|| {
        let auth = auth.to_str().map_err(|_| "the authorization header is not text".to_owned())?;
        let fields = auth.strip_prefix(SCHEME).ok_or_else(|| format!("the authorization header is not {SCHEME}"))?;
        let field = |name: &str| fields.split(',').map(str::trim).find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')));
        let credential = field("Credential").ok_or("the authorization header names no Credential")?;
        // Some clients append a scope after the access key (`ak/...`).
        let access_key = credential.split('/').next().unwrap_or(credential);
        if access_key.is_empty() {
            return Err("the request carries no access key (its Credential is empty)".into());
        }
        let signature = field("Signature").ok_or("the authorization header has no Signature")?;
        let signature = hex::decode(signature).map_err(|_| "the Signature is not hexadecimal".to_owned())?;
        let date_time = header("x-mq-date-time").ok_or("the signed header x-mq-date-time is missing")?;
        Ok(Signed { access_key, signature, date_time })
    })())
}

/// Who sent a request: anonymous without a signature, else the user whose access secret made
/// it.
///
/// # Errors
/// Why a signature is refused (naming the access key, never a secret): malformed, unknown
/// access key, wrong signature, too many failures from this address.
pub(crate) fn identify(security: &Security, headers: &HeaderMap, peer: IpAddr) -> Result<Identity, String> {
    // Without users every request is anonymous, whatever it carries (clients sign with empty
    // credentials by default).
    if !security.enforcing() {
        return Ok(Identity::Anonymous);
    }
    let Some(signed) = parse(headers) else {
        return Err("the request carries no access key (no authorization header); this broker requires one".into());
    };
    let signed = signed?;
    security
        .access_key(signed.access_key, Some(peer), |secret| wasmq_rocketmq_api::sign::verify(secret, signed.date_time, &signed.signature))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    fn signed(ak: &str, sk: &str, date: &str) -> HeaderMap {
        let sig = wasmq_rocketmq_api::sign::signature(sk.as_bytes(), date);
        let mut h = HeaderMap::new();
        h.insert("x-mq-date-time", HeaderValue::from_str(date).unwrap());
        let auth = format!("{SCHEME} Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig}");
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        h
    }

    #[test]
    fn a_signature_names_the_user_whose_access_secret_made_it() {
        let security = Security::in_memory();
        security.bootstrap(Some("admin-password-1")).unwrap();
        security.create_user("app", "app-password-12", &[]).unwrap();
        let sk = security.new_access_secret("app").unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let id = |h: &HeaderMap| identify(&security, h, peer);
        assert_eq!(id(&signed("app", &sk, "20261207T120000Z")), Ok(Identity::User("app".into())));
        assert!(id(&HeaderMap::new()).unwrap_err().contains("carries no access key"), "anonymous is refused once users exist");
        let wrong = id(&signed("app", "guess", "20261207T120000Z")).unwrap_err();
        assert!(wrong.contains("wrong signature for access key \"app\""), "{wrong}");
        assert!(id(&signed("other", &sk, "x")).unwrap_err().contains("unknown access key"));
        assert!(id(&signed("", "", "x")).unwrap_err().contains("carries no access key"));
        // The date signed is the date sent: a signature over another date does not pass.
        let mut moved = signed("app", &sk, "20261207T120000Z");
        moved.insert("x-mq-date-time", HeaderValue::from_static("20261207T120001Z"));
        assert!(id(&moved).is_err());
        // Five failures of the access key (two above): now even a right signature waits.
        for _ in 0..3 {
            assert!(id(&signed("app", "guess", "20261207T120000Z")).is_err());
        }
        assert!(id(&signed("app", &sk, "20261207T120000Z")).unwrap_err().contains("too many failed logins"));
    }
}
