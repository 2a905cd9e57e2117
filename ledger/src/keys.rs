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
use blstrs::{Bls12, G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Scalar};
use group::Group;
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

/// A public key: 48-byte compressed G1 point (its affine form and encoding are kept, since
/// batch verification needs them for every signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: BlsPublicKey,
    affine: G1Affine,
    bytes: [u8; 48],
}

impl From<BlsPublicKey> for PublicKey {
    fn from(key: BlsPublicKey) -> Self {
        let affine = key.as_affine();
        PublicKey {
            key,
            affine,
            bytes: affine.to_compressed(),
        }
    }
}

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
        self.bytes.to_vec()
    }

    /// Lower-case hex of [`PublicKey::to_bytes`].
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// Decodes a 48-byte compressed G1 point (checked to be on the curve and in the subgroup).
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        decode_exact("public key", b, 48, |b| {
            BlsPublicKey::from_bytes(b).map(PublicKey::from)
        })
    }

    /// Verifies `sig` over `msg` ([`SIG_DST`]).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        self.key.verify(sig.0, msg)
    }

    /// Verifies a proof of possession of this key ([`POP_DST`]).
    pub fn verify_possession(&self, proof: &Signature) -> bool {
        let h = G2Projective::hash_to_curve(&self.to_bytes(), POP_DST, &[]);
        bls_signatures::verify(&proof.0, &[h], &[self.key])
    }

    /// Sum of public keys, for verifying an aggregate signature of several members over one
    /// message. Only sound for keys whose possession was proven (rogue-key defence).
    pub fn aggregate(keys: &[PublicKey]) -> Option<PublicKey> {
        let first = keys.first()?;
        let sum = keys[1..]
            .iter()
            .fold(G1Projective::from(first.key), |acc, k| {
                acc + G1Projective::from(k.key)
            });
        Some(PublicKey::from(BlsPublicKey::from(sum)))
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

/// An ephemeral key-agreement key: Diffie–Hellman in G1 of BLS12-381 (secret scalar `s`,
/// public `s·G`, 48-byte compressed). Federated rounds make one per site and attempt; the
/// secret never leaves memory and is zeroed when dropped.
pub struct AgreementKey {
    secret: Scalar,
    public: [u8; 48],
}

impl std::fmt::Debug for AgreementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgreementKey")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl AgreementKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> AgreementKey {
        use group::ff::Field;
        let secret = Scalar::random(&mut OsRng);
        let public = G1Affine::from(G1Projective::generator() * secret).to_compressed();
        AgreementKey { secret, public }
    }

    /// The public key: compressed G1 point, 48 bytes.
    pub fn public(&self) -> [u8; 48] {
        self.public
    }

    /// The shared point `s·P` (compressed, 48 bytes) with a peer's public key `P`, which must
    /// be a valid compressed G1 point other than the identity.
    pub fn agree(&self, peer: &[u8]) -> Result<[u8; 48], KeyError> {
        let bytes: [u8; 48] = peer.try_into().map_err(|_| KeyError::Encoding {
            what: "agreement key",
            reason: format!("{} bytes, expected 48", peer.len()),
        })?;
        let point =
            Option::<G1Affine>::from(G1Affine::from_compressed(&bytes)).ok_or_else(|| {
                KeyError::Encoding {
                    what: "agreement key",
                    reason: "not a compressed G1 point of the prime-order subgroup".into(),
                }
            })?;
        if bool::from(group::prime::PrimeCurveAffine::is_identity(&point)) {
            return Err(KeyError::Encoding {
                what: "agreement key",
                reason: "the identity point".into(),
            });
        }
        Ok(G1Affine::from(G1Projective::from(point) * self.secret).to_compressed())
    }
}

/// Whether `bytes` is a compressed G1 point of the prime-order subgroup other than the
/// identity (what an agreement key must be).
pub fn is_agreement_key(bytes: &[u8]) -> bool {
    <[u8; 48]>::try_from(bytes).is_ok_and(|b| {
        Option::<G1Affine>::from(G1Affine::from_compressed(&b))
            .is_some_and(|p| !bool::from(group::prime::PrimeCurveAffine::is_identity(&p)))
    })
}

impl Drop for AgreementKey {
    fn drop(&mut self) {
        self.secret = Scalar::from(0u64);
    }
}

impl KeyPair {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> KeyPair {
        Self::from_secret(PrivateKey::generate(&mut OsRng))
    }

    fn from_secret(secret: PrivateKey) -> KeyPair {
        KeyPair {
            public: PublicKey::from(secret.public_key()),
            secret,
        }
    }

    /// The key pair of a 32-byte secret scalar (little-endian, as key files hold it).
    pub fn from_secret_bytes(secret: &[u8]) -> Result<KeyPair, KeyError> {
        decode_exact("secret key", secret, 32, PrivateKey::from_bytes).map(KeyPair::from_secret)
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
        let ferr = |reason: String| KeyError::File {
            path: path.display().to_string(),
            reason,
        };
        check_secret_file(path)?;
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

/// One signature of a batch: the signer's key, the message, the signature ([`SIG_DST`]).
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The signer's public key.
    pub key: &'a PublicKey,
    /// The signed message.
    pub msg: &'a [u8],
    /// The signature.
    pub sig: &'a Signature,
}

/// A signature with its message already hashed to G2: the expensive, key-independent half
/// of verification (hash-to-curve), which can be done ahead of time and in parallel.
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    hash: G2Projective,
    sig: G2Projective,
}

impl Prepared {
    /// Hashes `msg` ([`SIG_DST`]) next to `sig`.
    pub fn new(msg: &[u8], sig: &Signature) -> Prepared {
        Prepared {
            hash: G2Projective::hash_to_curve(msg, SIG_DST, &[]),
            sig: G2Projective::from(sig.0),
        }
    }

    /// Verifies this one signature under `key`: e(g1, σ) = e(pk, H(m)).
    pub fn verify(&self, key: &PublicKey) -> bool {
        use group::prime::PrimeCurveAffine;
        use pairing::{MillerLoopResult, MultiMillerLoop};
        if bool::from(key.affine.is_identity()) {
            return false;
        }
        let (g, pk) = (-G1Affine::generator(), key.affine);
        let (s, h): (G2Prepared, G2Prepared) = (
            G2Affine::from(self.sig).into(),
            G2Affine::from(self.hash).into(),
        );
        bool::from(
            Bls12::multi_miller_loop(&[(&g, &s), (&pk, &h)])
                .final_exponentiation()
                .is_identity(),
        )
    }
}

/// Random-linear-combination batch verification of many signatures, grouped by signer.
///
/// With fresh random 64-bit scalars r_i, checks
/// e(−g1, Σ r_i·σ_i) · Π_signers e(pk_j, Σ_{i∈j} r_i·H(m_i)) = 1, which costs one hash-to-curve
/// per message, two 64-bit multi-scalar multiplications and one Miller loop per distinct signer
/// (instead of two pairings per signature). A batch with any invalid signature fails except
/// with probability about 2^-64; callers then verify one by one to find the culprits.
/// Hashing is spread across cores (rayon).
pub fn verify_batch(items: &[BatchItem<'_>]) -> bool {
    use rayon::prelude::*;
    let prepared: Vec<Prepared> = items
        .par_iter()
        .map(|it| Prepared::new(it.msg, it.sig))
        .collect();
    let refs: Vec<(&PublicKey, &Prepared)> = items.iter().map(|it| it.key).zip(&prepared).collect();
    verify_prepared(&refs)
}

/// [`verify_batch`] over signatures whose messages are already hashed ([`Prepared`]).
pub fn verify_prepared(items: &[(&PublicKey, &Prepared)]) -> bool {
    use group::prime::PrimeCurveAffine;
    use pairing::{MillerLoopResult, MultiMillerLoop};
    use rand::RngCore;
    use rayon::prelude::*;

    if items.is_empty() {
        return true;
    }
    let mut rng = rand::thread_rng();
    let scalars: Vec<u64> = items.iter().map(|_| rng.next_u64() | 1).collect();
    let sigs: Vec<G2Projective> = items.iter().map(|(_, p)| p.sig).collect();
    let mut groups: std::collections::HashMap<[u8; 48], (G1Affine, Vec<usize>)> =
        std::collections::HashMap::new();
    for (i, (key, _)) in items.iter().enumerate() {
        groups
            .entry(key.bytes)
            .or_insert_with(|| (key.affine, Vec::new()))
            .1
            .push(i);
    }
    if groups.values().any(|(pk, _)| bool::from(pk.is_identity())) {
        return false;
    }
    let (sig_sum, group_terms): (G2Projective, Vec<(G1Affine, G2Prepared)>) = rayon::join(
        || msm64(&sigs, &scalars),
        || {
            groups
                .into_par_iter()
                .map(|(_, (pk, idx))| {
                    let pts: Vec<G2Projective> = idx.iter().map(|&i| items[i].1.hash).collect();
                    let sc: Vec<u64> = idx.iter().map(|&i| scalars[i]).collect();
                    (pk, G2Affine::from(msm64(&pts, &sc)).into())
                })
                .collect()
        },
    );
    let mut terms: Vec<(G1Affine, G2Prepared)> =
        vec![(-G1Affine::generator(), G2Affine::from(sig_sum).into())];
    terms.extend(group_terms);
    let refs: Vec<(&G1Affine, &G2Prepared)> = terms.iter().map(|(a, b)| (a, b)).collect();
    bool::from(
        Bls12::multi_miller_loop(&refs)
            .final_exponentiation()
            .is_identity(),
    )
}

/// Σ scalars_i · points_i with 64-bit scalars: blst's single-threaded Pippenger with a 64-bit
/// width (blstrs' `multi_exp` always uses 255 bits, four times the work for our randomisers,
/// and blst's own multi-threaded wrapper waits on a thread pool of its own, which stalls under
/// load; callers parallelise across signers instead).
fn msm64(points: &[G2Projective], scalars: &[u64]) -> G2Projective {
    let n = points.len().min(scalars.len());
    if n == 0 {
        return G2Projective::identity();
    }
    let raw: Vec<blst::blst_p2> = points[..n].iter().map(|p| *p.as_ref()).collect();
    let bytes: Vec<u8> = scalars[..n].iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut affine = vec![blst::blst_p2_affine::default(); n];
    let mut sum = blst::blst_p2::default();
    // SAFETY: the blst batch functions take NULL-terminated arrays of pointers to contiguous
    // inputs: `raw` (n projective points), `affine` (n outputs), `bytes` (n little-endian
    // 8-byte scalars, read as 64 bits each); the scratch buffer has the size blst asks for.
    unsafe {
        let p: [*const blst::blst_p2; 2] = [raw.as_ptr(), std::ptr::null()];
        blst::blst_p2s_to_affine(affine.as_mut_ptr(), p.as_ptr(), n);
        let pa: [*const blst::blst_p2_affine; 2] = [affine.as_ptr(), std::ptr::null()];
        let sa: [*const u8; 2] = [bytes.as_ptr(), std::ptr::null()];
        let mut scratch = vec![0u64; blst::blst_p2s_mult_pippenger_scratch_sizeof(n) / 8 + 1];
        blst::blst_p2s_mult_pippenger(
            &mut sum,
            pa.as_ptr(),
            n,
            sa.as_ptr(),
            64,
            scratch.as_mut_ptr(),
        );
    }
    let mut ser = [0u8; 192];
    // SAFETY: blst_p2_serialize writes exactly 192 bytes (uncompressed affine form) of a valid
    // point into a 192-byte buffer.
    unsafe { blst::blst_p2_serialize(ser.as_mut_ptr(), &sum) };
    G2Affine::from_uncompressed_unchecked(&ser)
        .map(G2Projective::from)
        .unwrap_or_else(G2Projective::identity)
}

/// Refuses a secret file (a BLS key, a TLS private key) that is not a regular file or that its
/// group or others may read or write: it must be mode 0600 (or stricter).
pub fn check_secret_file(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let ferr = |reason: String| KeyError::File {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| ferr(e.to_string()))?;
    if !meta.is_file() {
        return Err(ferr("not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ferr(format!(
            "permissions {mode:o} are too open; the secret key file must be 0600 (chmod 600)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_verification_accepts_valid_batches_and_rejects_any_bad_signature() {
        let keys: Vec<KeyPair> = (0..3).map(|_| KeyPair::generate()).collect();
        let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 5 + i as usize]).collect();
        let sigs: Vec<Signature> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| keys[i % 3].sign(m))
            .collect();
        let pks: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let items = |sigs: &[Signature]| -> Vec<(usize, usize)> {
            (0..sigs.len()).map(|i| (i, i % 3)).collect()
        };
        let batch = |sigs: &[Signature], key_of: &dyn Fn(usize) -> usize| {
            let v: Vec<BatchItem> = items(sigs)
                .into_iter()
                .map(|(i, _)| BatchItem {
                    key: &pks[key_of(i)],
                    msg: &msgs[i],
                    sig: &sigs[i],
                })
                .collect();
            verify_batch(&v)
        };
        assert!(batch(&sigs, &|i| i % 3));
        let p = Prepared::new(&msgs[4], &sigs[4]);
        assert!(p.verify(&pks[1]));
        assert!(!p.verify(&pks[0]));
        assert!(batch(&sigs[..1], &|i| i % 3), "a batch of one");
        assert!(verify_batch(&[]));
        // One signature under the wrong key, or two swapped signatures, fail the batch.
        assert!(!batch(&sigs, &|i| if i == 7 { 0 } else { i % 3 }));
        let mut swapped = sigs.clone();
        swapped.swap(3, 6); // same signer (index 3 and 6 are both key 0)
        assert!(!batch(&swapped, &|i| i % 3));
        // Two invalid signatures that cancel in a plain sum are caught by the randomisers.
        let delta = keys[0].sign(b"delta");
        let mut forged = sigs.clone();
        forged[0] = Signature::aggregate(&[sigs[0], delta]).unwrap();
        let neg = Signature(BlsSignature::from(-G2Projective::from(delta.0)));
        forged[3] = Signature::aggregate(&[sigs[3], neg]).unwrap();
        assert_eq!(
            Signature::aggregate(&forged).unwrap(),
            Signature::aggregate(&sigs).unwrap()
        );
        assert!(!batch(&forged, &|i| i % 3));
    }

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
