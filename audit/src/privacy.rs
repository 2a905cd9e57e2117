//! The differential-privacy accountant of federated training (docs/training.md
//! "Differential privacy"): Rényi DP of the Poisson-subsampled Gaussian mechanism at integer
//! orders (Mironov, Talwar and Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism", §3.3), composed over steps by addition, and converted to (ε, δ) with the bound
//! of Balle et al. 2020 (as Opacus's RDP accountant does). A site reports its ε with every
//! round; an auditor recomputes it from the rounds on the ledger alone.

use serde::{Deserialize, Serialize};

/// The Rényi orders the accountant evaluates: 2 to 256.
pub const ORDERS: std::ops::RangeInclusive<u32> = 2..=256;

/// One run of DP-SGD steps: `steps` steps, each over a Poisson sample of rate `sample_rate`,
/// with Gaussian noise of standard deviation `noise_multiplier` × the clipping norm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpSteps {
    /// Sampling rate q (expected batch size / rows).
    pub sample_rate: f64,
    /// Noise multiplier σ.
    pub noise_multiplier: f64,
    /// Steps taken.
    pub steps: u64,
}

/// log(exp(a) + exp(b)) without overflow.
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// ln C(n, k).
fn ln_binomial(n: u32, k: u32) -> f64 {
    let lg = |x: u32| (1..=x).map(|i| (i as f64).ln()).sum::<f64>();
    lg(n) - lg(k) - lg(n - k)
}

/// RDP of one step of the subsampled Gaussian mechanism at integer order `alpha` ≥ 2:
/// `ln A_α / (α − 1)` with `A_α = Σ_k C(α, k) (1 − q)^(α−k) q^k exp((k² − k) / (2σ²))`.
pub fn rdp_step(q: f64, sigma: f64, alpha: u32) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if sigma <= 0.0 {
        return f64::INFINITY;
    }
    if q >= 1.0 {
        return alpha as f64 / (2.0 * sigma * sigma);
    }
    let mut log_a = f64::NEG_INFINITY;
    for k in 0..=alpha {
        let term = ln_binomial(alpha, k)
            + (alpha - k) as f64 * (1.0 - q).ln()
            + k as f64 * q.ln()
            + (k as f64 * k as f64 - k as f64) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
    }
    log_a / (alpha as f64 - 1.0)
}

/// The (ε, δ) guarantee of `runs` composed (their RDP added order by order), and the order
/// that gives it: `ε = min_α [RDP(α) + ln((α − 1)/α) − (ln δ + ln α)/(α − 1)]`, or 0 when no
/// step sampled any row.
pub fn epsilon(runs: &[DpSteps], delta: f64) -> (f64, u32) {
    let mut best = (f64::INFINITY, 0);
    if !(delta > 0.0 && delta < 1.0) {
        return best;
    }
    // No step touched any row (no steps, or nothing sampled): nothing is revealed, ε = 0
    // (the conversion below would leave its own slack).
    if runs.iter().all(|r| r.steps == 0 || r.sample_rate <= 0.0) {
        return (0.0, *ORDERS.start());
    }
    for alpha in ORDERS {
        let a = alpha as f64;
        let rdp: f64 = runs
            .iter()
            .filter(|r| r.steps > 0)
            .map(|r| r.steps as f64 * rdp_step(r.sample_rate, r.noise_multiplier, alpha))
            .sum();
        let eps = rdp + ((a - 1.0) / a).ln() - (delta.ln() + a.ln()) / (a - 1.0);
        if eps < best.0 {
            best = (eps.max(0.0), alpha);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_two_matches_its_closed_form() {
        // A_2 = (1-q)² + 2q(1-q) + q² e^{1/σ²} = 1 + q² (e^{1/σ²} − 1).
        for (q, s) in [(0.01f64, 1.1f64), (0.1, 0.8), (0.5, 2.0)] {
            let want: f64 = (1.0 + q * q * ((1.0 / (s * s)).exp() - 1.0)).ln();
            assert!((rdp_step(q, s, 2) - want).abs() < 1e-12, "{q} {s}");
        }
    }

    #[test]
    fn full_batches_are_the_gaussian_mechanism() {
        // q = 1: RDP(α) = α / (2σ²), for every order.
        for alpha in [2, 7, 64] {
            assert_eq!(rdp_step(1.0, 2.0, alpha), alpha as f64 / 8.0);
        }
        // The binomial sum tends to it as q → 1.
        let near = rdp_step(1.0 - 1e-9, 2.0, 7);
        assert!((near - 7.0 / 8.0).abs() < 1e-6, "{near}");
    }

    #[test]
    fn epsilon_grows_with_steps_and_sampling_and_falls_with_noise() {
        let run = |q: f64, s: f64, steps: u64| {
            epsilon(
                &[DpSteps {
                    sample_rate: q,
                    noise_multiplier: s,
                    steps,
                }],
                1e-5,
            )
            .0
        };
        let base = run(0.01, 1.1, 1000);
        assert!(base > 0.0 && base.is_finite(), "{base}");
        assert!(run(0.01, 1.1, 4000) > base);
        assert!(run(0.05, 1.1, 1000) > base);
        assert!(run(0.01, 2.0, 1000) < base);
        assert_eq!(run(0.0, 1.1, 1000), 0.0);
        // Composition: two runs of 500 steps are one run of 1000.
        let two = epsilon(
            &[
                DpSteps {
                    sample_rate: 0.01,
                    noise_multiplier: 1.1,
                    steps: 500,
                },
                DpSteps {
                    sample_rate: 0.01,
                    noise_multiplier: 1.1,
                    steps: 500,
                },
            ],
            1e-5,
        )
        .0;
        assert!((two - base).abs() < 1e-9);
        // The Gaussian mechanism once (q = 1, one step) at σ = 1: RDP α/2, minimised over
        // the integer orders by hand.
        let (eps, _) = epsilon(
            &[DpSteps {
                sample_rate: 1.0,
                noise_multiplier: 1.0,
                steps: 1,
            }],
            1e-5,
        );
        let by_hand = (2..=256u32)
            .map(|a| {
                let a = a as f64;
                a / 2.0 + ((a - 1.0) / a).ln() - ((1e-5f64).ln() + a.ln()) / (a - 1.0)
            })
            .fold(f64::INFINITY, f64::min);
        assert!((eps - by_hand).abs() < 1e-12, "{eps} {by_hand}");
    }
}
