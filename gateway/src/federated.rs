//! Federated rounds as both halves speak them (docs/training.md "Federated mode"): the
//! TrainingService path and limits, the bytes a round key signs, the secure aggregation
//! arithmetic (fixed point in Z/2^64, pairwise and self masks from a ChaCha20 keystream), the
//! wire encodings of models and updates, and [`LocalTrainer`], the training a gateway runs at
//! home (implemented by the trainer crate, handed to the server, so that neither this crate
//! nor the server half links libtorch). A leaf like [`crate::protocol`].

use arrow::array::RecordBatch;
use ecgfed_ledger::log::Hash32;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// gRPC path prefix of the training service.
pub const TRAINING_PATH: &str = "/ecgfed.v1.TrainingService/";
/// Largest TrainingService request a gateway decodes: a round carries the whole model (the
/// default network has about 0.6 million parameters, 2.4 MB).
pub const MAX_TRAINING_REQUEST_BYTES: usize = 64 << 20;
/// Domain-separation tag of a round key's signature.
pub const ROUND_KEY_TAG: &[u8] = b"ecgfed/v1/round-key\n";
/// Domain-separation tag of a pairwise mask seed.
pub const PAIR_SEED_TAG: &[u8] = b"ecgfed/v1/secagg-pair\n";
/// Fraction bits of the fixed-point update: a value `v` travels as `round(v · 2^24)`.
pub const FRACTION_BITS: i32 = 24;
/// Largest magnitude of a weighted update value before encoding (larger ones are clamped):
/// the sum of up to 2^6 sites stays inside i64 at [`FRACTION_BITS`].
pub const MAX_UPDATE_VALUE: f64 = (1u64 << 32) as f64;
/// Most participants in one round (see [`MAX_UPDATE_VALUE`]).
pub const MAX_PARTICIPANTS: usize = 64;
/// Fewest participants in one round: with one, its update would be the sum.
pub const MIN_PARTICIPANTS: usize = 2;

/// The bytes a round key's signature covers: `ROUND_KEY_TAG ‖ cohort ‖ "\n" ‖ u32 BE round ‖
/// u32 BE attempt ‖ site ‖ "\n" ‖ public key`.
pub fn round_key_message(
    cohort_id: &str,
    round: u32,
    attempt: u32,
    site: &str,
    public_key: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(ROUND_KEY_TAG.len() + cohort_id.len() + site.len() + 58);
    m.extend_from_slice(ROUND_KEY_TAG);
    m.extend_from_slice(cohort_id.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(&round.to_be_bytes());
    m.extend_from_slice(&attempt.to_be_bytes());
    m.extend_from_slice(site.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(public_key);
    m
}

/// The seed of the pairwise mask of sites `a` and `b` in one attempt: `SHA-256(PAIR_SEED_TAG ‖
/// cohort ‖ "\n" ‖ u32 BE round ‖ u32 BE attempt ‖ lesser site ‖ "\n" ‖ greater site ‖ "\n" ‖
/// shared point)`, the shared point being the 48-byte compressed Diffie–Hellman point of their
/// round keys. Both sites compute the same seed, whichever way round they name each other.
pub fn pair_seed(
    shared_point: &[u8; 48],
    cohort_id: &str,
    round: u32,
    attempt: u32,
    a: &str,
    b: &str,
) -> [u8; 32] {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(PAIR_SEED_TAG);
    h.update(cohort_id.as_bytes());
    h.update(b"\n");
    h.update(round.to_be_bytes());
    h.update(attempt.to_be_bytes());
    h.update(lo.as_bytes());
    h.update(b"\n");
    h.update(hi.as_bytes());
    h.update(b"\n");
    h.update(shared_point);
    h.finalize().into()
}

/// The mask of `seed`: the ChaCha20 keystream (key = seed, nonce 0, block counter from 0) read
/// as little-endian u64 words, `n` of them.
pub fn mask_words(seed: &[u8; 32], n: usize) -> impl Iterator<Item = u64> {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    (0..n).map(move |_| rng.next_u64())
}

/// `weight · values` in fixed point: each `round(clamp(weight · v) · 2^FRACTION_BITS)` as a
/// two's-complement u64 (non-finite values count as 0).
pub fn to_fixed(values: &[f32], weight: f64) -> Vec<u64> {
    let scale = 2f64.powi(FRACTION_BITS);
    values
        .iter()
        .map(|&v| {
            let w = weight * v as f64;
            let w = if w.is_finite() {
                w.clamp(-MAX_UPDATE_VALUE, MAX_UPDATE_VALUE)
            } else {
                0.0
            };
            (w * scale).round() as i64 as u64
        })
        .collect()
}

/// A fixed-point sum back as reals: each word as i64 divided by 2^FRACTION_BITS.
pub fn from_fixed(sum: &[u64]) -> Vec<f64> {
    let scale = 2f64.powi(-FRACTION_BITS);
    sum.iter().map(|&w| w as i64 as f64 * scale).collect()
}

/// Masks a site's fixed-point update in place (mod 2^64): adds its self mask and, for each
/// other participant, adds the pair's mask where this site's id is the lesser and subtracts it
/// where it is the greater, so that the pairwise masks cancel in the participants' sum.
pub fn apply_masks(
    update: &mut [u64],
    own_site: &str,
    self_seed: &[u8; 32],
    pairs: &[(String, [u8; 32])],
) {
    let n = update.len();
    for (u, m) in update.iter_mut().zip(mask_words(self_seed, n)) {
        *u = u.wrapping_add(m);
    }
    for (peer, seed) in pairs {
        let add = own_site < peer.as_str();
        for (u, m) in update.iter_mut().zip(mask_words(seed, n)) {
            *u = if add {
                u.wrapping_add(m)
            } else {
                u.wrapping_sub(m)
            };
        }
    }
}

/// Adds masked updates word by word (mod 2^64) into `sum`.
pub fn add_into(sum: &mut [u64], update: &[u64]) {
    for (s, u) in sum.iter_mut().zip(update) {
        *s = s.wrapping_add(*u);
    }
}

/// Removes the participants' self masks from the sum of their masked updates (mod 2^64),
/// leaving the sum of their fixed-point updates.
pub fn remove_self_masks(sum: &mut [u64], self_seeds: &[[u8; 32]]) {
    let n = sum.len();
    for seed in self_seeds {
        for (s, m) in sum.iter_mut().zip(mask_words(seed, n)) {
            *s = s.wrapping_sub(m);
        }
    }
}

/// Words as bytes, u64 little-endian each.
pub fn words_to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Bytes as u64 little-endian words (`None` unless the length is a multiple of 8).
pub fn bytes_to_words(bytes: &[u8]) -> Option<Vec<u64>> {
    bytes.len().is_multiple_of(8).then(|| {
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    })
}

/// Parameters as bytes, f32 little-endian each (the `model` of a round).
pub fn params_to_bytes(params: &[f32]) -> Vec<u8> {
    params.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Bytes as f32 little-endian parameters (`None` unless the length is a multiple of 4).
pub fn bytes_to_params(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Rows a gateway hands its local trainer: one slice's rows as served (the columns and
/// metadata a DoGet would carry), to be verified against `slice_root` before use.
#[derive(Debug, Clone)]
pub struct SliceRows {
    /// Cohort.
    pub cohort_id: String,
    /// This site.
    pub site: String,
    /// The slice's served batches.
    pub batches: Vec<RecordBatch>,
    /// The slice root on the ledger.
    pub slice_root: Hash32,
    /// Leaves of the slice.
    pub slice_size: u64,
    /// Leaves erased since the reservation (not among the batches).
    pub erased: u64,
    /// The gateway's age-band edges (what a row's age band is).
    pub age_edges: Vec<u32>,
    /// The gateway's k: scores of a group of fewer distinct patients are not answered.
    pub k: u64,
    /// The hospital's floor on the DP noise multiplier of rounds (0: DP not required).
    pub min_noise_multiplier: f64,
    /// The hospital's privacy budget for the cohort (0: none; docs/training.md "Differential
    /// privacy").
    pub max_epsilon: f64,
    /// The δ of that budget.
    pub epsilon_delta: f64,
    /// The DP-SGD of every round this site trained for the cohort so far (its key store's
    /// account, every attempt included).
    pub dp_spent: Vec<DpSpent>,
    /// The cohort spec file's bytes (its SHA-256 is the cohort's `spec_sha256`).
    pub spec: Vec<u8>,
}

/// One round's DP-SGD at a site, as its gateway accounts it against the budget.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DpSpent {
    /// Poisson sampling rate q.
    pub sample_rate: f64,
    /// Noise multiplier σ.
    pub noise_multiplier: f64,
    /// Steps.
    pub steps: u64,
}

impl DpSpent {
    /// The round's DP-SGD from its `training_json` (`dp.sample_rate`, `dp.noise_multiplier`,
    /// `dp.steps`); none without DP.
    pub fn of_training(training: &serde_json::Value) -> Option<DpSpent> {
        let dp = training.get("dp")?;
        Some(DpSpent {
            sample_rate: dp.get("sample_rate")?.as_f64()?,
            noise_multiplier: dp.get("noise_multiplier")?.as_f64()?,
            steps: dp.get("steps")?.as_u64()?,
        })
    }
}

/// One round of local training asked of a gateway.
#[derive(Debug, Clone)]
pub struct LocalJob {
    /// The slice's rows and the spec.
    pub rows: SliceRows,
    /// Round, from 1.
    pub round: u32,
    /// The global model's parameters.
    pub model: Vec<f32>,
    /// The cohort's allocation (its CohortCreated cells): the class weights every site uses
    /// come from the rows per label of the training sites.
    pub allocation: Vec<ecgfed_proto::v1::AllocationCell>,
    /// The round's participants (sites of the cohort, checked by the gateway): the trainer
    /// refuses held-out sites among them and fewer than the spec's `min_sites`.
    pub participants: Vec<String>,
}

/// What local training produced.
#[derive(Debug, Clone)]
pub struct LocalUpdate {
    /// Local parameters minus global parameters.
    pub delta: Vec<f32>,
    /// Rows trained on (the update's FedAvg weight).
    pub rows: u64,
    /// Mean training loss; NaN when withheld (under differential privacy).
    pub train_loss: f64,
    /// The local training as run (recorded as the entry's `training_json`).
    pub training: serde_json::Value,
}

/// A model's scores on a site's evaluation rows.
#[derive(Debug, Clone)]
pub struct LocalScores {
    /// Rows evaluated.
    pub rows: u64,
    /// The scores as JSON (per window and per record).
    pub scores: serde_json::Value,
}

/// Which rows of a site an evaluation scores (a held-out site's rows count as its test part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalPart {
    /// The validation part (rounds are chosen on it).
    Validation,
    /// The test part, or a held-out site's rows: scored once, at the end, for one model only
    /// (the gateway refuses another model's).
    Test,
}

impl EvalPart {
    /// The part an `EvaluateRequest.part` names ("" is validation).
    pub fn parse(s: &str) -> Option<EvalPart> {
        match s {
            "" | "validation" => Some(EvalPart::Validation),
            "test" => Some(EvalPart::Test),
            _ => None,
        }
    }
}

/// Why a gateway's local training did not produce an update.
#[derive(Debug, thiserror::Error)]
pub enum LocalTrainingError {
    /// The request cannot be trained as asked (a model of the wrong size, a spec this build
    /// cannot read): the caller's fault.
    #[error("{0}")]
    Invalid(String),
    /// A row does not verify against the slice root: the site's store or serving is wrong.
    #[error("row verification against the slice root failed")]
    Verification(#[source] crate::error::GatewayError),
    /// Training failed at the site.
    #[error("local training failed")]
    Failed(#[source] crate::error::Source),
}

/// The training a gateway runs at home (the trainer crate implements it with libtorch).
pub trait LocalTrainer: Send + Sync {
    /// Verifies the rows, trains the global model on the site's training part for the spec's
    /// local epochs or steps, and returns the change of the parameters.
    fn train(&self, job: LocalJob) -> Result<LocalUpdate, LocalTrainingError>;
    /// Verifies the rows and scores `model` on the site's evaluation rows: the `part` of a
    /// training site, every row of a held-out one.
    fn evaluate(
        &self,
        rows: SliceRows,
        model: Vec<f32>,
        part: EvalPart,
    ) -> Result<LocalScores, LocalTrainingError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn seed(b: u8) -> [u8; 32] {
        [b; 32]
    }

    #[test]
    fn pairwise_masks_cancel_exactly_in_the_sum() {
        let sites = ["a", "b", "c", "d"];
        let n = 1000;
        let mut rng = rand::thread_rng();
        let updates: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..n).map(|_| rng.gen_range(-0.5f32..0.5)).collect())
            .collect();
        let weights = [10.0, 250.0, 3.0, 77.0];
        let pair = |i: usize, j: usize| seed(10 + (i.min(j) * 4 + i.max(j)) as u8);
        let mut sum = vec![0u64; n];
        let mut plain = vec![0u64; n];
        for (i, site) in sites.iter().enumerate() {
            let mut q = to_fixed(&updates[i], weights[i]);
            add_into(&mut plain, &q);
            let pairs: Vec<(String, [u8; 32])> = (0..4)
                .filter(|&j| j != i)
                .map(|j| (sites[j].to_string(), pair(i, j)))
                .collect();
            apply_masks(&mut q, site, &seed(i as u8), &pairs);
            add_into(&mut sum, &q);
        }
        let seeds: Vec<[u8; 32]> = (0..4).map(|i| seed(i as u8)).collect();
        remove_self_masks(&mut sum, &seeds);
        // Exact in fixed point: the unmasked sum is the sum of the plain fixed-point updates.
        assert_eq!(sum, plain);
        // And within rounding of the real weighted sum: half a unit per site.
        let real = from_fixed(&sum);
        for k in 0..n {
            let want: f64 = (0..4).map(|i| weights[i] * updates[i][k] as f64).sum();
            assert!((real[k] - want).abs() <= 4.0 * 0.5 * 2f64.powi(-FRACTION_BITS) + 1e-9);
        }
    }

    /// Pearson correlation of two series.
    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va.sqrt() * vb.sqrt())
    }

    /// The coordinator's whole view of a round with real key agreement (three sites, fresh
    /// BLS12-381 G1 keys, signed round keys checked as a gateway checks them): the masked
    /// updates and, after every update arrived, the self-mask seeds. One site's masked update,
    /// even with its self mask removed, is uncorrelated with its true update (and its words are
    /// uniform); the sum less the self masks is the exact sum of the fixed-point updates.
    #[test]
    fn the_coordinator_sees_noise_per_site_and_the_exact_sum() {
        use ecgfed_ledger::keys::{AgreementKey, KeyPair};
        let sites = ["site-a", "site-b", "site-c"];
        let n = 20_000;
        let members: Vec<KeyPair> = sites.iter().map(|_| KeyPair::generate()).collect();
        let keys: Vec<AgreementKey> = sites.iter().map(|_| AgreementKey::generate()).collect();
        let (cohort, round, attempt) = ("c1", 3, 1);
        // Round keys as OpenRound answers them, each checked against its member's key.
        for (i, site) in sites.iter().enumerate() {
            let msg = round_key_message(cohort, round, attempt, site, &keys[i].public());
            let sig = members[i].sign(&msg);
            assert!(members[i].public().verify(&msg, &sig));
            let other = round_key_message(cohort, round, attempt + 1, site, &keys[i].public());
            assert!(
                !members[i].public().verify(&other, &sig),
                "bound to its attempt"
            );
        }
        let mut rng = rand::thread_rng();
        let updates: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..n).map(|_| rng.gen_range(-0.01f32..0.01)).collect())
            .collect();
        let rows = [120.0, 45.0, 300.0];
        let mut self_seeds = Vec::new();
        let mut seen = Vec::new();
        let mut plain = vec![0u64; n];
        for i in 0..3 {
            let pairs: Vec<(String, [u8; 32])> = (0..3)
                .filter(|&j| j != i)
                .map(|j| {
                    let shared = keys[i].agree(&keys[j].public()).unwrap();
                    // Both ends of a pair derive the same point.
                    assert_eq!(shared, keys[j].agree(&keys[i].public()).unwrap());
                    let seed = pair_seed(&shared, cohort, round, attempt, sites[i], sites[j]);
                    (sites[j].to_string(), seed)
                })
                .collect();
            let mut self_seed = [0u8; 32];
            rng.fill(&mut self_seed);
            let mut q = to_fixed(&updates[i], rows[i]);
            add_into(&mut plain, &q);
            apply_masks(&mut q, sites[i], &self_seed, &pairs);
            seen.push(q);
            self_seeds.push(self_seed);
        }
        // One site's view, as reals, against its true update.
        let truth: Vec<f64> = updates[1].iter().map(|&v| v as f64 * rows[1]).collect();
        let masked = from_fixed(&seen[1]);
        assert!(correlation(&masked, &truth).abs() < 0.05);
        let mut less_self = seen[1].clone();
        remove_self_masks(&mut less_self, &self_seeds[1..2]);
        assert!(correlation(&from_fixed(&less_self), &truth).abs() < 0.05);
        // Its words are uniform: each bit set about half the time.
        for bit in [0, 31, 63] {
            let ones = seen[1].iter().filter(|w| (*w >> bit) & 1 == 1).count();
            assert!(
                (ones as f64 / n as f64 - 0.5).abs() < 0.02,
                "bit {bit}: {ones}"
            );
        }
        // The sum less every self mask is the sum of the plain fixed-point updates, exactly.
        let mut sum = vec![0u64; n];
        for q in &seen {
            add_into(&mut sum, q);
        }
        remove_self_masks(&mut sum, &self_seeds);
        assert_eq!(sum, plain);
        // Without one self mask nothing useful remains.
        let mut partial = vec![0u64; n];
        for q in &seen {
            add_into(&mut partial, q);
        }
        remove_self_masks(&mut partial, &self_seeds[..2]);
        let all: Vec<f64> = from_fixed(&plain);
        assert!(correlation(&from_fixed(&partial), &all).abs() < 0.05);
        // A key that is not a point is refused.
        assert!(keys[0].agree(&[0u8; 48]).is_err());
        assert!(keys[0].agree(&[1u8; 47]).is_err());
    }

    #[test]
    fn fixed_point_round_trips_negative_values_and_clamps() {
        let q = to_fixed(&[-1.5, 0.0, 2.25, f32::NAN, f32::INFINITY], 1.0);
        assert_eq!(from_fixed(&q)[..3], [-1.5, 0.0, 2.25]);
        assert_eq!(from_fixed(&q)[3], 0.0);
        let big = to_fixed(&[1e30], 1.0);
        assert_eq!(from_fixed(&big)[0], MAX_UPDATE_VALUE);
    }

    #[test]
    fn pair_seed_is_symmetric_and_bound_to_its_context() {
        let p = [7u8; 48];
        let s = pair_seed(&p, "c", 1, 1, "a", "b");
        assert_eq!(s, pair_seed(&p, "c", 1, 1, "b", "a"));
        assert_ne!(s, pair_seed(&p, "c", 1, 2, "a", "b"));
        assert_ne!(s, pair_seed(&p, "c", 2, 1, "a", "b"));
        assert_ne!(s, pair_seed(&p, "d", 1, 1, "a", "b"));
        assert_ne!(s, pair_seed(&[8u8; 48], "c", 1, 1, "a", "b"));
    }

    #[test]
    fn encodings_round_trip_and_refuse_ragged_bytes() {
        let w = vec![0, 1, u64::MAX, 1 << 63];
        assert_eq!(bytes_to_words(&words_to_bytes(&w)), Some(w));
        assert_eq!(bytes_to_words(&[0u8; 9]), None);
        let p = vec![0.5f32, -3.0, f32::MIN_POSITIVE];
        assert_eq!(bytes_to_params(&params_to_bytes(&p)), Some(p));
        assert_eq!(bytes_to_params(&[0u8; 5]), None);
    }

    #[test]
    fn mask_words_are_the_chacha20_keystream() {
        // RFC 8439 section 2.3.2's block function with an all-zero key and nonce (test vector
        // of RFC 7539 appendix A.1, block counter 0): 76 b8 e0 ad a0 f1 3d 90 ...
        let w: Vec<u64> = mask_words(&[0u8; 32], 2).collect();
        assert_eq!(
            w[0].to_le_bytes(),
            [0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90]
        );
        assert_eq!(
            w[1].to_le_bytes(),
            [0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86, 0xbd, 0x28]
        );
    }
}
