//! Password hashing (argon2id, PHC strings) and random secrets.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;

use crate::AuthError;

/// Fewest characters of a password a user chooses (generated ones are longer).
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Most bytes of a password (argon2 takes any length; this bounds the work of a request).
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// The argon2id hash of `password` with a fresh salt, as a PHC string (`$argon2id$v=19$...`).
///
/// # Errors
/// A password shorter than [`PASSWORD_CHARS_MIN`] or longer than [`PASSWORD_BYTES_MAX`].
pub fn hash(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(AuthError::Invalid(format!("a password needs at least {PASSWORD_CHARS_MIN} characters")));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::Invalid(format!("a password has at most {PASSWORD_BYTES_MAX} bytes")));
    }
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Invalid(e.to_string()))?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Whether `password` is the one `phc` was made from (argon2 compares in constant time).
#[must_use]
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Spends the time of one verification, for a user that does not exist (so the answer's time
/// does not say which names exist).
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("no user has this password").unwrap_or_default());
    let _ = verify(password, phc);
}

/// A random secret of `bytes` random bytes, as lowercase hex.
#[must_use]
pub fn random_secret(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex SHA-256 of `s` (API tokens are random, so a plain hash is enough to store them).
#[must_use]
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares in constant time (for equal lengths; the length itself is not secret here).
#[must_use]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse battery!", &h));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_ne!(hash("correct horse battery").unwrap(), h, "a fresh salt each time");
        assert!(hash("short").unwrap_err().to_string().contains("at least 12 characters"));
        assert!(!verify(&"x".repeat(PASSWORD_BYTES_MAX + 1), &h));
    }

    #[test]
    fn secrets_are_random_hex() {
        let (a, b) = (random_secret(16), random_secret(16));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
