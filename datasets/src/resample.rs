//! Resampling of whole records to a common rate with `rubato`'s FFT resampler (fixed ratio,
//! band-limited, delay compensated by `process_all`).

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler};

/// Most samples (all leads together) one call may produce: a record cannot be resampled into
/// more memory than this (1 GiB of `f32`), whatever rates its header gives.
pub const MAX_OUTPUT_SAMPLES: u64 = 1 << 28;

/// Largest term of the reduced rate ratio (`from_hz / gcd`, `to_hz / gcd`): the resampler's
/// FFT size grows with it, so rates such as a prime number of Hz near 2^32 are refused instead
/// of allocating gigabytes (360 → 500 Hz reduces to 18 : 25).
pub const MAX_RATIO_TERM: u32 = 1 << 16;

/// Why a record cannot be resampled.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// A rate is zero.
    #[error("cannot resample from {from_hz} Hz to {to_hz} Hz")]
    ZeroRate {
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
    },
    /// A rate is not a positive whole number of Hz.
    #[error("sampling rate {hz} Hz is not a positive whole number")]
    NotWholeHz {
        /// The rate.
        hz: f64,
    },
    /// The leads are not all the same length.
    #[error("leads differ in length")]
    UnequalLeads,
    /// The output would exceed [`MAX_OUTPUT_SAMPLES`].
    #[error(
        "resampling {samples} samples × {leads} leads from {from_hz} Hz to {to_hz} Hz would give more than {MAX_OUTPUT_SAMPLES} samples"
    )]
    TooLarge {
        /// Samples per lead.
        samples: usize,
        /// Leads.
        leads: usize,
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
    },
    /// The reduced rate ratio has a term above [`MAX_RATIO_TERM`].
    #[error(
        "cannot resample from {from_hz} Hz to {to_hz} Hz: their ratio reduces to {} : {}, terms above {MAX_RATIO_TERM}",
        from_hz / gcd(*from_hz, *to_hz),
        to_hz / gcd(*from_hz, *to_hz)
    )]
    Ratio {
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
    },
    /// The resampler failed.
    #[error("resampling {from_hz}→{to_hz} Hz: {source}")]
    Resampler {
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
        /// rubato's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Resamples every lead of `leads` (all the same length) from `from_hz` to `to_hz`.
///
/// Both rates must be whole numbers of Hz. The output has `round(len * to / from)` samples
/// per lead. NaN samples (invalid ADC values) are resampled as 0 and put back as NaN at the
/// nearest output position, so a gap stays visible.
pub fn resample(
    leads: &[Vec<f32>],
    from_hz: u32,
    to_hz: u32,
) -> Result<Vec<Vec<f32>>, ResampleError> {
    if from_hz == 0 || to_hz == 0 {
        return Err(ResampleError::ZeroRate { from_hz, to_hz });
    }
    let n_in = leads.first().map_or(0, Vec::len);
    if leads.iter().any(|l| l.len() != n_in) {
        return Err(ResampleError::UnequalLeads);
    }
    if from_hz == to_hz || n_in == 0 || leads.is_empty() {
        return Ok(leads.to_vec());
    }
    // In u128: no overflow whatever the rates; checked against the limit before allocating.
    let n_out = (n_in as u128 * u128::from(to_hz) + u128::from(from_hz / 2)) / u128::from(from_hz);
    let n_out = u64::try_from(n_out)
        .ok()
        .filter(|n| {
            n.checked_mul(leads.len() as u64)
                .is_some_and(|t| t <= MAX_OUTPUT_SAMPLES)
        })
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(ResampleError::TooLarge {
            samples: n_in,
            leads: leads.len(),
            from_hz,
            to_hz,
        })?;
    let g = gcd(from_hz, to_hz);
    if from_hz / g > MAX_RATIO_TERM || to_hz / g > MAX_RATIO_TERM {
        return Err(ResampleError::Ratio { from_hz, to_hz });
    }
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| ResampleError::Resampler {
        from_hz,
        to_hz,
        source,
    };
    let channels = leads.len();
    let input: Vec<Vec<f32>> = leads
        .iter()
        .map(|l| {
            l.iter()
                .map(|v| if v.is_nan() { 0.0 } else { *v })
                .collect()
        })
        .collect();
    let mut r = Fft::<f32>::new(
        from_hz as usize,
        to_hz as usize,
        1024,
        channels,
        FixedSync::Input,
    )
    .map_err(|e| failed(Box::new(e)))?;
    let needed = r.process_all_needed_output_len(n_in);
    let mut out: Vec<Vec<f32>> = vec![vec![0.0; needed]; channels];
    let inp =
        SequentialSliceOfVecs::new(&input, channels, n_in).map_err(|e| failed(Box::new(e)))?;
    let mut outp = SequentialSliceOfVecs::new_mut(&mut out, channels, needed)
        .map_err(|e| failed(Box::new(e)))?;
    r.process_all_into_buffer(&inp, &mut outp, n_in, None)
        .map_err(|e| failed(Box::new(e)))?;
    for (lead, src) in out.iter_mut().zip(leads) {
        lead.resize(n_out, 0.0);
        for (i, v) in src.iter().enumerate() {
            if v.is_nan() {
                let j = (i as u128 * u128::from(to_hz) / u128::from(from_hz)) as usize;
                if let Some(x) = lead.get_mut(j) {
                    *x = f32::NAN;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_keeps_its_shape_and_length() {
        let from = 360u32;
        let to = 500u32;
        let f = 5.0f32;
        let n = 3600;
        let x: Vec<f32> = (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * f * i as f32 / from as f32).sin())
            .collect();
        let y = resample(&[x], from, to).unwrap();
        assert_eq!(y[0].len(), 5000);
        // Away from the edges the output matches the analytic sine at the new rate, up to a
        // constant delay of at most half an output sample.
        let err = |delay: f32| {
            (500..4500)
                .map(|i| {
                    (y[0][i]
                        - (2.0 * std::f32::consts::PI * f * (i as f32 - delay) / to as f32).sin())
                    .abs()
                })
                .fold(0.0f32, f32::max)
        };
        let best = (-10..=10)
            .map(|k| err(k as f32 / 20.0))
            .fold(f32::INFINITY, f32::min);
        assert!(best < 0.01, "max error {best}");
        assert!(err(0.0) < 0.05, "delay above half a sample: {}", err(0.0));
    }

    #[test]
    fn same_rate_is_identity_and_zero_rate_is_an_error() {
        let x = vec![vec![1.0, 2.0, 3.0]];
        assert_eq!(resample(&x, 500, 500).unwrap(), x);
        assert!(resample(&x, 0, 500).is_err());
    }

    #[test]
    fn output_beyond_the_limit_is_an_error_not_an_allocation() {
        let x = vec![vec![0.0f32; 1000]; 2];
        let e = resample(&x, 1, u32::MAX).unwrap_err();
        assert!(matches!(e, ResampleError::TooLarge { .. }), "{e:?}");
        assert!(e.to_string().contains("more than 268435456 samples"), "{e}");
        let e = resample(&x, 4_294_967_291, 250).unwrap_err();
        assert!(matches!(e, ResampleError::Ratio { .. }), "{e:?}");
        assert!(
            e.to_string().contains("ratio reduces to 4294967291 : 250"),
            "{e}"
        );
    }
}
