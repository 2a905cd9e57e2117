//! Erased-leaf tokens (docs/ledger.md "What a reader learns", docs/flight.md "Erasure"): how a
//! `RecordsErased` entry tells a slice's grantee, and an auditor holding the hospital's
//! disclosure, which slice leaves are gone, while telling everyone else nothing about which
//! slices (and so which cohorts) held the patient.

use sha2::{Digest, Sha256};

/// Tag of a real token.
pub const LEAF_TAG: &[u8] = b"ecgfed/v1/erased-leaf\n";
/// Tag of a padding token.
pub const PAD_TAG: &[u8] = b"ecgfed/v1/erased-pad\n";
/// Fewest tokens an entry lists (padding included).
pub const MIN_TOKENS: usize = 8;

/// The token of an erased slice leaf: SHA-256(LEAF_TAG ‖ leaf salt ‖ leaf commitment). The
/// leaf commitment is public (the slice entry lists it); the salt is known to the gateway and
/// to whom it served the row, so only they can compute the token.
pub fn leaf_token(salt: &[u8; 32], leaf: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LEAF_TAG);
    h.update(salt);
    h.update(leaf);
    h.finalize().into()
}

/// Padding token `i`: SHA-256(PAD_TAG ‖ pad key ‖ i as u32 big-endian). The pad key is random
/// per erasure and given in the disclosure, so an auditor can tell padding from real tokens.
pub fn pad_token(pad_key: &[u8; 32], i: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PAD_TAG);
    h.update(pad_key);
    h.update(i.to_be_bytes());
    h.finalize().into()
}

/// How many tokens an erasure of `real` leaves lists: the next power of two, at least
/// [`MIN_TOKENS`] (a reader learns the number of leaves only to within a factor of two).
pub fn padded_len(real: usize) -> usize {
    real.max(MIN_TOKENS).next_power_of_two()
}

/// The token list of an erasure: `real` tokens and pad tokens 0, 1, … up to
/// [`padded_len`], sorted ascending.
pub fn token_list(real: impl IntoIterator<Item = [u8; 32]>, pad_key: &[u8; 32]) -> Vec<[u8; 32]> {
    let mut v: Vec<[u8; 32]> = real.into_iter().collect();
    let n = padded_len(v.len());
    let pads = (n - v.len()) as u32;
    v.extend((0..pads).map(|i| pad_token(pad_key, i)));
    v.sort_unstable();
    v
}

/// Value of [`Disclosure::format`].
pub const DISCLOSURE_FORMAT: &str = "ecgfed-erasure-disclosure-v1";

/// An erasure disclosure: what the hospital that erased a patient can hand to an auditor so
/// that the auditor finds every slice (and so every cohort and model) that held the patient's
/// rows, and checks that none is left out. JSON; hashes and keys in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disclosure {
    /// Always [`DISCLOSURE_FORMAT`].
    pub format: String,
    /// The erasing site.
    pub site: String,
    /// The dataset the rows were erased from.
    pub dataset_id: String,
    /// The patient's dataset commitments, as the `RecordsErased` entry lists them.
    pub commitments: Vec<String>,
    /// The pad key of the entry's padding tokens.
    pub pad_key: String,
    /// Every slice of the dataset that held the patient's rows, with those rows' leaves.
    pub slices: Vec<DisclosedSlice>,
}

/// A slice's leaves in a [`Disclosure`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosedSlice {
    /// The slice id (its `CohortSliceCommitted` entry lists the leaf commitments).
    pub slice_id: String,
    /// The erased leaves.
    pub leaves: Vec<DisclosedLeaf>,
}

/// One erased leaf in a [`Disclosure`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosedLeaf {
    /// Leaf index in the slice.
    pub index: u64,
    /// The leaf's salt.
    pub salt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_as_documented_and_padded_to_a_power_of_two() {
        let (salt, leaf) = ([1u8; 32], [2u8; 32]);
        let mut m = b"ecgfed/v1/erased-leaf\n".to_vec();
        m.extend_from_slice(&salt);
        m.extend_from_slice(&leaf);
        assert_eq!(
            leaf_token(&salt, &leaf),
            <[u8; 32]>::from(Sha256::digest(&m))
        );
        let mut m = b"ecgfed/v1/erased-pad\n".to_vec();
        m.extend_from_slice(&[3u8; 32]);
        m.extend_from_slice(&[0, 0, 0, 5]);
        assert_eq!(
            pad_token(&[3u8; 32], 5),
            <[u8; 32]>::from(Sha256::digest(&m))
        );
        assert_eq!([0, 1, 8, 9, 16, 17].map(padded_len), [8, 8, 8, 16, 16, 32]);
        let v = token_list([[9u8; 32], [0u8; 32]], &[3u8; 32]);
        assert_eq!(v.len(), 8);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        assert!(v.contains(&[9u8; 32]) && v.contains(&pad_token(&[3u8; 32], 5)));
        assert!(!v.contains(&pad_token(&[3u8; 32], 6)));
    }
}
