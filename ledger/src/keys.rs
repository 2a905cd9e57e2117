//! Member identities: BLS12-381 key pairs (bls-signatures, blst backend), signatures, proofs of
//! possession, aggregate signatures, and key files.
//!
//! Scheme (IETF BLS signature draft, "minimal-pubkey-size" variant): public keys in G1 (48-byte
//! compressed), signatures in G2 (96-byte compressed), secret keys 32-byte big-endian scalars.
//! Messages are signed with the basic ciphersuite [`SIG_DST`]; a proof of possession is a
//! signature over the 48-byte compressed public key with the proof-of-possession DST
//! [`POP_DST`] (as `G2ProofOfPossession.PopProve` in the IETF draft), so it can never be
//! confused with a message signature.

use std::io::Write;
use std::path::Path;

use bls_signatures::{PrivateKey, PublicKey as BlsPublicKey, Serialize, Signature as BlsSignature};
use blstrs::{G1Projective, G2Projective, Scalar};
use rand_core::OsRng;

/// Hash-to-curve DST of message signatures (bls-signatures' basic scheme).
pub const SIG_DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_";
/// Hash-to-curve DST of proofs of possession (IETF POP ciphersuite).
pub const POP_DST: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Key errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Bytes are not a valid key or signature encoding.
    #[error("invalid {what}: {reason}")]
    Encoding {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A key file could not be read or written, or is unsafe.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A public key: 48-byte compressed G1 point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(BlsPublicKey);

/// A signature: 96-byte compressed G2 point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(BlsSignature);

/// A secret key with its public key.
#[derive(Clone)]
pub struct KeyPair {
    secret: PrivateKey,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public.to_hex())
    }
}

/// Decodes `b` with `decode` after checking it is `len` bytes long.
fn decode_exact<T, E: std::fmt::Display>(
    what: &'static str,
    b: &[u8],
    len: usize,
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<T, KeyError> {
    if b.len() != len {
        return Err(enc(what, format!("{} bytes, expected {len}", b.len())));
    }
    decode(b).map_err(|e| enc(what, e))
}

fn enc(what: &'static str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Encoding {
        what,
        reason: e.to_string(),
    }
}

impl PublicKey {
    /// The 48-byte compressed encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.as_bytes()
    }

    /// Lower-case hex of [`PublicKey::to_bytes`].
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// Decodes a 48-byte compressed G1 point (checked to be on the curve and in the subgroup).
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        decode_exact("public key", b, 48, |b| {
            BlsPublicKey::from_bytes(b).map(PublicKey)
        })
    }

    /// Verifies `sig` over `msg` ([`SIG_DST`]).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        self.0.verify(sig.0, msg)
    }

    /// Verifies a proof of possession of this key ([`POP_DST`]).
    pub fn verify_possession(&self, proof: &Signature) -> bool {
        let h = G2Projective::hash_to_curve(&self.to_bytes(), POP_DST, &[]);
        bls_signatures::verify(&proof.0, &[h], &[self.0])
    }

    /// Sum of public keys, for verifying an aggregate signature of several members over one
    /// message. Only sound for keys whose possession was proven (rogue-key defence).
    pub fn aggregate(keys: &[PublicKey]) -> Option<PublicKey> {
        let first = keys.first()?;
        let sum = keys[1..]
            .iter()
            .fold(G1Projective::from(first.0), |acc, k| {
                acc + G1Projective::from(k.0)
            });
        Some(PublicKey(BlsPublicKey::from(sum)))
    }
}

impl Signature {
    /// The 96-byte compressed encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.as_bytes()
    }

    /// Decodes a 96-byte compressed G2 point.
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        decode_exact("signature", b, 96, |b| {
            BlsSignature::from_bytes(b).map(Signature)
        })
    }

    /// Aggregates signatures (sum in G2).
    pub fn aggregate(sigs: &[Signature]) -> Result<Signature, KeyError> {
        let v: Vec<BlsSignature> = sigs.iter().map(|s| s.0).collect();
        bls_signatures::aggregate(&v)
            .map(Signature)
            .map_err(|e| enc("aggregate signature", e))
    }
}

impl KeyPair {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> KeyPair {
        Self::from_secret(PrivateKey::generate(&mut OsRng))
    }

    fn from_secret(secret: PrivateKey) -> KeyPair {
        KeyPair {
            public: PublicKey(secret.public_key()),
            secret,
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs `msg` ([`SIG_DST`]).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.secret.sign(msg))
    }

    /// Proof of possession: the public key's bytes signed under [`POP_DST`].
    pub fn prove_possession(&self) -> Signature {
        let h = G2Projective::hash_to_curve(&self.public.to_bytes(), POP_DST, &[]);
        let s: Scalar = self.secret.into();
        Signature(BlsSignature::from(h * s))
    }

    /// Writes the key pair as JSON (`{"public_key": hex, "secret_key": hex}`) to a new file
    /// created with permissions 0600; an existing file is never overwritten.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let ferr = |reason: String| KeyError::File {
            path: path.display().to_string(),
            reason,
        };
        let json = format!(
            "{{\"public_key\": \"{}\", \"secret_key\": \"{}\"}}\n",
            self.public.to_hex(),
            hex::encode(self.secret.as_bytes())
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| ferr(format!("cannot create key file: {e}")))?;
        f.write_all(json.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| ferr(e.to_string()))
    }

    /// Reads a key file written by [`KeyPair::write_file`]; refuses files readable by group or
    /// others, and files whose public key does not match the secret key.
    pub fn read_file(path: &Path) -> Result<KeyPair, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let ferr = |reason: String| KeyError::File {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| ferr(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ferr(format!(
                "permissions {mode:o} are too open; the secret key file must be 0600 (chmod 600)"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ferr(e.to_string()))?;
        let field = |name: &str| -> Result<Vec<u8>, KeyError> {
            let key = format!("\"{name}\"");
            let rest = text
                .split_once(&key)
                .ok_or_else(|| ferr(format!("no {name}")))?
                .1;
            let value = rest
                .split('"')
                .nth(1)
                .ok_or_else(|| ferr(format!("malformed {name}")))?;
            hex::decode(value).map_err(|e| ferr(format!("{name}: {e}")))
        };
        let secret = PrivateKey::from_bytes(&field("secret_key")?)
            .map_err(|e| ferr(format!("secret_key: {e}")))?;
        let kp = KeyPair::from_secret(secret);
        if kp.public.to_bytes() != field("public_key")? {
            return Err(ferr("public_key does not belong to secret_key".into()));
        }
        Ok(kp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_encodings() {
        let k = KeyPair::generate();
        let sig = k.sign(b"entry bytes");
        assert!(k.public().verify(b"entry bytes", &sig));
        assert!(!k.public().verify(b"entry bytez", &sig));
        assert!(!KeyPair::generate().public().verify(b"entry bytes", &sig));
        let (pb, sb) = (k.public().to_bytes(), sig.to_bytes());
        assert_eq!((pb.len(), sb.len()), (48, 96));
        assert_eq!(PublicKey::from_bytes(&pb).unwrap(), k.public());
        assert_eq!(Signature::from_bytes(&sb).unwrap(), sig);
        assert!(PublicKey::from_bytes(&[0u8; 47]).is_err());
        assert!(Signature::from_bytes(&[0xffu8; 96]).is_err());
    }

    #[test]
    fn proof_of_possession_is_domain_separated() {
        let k = KeyPair::generate();
        let pop = k.prove_possession();
        assert!(k.public().verify_possession(&pop));
        // Someone else's proof, or an ordinary signature over the key bytes, is not a proof.
        assert!(
            !k.public()
                .verify_possession(&KeyPair::generate().prove_possession())
        );
        assert!(
            !k.public()
                .verify_possession(&k.sign(&k.public().to_bytes()))
        );
    }

    #[test]
    fn aggregate_signature_of_a_majority() {
        let ks: Vec<KeyPair> = (0..3).map(|_| KeyPair::generate()).collect();
        let msg = b"admit member 7";
        let agg =
            Signature::aggregate(&ks.iter().map(|k| k.sign(msg)).collect::<Vec<_>>()).unwrap();
        let pks: Vec<PublicKey> = ks.iter().map(KeyPair::public).collect();
        assert!(PublicKey::aggregate(&pks).unwrap().verify(msg, &agg));
        assert!(!PublicKey::aggregate(&pks[..2]).unwrap().verify(msg, &agg));
        assert!(
            !PublicKey::aggregate(&pks)
                .unwrap()
                .verify(b"admit member 8", &agg)
        );
    }

    #[test]
    fn key_files_are_0600_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hospital.key");
        let k = KeyPair::generate();
        k.write_file(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(KeyPair::read_file(&p).unwrap().public(), k.public());
        assert!(k.write_file(&p).is_err(), "never overwrites");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            KeyPair::read_file(&p)
                .unwrap_err()
                .to_string()
                .contains("too open")
        );
    }
}
