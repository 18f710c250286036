//! WireGuard keys. The private key lives only in this process: it is
//! generated here or read from a mounted Secret file, has no `Debug` or
//! `Display`, and is handed to the datapath and nothing else. Only the
//! public key is ever written out.

use std::{fmt, io::Write as _, path::Path, str::FromStr};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use x25519_dalek::StaticSecret;

use crate::Error;

/// A Curve25519 private key; deliberately neither `Debug` nor `Display`.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        PrivateKey(StaticSecret::random())
    }

    /// Reads a key as `wg genkey` writes it (base64, surrounding whitespace
    /// ignored), for example a Secret mounted into the gateway pod. The error
    /// names the file but never repeats its content.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let bytes = decode_key(text.trim()).map_err(|reason| Error::Key {
            what: path.display().to_string(),
            reason,
        })?;
        Ok(PrivateKey(StaticSecret::from(bytes)))
    }

    /// Parses a key as `wg genkey` prints it (for example a Secret's value
    /// read by a controller); the error never repeats the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        decode_key(text.trim()).map(|bytes| PrivateKey(StaticSecret::from(bytes)))
    }

    /// The key as `wg genkey` prints it, to be stored in a Kubernetes Secret
    /// that the gateway pod mounts (the in-cluster controller generates a
    /// gateway's key when its CR names no Secret); nowhere else.
    pub fn to_secret_text(&self) -> String {
        self.to_base64()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.0
    }

    /// Base64 form for APIs that take the key as text (defguard's
    /// `InterfaceConfiguration`); kept inside the crate.
    pub(crate) fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }
}

/// A Curve25519 public key, shown in base64 as `wg pubkey` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn to_dalek(self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }

    /// Writes the key and a newline to `path` atomically (temporary file,
    /// then rename), so a reader never sees half a key.
    pub fn publish(&self, path: &Path) -> Result<(), Error> {
        write_atomically(path, format!("{self}\n").as_bytes())
    }

    /// Reads a public key file as [`PublicKey::publish`] or `wg pubkey` writes it.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        text.trim().parse().map_err(|reason| Error::Key {
            what: path.display().to_string(),
            reason,
        })
    }
}

impl FromStr for PublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        decode_key(s).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| "not base64 (expected 44 characters as `wg genkey` prints)".to_owned())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes instead of 32", b.len()))
}

/// Replaces `path` with `content` through a temporary file in the same
/// directory and a rename.
pub(crate) fn write_atomically(path: &Path, content: &[u8]) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(content).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pub");
        let key = PrivateKey::generate().public_key();
        key.publish(&path).unwrap();
        assert_eq!(PublicKey::from_file(&path).unwrap(), key);
        assert_eq!(key.to_string().len(), 44);
    }

    #[test]
    fn private_key_file_matches_the_wg_tool_format() {
        // A key pair computed with `wg genkey | tee k | wg pubkey`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "ELKWIGF9j9BlaO/d+MXKobNItmDfTp/Oz7Ngswg2Smw=\n").unwrap();
        let key = PrivateKey::from_file(&path).unwrap();
        assert_eq!(
            key.public_key().to_string(),
            "hwrYdrS6YauiL4h8r2w1Cg4T8FDn4AicN4OX1jFtpS8="
        );
    }

    #[test]
    fn a_bad_private_key_file_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "c2VjcmV0LXRvby1zaG9ydA==").unwrap();
        let message = match PrivateKey::from_file(&path) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a 16-byte key was accepted"),
        };
        assert!(message.contains("16 bytes instead of 32"), "{message}");
        assert!(!message.contains("c2VjcmV0"), "{message}");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key()
        );
    }
}
