//! TLS material: configured PEM files, or a development CA and server certificate generated
//! with rcgen on first start (the rustls configuration itself is `wasmq_net::server_config`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the development CA's certificate is written (clients pass it with `--ca`).
pub fn dev_ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("ca.pem")
}

/// Creates a development CA and a server certificate for localhost / 127.0.0.1 / ::1 in
/// `<data_dir>/tls/` unless they exist; returns the server certificate and key paths.
///
/// # Errors
/// Generating or writing the files failed.
pub fn ensure_dev_certificates(data_dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let (cert_path, key_path, ca_path) = (dir.join("server.pem"), dir.join("server-key.pem"), dev_ca_path(data_dir));
    if cert_path.exists() && key_path.exists() && ca_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "wasmq development CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "wasmq broker");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&ca_path, ca.pem())?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// A random token of 32 hex characters.
pub fn random_token() -> String {
    use rand::Rng;
    let mut b = [0u8; 16];
    rand::rng().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
