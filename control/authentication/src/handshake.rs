//! The cryptography of the peering handshake: nonces, the signed statement a
//! consumer puts in its Tenant, client keys and certificate signing requests,
//! and reading a certificate's validity.

use base64::Engine as _;
use rcgen::{CertificateParams, CertificateSigningRequestParams, DnType, DnValue, KeyPair};
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};

use crate::Error;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a provider refuses a Tenant. The variant name is the condition reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    PublicKeyInvalid(String),
    SignatureInvalid(String),
    CsrInvalid(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PublicKeyInvalid(_) => "PublicKeyInvalid",
            Refusal::SignatureInvalid(_) => "SignatureInvalid",
            Refusal::CsrInvalid(_) => "CSRInvalid",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Refusal::PublicKeyInvalid(m)
            | Refusal::SignatureInvalid(m)
            | Refusal::CsrInvalid(m) => m,
        }
    }
}

pub(crate) fn generate_key_pkcs8() -> Result<Vec<u8>, Error> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|e| Error::Crypto(format!("generating an Ed25519 key: {e}")))
}

/// A public key as it travels in a Tenant: base64 SubjectPublicKeyInfo.
pub fn encode_public_key(raw: &[u8]) -> String {
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(raw);
    BASE64.encode(spki)
}

fn decode_public_key(encoded: &str) -> Result<Vec<u8>, Refusal> {
    let invalid = |why: &str| {
        Refusal::PublicKeyInvalid(format!(
            "spec.publicKey is not a base64 Ed25519 SubjectPublicKeyInfo: {why}"
        ))
    };
    let spki = BASE64
        .decode(encoded.trim())
        .map_err(|_| invalid("not base64"))?;
    match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(raw) if raw.len() == 32 => Ok(raw.to_vec()),
        _ => Err(invalid("wrong length or algorithm")),
    }
}

/// A fresh random nonce, base64.
pub fn new_nonce() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Crypto("the system random source failed".into()))?;
    Ok(BASE64.encode(bytes))
}

/// What a consumer signs: the nonce bound to both cluster IDs, so a
/// signature is worth nothing for another provider or another consumer ID.
pub fn statement(provider_id: &str, consumer_id: &str, nonce: &str) -> Vec<u8> {
    format!("strait-tenant/v1\nprovider={provider_id}\nconsumer={consumer_id}\nnonce={nonce}")
        .into_bytes()
}

/// Signs a statement with this cluster's key, base64.
pub fn sign(key: &Ed25519KeyPair, statement: &[u8]) -> String {
    BASE64.encode(key.sign(statement).as_ref())
}

/// Checks a consumer's signature of `statement` with the public key in its Tenant.
pub fn verify(public_key: &str, statement: &[u8], signature: &str) -> Result<(), Refusal> {
    let raw = decode_public_key(public_key)?;
    let signature = BASE64
        .decode(signature.trim())
        .map_err(|_| Refusal::SignatureInvalid("spec.signature is not base64".into()))?;
    UnparsedPublicKey::new(&ED25519, raw)
        .verify(statement, &signature)
        .map_err(|_| {
            Refusal::SignatureInvalid(
                "spec.signature is not this provider's current nonce for this cluster ID signed with spec.publicKey; \
                 the consumer re-signs the nonce on its next attempt"
                    .into(),
            )
        })
}

/// The user a consumer's control-plane certificate authenticates as on the provider.
pub fn control_plane_user(consumer_id: &str) -> String {
    format!("strait:consumer:{consumer_id}")
}

/// The user a slice's certificate authenticates as on the provider (the
/// virtual kubelets of that slice).
pub fn slice_user(consumer_id: &str, slice: &str) -> String {
    format!("strait:slice:{consumer_id}:{slice}")
}

/// A new client key and a PEM certificate signing request for `user`
/// (the key, PEM, stays with the consumer).
pub fn new_client_request(user: &str) -> Result<(String, String), Error> {
    let crypto = |e: rcgen::Error| Error::Crypto(format!("building a CSR: {e}"));
    let key = KeyPair::generate().map_err(crypto)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, user);
    let csr = params.serialize_request(&key).map_err(crypto)?;
    Ok((key.serialize_pem(), csr.pem().map_err(crypto)?))
}

/// Checks that a CSR is well formed, self-signed, and asks for exactly
/// `user` and nothing else (no groups, which RBAC could honour).
pub fn check_client_request(csr_pem: &str, user: &str) -> Result<(), Refusal> {
    let request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        Refusal::CsrInvalid(format!(
            "spec.csr is not a valid PEM certificate signing request: {e}"
        ))
    })?;
    let entries: Vec<_> = request.params.distinguished_name.iter().collect();
    let common_name = match entries.as_slice() {
        [(DnType::CommonName, DnValue::Utf8String(cn))] => Some(cn.as_str()),
        [(DnType::CommonName, DnValue::PrintableString(cn))] => Some(cn.as_str()),
        _ => None,
    };
    if common_name != Some(user) {
        return Err(Refusal::CsrInvalid(format!(
            "spec.csr must have the subject CN={user} and nothing else (no organizations/groups)"
        )));
    }
    Ok(())
}

/// A certificate's validity, in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    pub fn of_pem(pem: &str) -> Result<Self, Error> {
        let bad = |e: String| Error::Crypto(format!("reading a certificate: {e}"));
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let certificate = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
        let validity = certificate.validity();
        Ok(Self {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// The moment `fraction` of the lifetime has passed.
    pub fn at_fraction(&self, fraction: f64) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0) as f64;
        self.not_before + (lifetime * fraction) as i64
    }
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    fn key() -> Ed25519KeyPair {
        let pkcs8 = generate_key_pkcs8().expect("key");
        Ed25519KeyPair::from_pkcs8(&pkcs8).expect("pkcs8")
    }

    #[test]
    fn a_signed_statement_verifies_only_for_its_key_and_cluster_ids() {
        let consumer = key();
        let public = encode_public_key(consumer.public_key().as_ref());
        let nonce = new_nonce().expect("nonce");
        let signature = sign(&consumer, &statement("b", "a", &nonce));
        assert_eq!(
            verify(&public, &statement("b", "a", &nonce), &signature),
            Ok(())
        );
        for other in [
            statement("b", "c", &nonce),
            statement("x", "a", &nonce),
            statement("b", "a", &new_nonce().expect("nonce")),
        ] {
            assert_eq!(
                verify(&public, &other, &signature).map_err(|r| r.reason()),
                Err("SignatureInvalid")
            );
        }
        let stranger = encode_public_key(key().public_key().as_ref());
        assert_eq!(
            verify(&stranger, &statement("b", "a", &nonce), &signature).map_err(|r| r.reason()),
            Err("SignatureInvalid")
        );
        assert_eq!(
            verify("bm90IGEga2V5", &statement("b", "a", &nonce), &signature)
                .map_err(|r| r.reason()),
            Err("PublicKeyInvalid")
        );
    }

    #[test]
    fn a_request_must_name_exactly_the_expected_user() {
        let (_, csr) = new_client_request(&control_plane_user("a")).expect("csr");
        assert_eq!(check_client_request(&csr, "strait:consumer:a"), Ok(()));
        assert_eq!(
            check_client_request(&csr, "strait:consumer:c").map_err(|r| r.reason()),
            Err("CSRInvalid")
        );
        assert_eq!(
            check_client_request("garbage", "strait:consumer:a").map_err(|r| r.reason()),
            Err("CSRInvalid")
        );
        // Asking for a group as well (system:masters, say) is refused.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "strait:consumer:a");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let greedy = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        assert_eq!(
            check_client_request(&greedy, "strait:consumer:a").map_err(|r| r.reason()),
            Err("CSRInvalid")
        );
    }
}
