//! The kubelet endpoint's TLS: a serving certificate from files (as a
//! kubelet's `--tls-cert-file` / `--tls-private-key-file`) or, without
//! them, a self-signed one made in memory at start; client certificates
//! verified against `--client-ca-file` when given, and optional (a client
//! may instead show a bearer token).

use std::{path::PathBuf, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("--tls-cert-file and --tls-private-key-file go together")]
    HalfPair,
    #[error("generating the self-signed serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("configuring client-certificate verification with {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
}

/// Where the serving certificate and the client CA come from.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
}

fn certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |message: String| TlsError::Read {
        path: path.clone(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.clone() });
    }
    Ok(chain)
}

/// The serving certificate chain and key, and whether they were generated.
fn serving_identity(
    settings: &TlsSettings,
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
                path: key.clone(),
                message: e.to_string(),
            })?;
            Ok((chain, key))
        }
        (None, None) => {
            // rcgen turns the names that parse as IP addresses into IP SANs.
            let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            tracing::info!(
                ?names,
                "serving with a self-signed certificate made at start (no --tls-cert-file)"
            );
            Ok((vec![generated.cert.der().clone()], key))
        }
        _ => Err(TlsError::HalfPair),
    }
}

/// The TLS configuration of the kubelet endpoint. `names` are the serving
/// certificate's subject alternative names when it is generated.
pub fn server_config(
    settings: &TlsSettings,
    names: &[String],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = serving_identity(settings, names)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match &settings.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path)? {
                roots.add(certificate)?;
            }
            // Optional: a request without a certificate may still carry a
            // bearer token, and is refused with 401 when it has neither.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(chain, key)?,
    };
    // Streams are upgraded HTTP/1.1 connections.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn serving_certificate_from_files_generated_or_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = ["node-a".to_owned(), "127.0.0.1".to_owned()];
        // Generated in memory.
        server_config(&TlsSettings::default(), &names).expect("self-signed");
        // From files, with a client CA.
        let pair = rcgen::generate_simple_self_signed(names.to_vec()).expect("pair");
        let cert = write(dir.path(), "tls.crt", &pair.cert.pem());
        let key = write(dir.path(), "tls.key", &pair.signing_key.serialize_pem());
        let settings = TlsSettings {
            cert_file: Some(cert.clone()),
            key_file: Some(key),
            client_ca_file: Some(cert.clone()),
        };
        server_config(&settings, &names).expect("from files");
        // Half a pair, and a file without a certificate.
        let half = TlsSettings {
            cert_file: Some(cert),
            ..TlsSettings::default()
        };
        assert!(matches!(
            server_config(&half, &names),
            Err(TlsError::HalfPair)
        ));
        let empty = TlsSettings {
            client_ca_file: Some(write(dir.path(), "empty.crt", "")),
            ..TlsSettings::default()
        };
        assert!(matches!(
            server_config(&empty, &names),
            Err(TlsError::NoCertificate { .. })
        ));
    }
}
