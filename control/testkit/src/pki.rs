//! A throwaway certificate authority per TLS test cluster: a server
//! certificate for 127.0.0.1 and client certificates that authenticate users.
//! A client certificate maps to its user by its exact DER bytes, recorded
//! when it is issued, so the server needs no X.509 parsing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, DnValue, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// PEM credentials of one user, for a kubeconfig.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub user: User,
    pub certificate_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("configuring TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the certificate signing request has no common name (the user)")]
    NoCommonName,
    #[error("configuring client-certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    users: Mutex<HashMap<Vec<u8>, User>>,
}

impl Pki {
    pub fn new(cluster: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("strait-testkit {cluster} CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self {
            ca,
            users: Mutex::new(HashMap::new()),
        })
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// TLS for the server: its certificate for 127.0.0.1, and client
    /// certificates from this CA verified when presented (a client without
    /// one is refused later with 401).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into()?),
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, "strait-testkit apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &self.ca)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![certificate.der().clone(), self.ca.der().clone()],
                key_der,
            )?;
        // HTTP/1.1 only: hyper is built without HTTP/2, and kubectl would
        // otherwise negotiate h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Issues a client certificate (CN = user, O = each group, as the API
    /// server reads them) and remembers whom it authenticates.
    pub fn issue(&self, name: &str, groups: &[&str]) -> Result<ClientCredentials, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let certificate = params.signed_by(&key, &self.ca)?;
        let user = User {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(certificate.der().to_vec(), user.clone());
        Ok(ClientCredentials {
            user,
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a PEM certificate signing request as the API server's client
    /// signer does (`kubernetes.io/kube-apiserver-client`): a client
    /// certificate valid for `lifetime` whose CN is the user and whose O
    /// entries are its groups, remembered like the ones `issue` makes.
    pub fn sign_request(
        &self,
        request_pem: &str,
        lifetime: std::time::Duration,
    ) -> Result<(String, User), PkiError> {
        let request = rcgen::CertificateSigningRequestParams::from_pem(request_pem)?;
        let text = |value: &DnValue| match value {
            DnValue::Utf8String(s) => Some(s.clone()),
            DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
            _ => None,
        };
        let mut name = None;
        let mut groups = Vec::new();
        for (kind, value) in request.params.distinguished_name.iter() {
            match kind {
                DnType::CommonName => name = text(value),
                DnType::OrganizationName => groups.extend(text(value)),
                _ => {}
            }
        }
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or(PkiError::NoCommonName)?;
        // Only the subject and key are taken from the request: the signer
        // decides usages and validity, as kube-controller-manager does.
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = request.params.distinguished_name.clone();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(1);
        params.not_after = now + lifetime;
        let signed = rcgen::CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.ca)?;
        let user = User { name, groups };
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(signed.der().to_vec(), user.clone());
        Ok((signed.pem(), user))
    }

    /// The user a verified client certificate was issued to.
    pub fn user_of(&self, certificate: &CertificateDer<'_>) -> Option<User> {
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(certificate.as_ref())
            .cloned()
    }
}
