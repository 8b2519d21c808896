//! Certificates and rustls configuration.
//!
//! One crypto provider for the whole process — ring — installed first thing (kube panics
//! when two providers are compiled in and none is chosen). Certificates are ECDSA P-256, made
//! with rcgen: a CA valid ten years and a serving certificate valid one year, the split
//! Kubewarden uses, so that rotating the serving certificate never touches `caBundle`.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file held no usable certificate or key.
    #[error("{what}: {why}")]
    Pem { what: &'static str, why: String },
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs ring as the process-wide rustls provider. Idempotent.
pub fn install_provider() {
    // Err means a provider is already installed: by us, earlier, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A CA and a serving certificate signed by it, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Expiry of the serving certificate, Unix seconds.
    pub not_after: i64,
}

/// The names a Service is reached by inside the cluster.
pub fn service_sans(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a CA and a serving certificate for `sans` (DNS names or IP addresses).
pub fn generate(sans: &[String], serving_days: i64) -> Result<Bundle, TlsError> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "helm-guard CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(sans.to_vec())?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(
        DnType::CommonName,
        sans.first().map_or("helm-guard", String::as_str),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::hours(1);
    leaf.not_after = now + Duration::days(serving_days);
    let not_after = leaf.not_after.unix_timestamp();
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Bundle {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// A rustls server configuration from PEM certificate chain and key (HTTP/2 and HTTP/1.1).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            why: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        what: "private key",
        why: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A rustls client configuration that trusts only `ca_pem` (for the demo and tests).
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            what: "CA certificate",
            why: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    // No ALPN here: the HTTP connector negotiates its own protocols.
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bundle_makes_working_configs() {
        install_provider();
        let sans = service_sans("helm-guard", "helm-guard");
        assert_eq!(sans[3], "helm-guard.helm-guard.svc.cluster.local");
        let b = generate(&sans, 365).expect("generate");
        assert!(b.key_pem.contains("PRIVATE KEY"));
        server_config(b.cert_pem.as_bytes(), b.key_pem.as_bytes()).expect("server config");
        client_config(b.ca_pem.as_bytes()).expect("client config");
        assert!(b.not_after > OffsetDateTime::now_utc().unix_timestamp() + 364 * 86_400);
    }

    #[test]
    fn bad_pem_is_a_typed_error() {
        install_provider();
        let err = server_config(b"nothing here", b"nor here").expect_err("no cert");
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}
