//! Decoding of WFDB signal storage formats into digital sample values.
//!
//! Decoded: 8 (first differences), 16, 24, 32, 61 (big-endian 16), 80 (offset 8-bit),
//! 160 (offset 16-bit) and 212 (two 12-bit samples in three bytes). Every other format
//! (310, 311, the FLAC formats 508/516/524, ...) is refused with
//! "unsupported format N in FILE"; nothing is ever guessed.

use std::path::Path;

use crate::error::{DatasetError, Result};

/// Formats this module decodes.
pub const SUPPORTED_FORMATS: [u16; 8] = [8, 16, 24, 32, 61, 80, 160, 212];

/// Bits per stored sample of a supported format.
fn bits_per_sample(format: u16) -> Option<u64> {
    match format {
        8 | 80 => Some(8),
        16 | 61 | 160 => Some(16),
        24 => Some(24),
        32 => Some(32),
        212 => Some(12),
        _ => None,
    }
}

/// The digital value WFDB uses to mark an invalid (missing) sample in `format`, if any.
pub fn invalid_sample(format: u16) -> Option<i32> {
    match format {
        212 => Some(-2048),
        16 | 61 | 160 => Some(-32768),
        80 => Some(-128),
        24 => Some(-(1 << 23)),
        32 => Some(i32::MIN),
        _ => None,
    }
}

/// Returns an error unless `format` is decoded by this module.
pub fn check_supported(format: u16, path: &Path) -> Result<()> {
    if bits_per_sample(format).is_some() {
        Ok(())
    } else {
        Err(DatasetError::UnsupportedFormat {
            format: format.to_string(),
            path: path.to_path_buf(),
        })
    }
}

/// Number of complete frames (one sample of every signal) that `n_bytes` of `format` hold.
pub fn frames_in(format: u16, n_bytes: u64, n_signals: usize) -> u64 {
    let bits = bits_per_sample(format).unwrap_or(8);
    // In u128: `n_bytes * 8` cannot overflow, and the result is at most `n_bytes * 8`.
    let samples = u128::from(n_bytes) * 8 / u128::from(bits);
    u64::try_from(samples / n_signals.max(1) as u128).unwrap_or(u64::MAX)
}

/// Bytes that `n_frames` frames of `n_signals` signals of `format` occupy, or `None` when the
/// format is not decoded here or the count does not fit in a `u64`.
pub fn bytes_needed(format: u16, n_frames: u64, n_signals: usize) -> Option<u64> {
    let bits = bits_per_sample(format)?;
    let bits_total = n_frames
        .checked_mul(u64::try_from(n_signals).ok()?)?
        .checked_mul(bits)?;
    Some(bits_total.div_ceil(8))
}

/// Decodes `n_frames` frames of `n_signals` interleaved signals stored in `format` from `data`
/// (which starts at the first sample, after any byte offset). Returns one vector per signal.
///
/// `initial` gives each signal's initial value (used by the difference format 8 only).
/// `path` and `leads` name the file and signals in errors.
pub fn decode(
    format: u16,
    data: &[u8],
    n_signals: usize,
    n_frames: u64,
    initial: &[i64],
    path: &Path,
) -> Result<Vec<Vec<i32>>> {
    check_supported(format, path)?;
    let overflow = || {
        DatasetError::signal(
            path,
            "*",
            format!(
                "header announces {n_frames} samples per signal of {n_signals} signals: more bytes than can be addressed"
            ),
        )
    };
    let need = bytes_needed(format, n_frames, n_signals).ok_or_else(overflow)?;
    if (data.len() as u64) < need {
        return Err(DatasetError::signal(
            path,
            "*",
            format!(
                "truncated: header announces {n_frames} samples per signal ({need} bytes of format {format}) but the file holds {} bytes",
                data.len()
            ),
        ));
    }
    // `need` bytes are present, so the sample count fits in memory's address space.
    let total = n_frames
        .checked_mul(n_signals as u64)
        .and_then(|t| usize::try_from(t).ok())
        .ok_or_else(overflow)?;
    // Decode the interleaved stream, then split it frame by frame (no per-sample division).
    let mut flat: Vec<i32> = Vec::with_capacity(total);
    match format {
        16 => flat.extend(
            data[..total * 2]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i32),
        ),
        61 => flat.extend(
            data[..total * 2]
                .chunks_exact(2)
                .map(|c| i16::from_be_bytes([c[0], c[1]]) as i32),
        ),
        160 => flat.extend(
            data[..total * 2]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i32 - 32768),
        ),
        80 => flat.extend(data[..total].iter().map(|&b| b as i32 - 128)),
        24 => flat.extend(
            data[..total * 3]
                .chunks_exact(3)
                .map(|c| i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8),
        ),
        32 => flat.extend(
            data[..total * 4]
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        212 => {
            for c in data[..(total / 2) * 3].chunks_exact(3) {
                flat.push((((c[1] as i32 & 0x0f) << 8) | c[0] as i32) << 20 >> 20);
                flat.push((((c[1] as i32 & 0xf0) << 4) | c[2] as i32) << 20 >> 20);
            }
            if total % 2 == 1 {
                let k = (total / 2) * 3;
                flat.push((((data[k + 1] as i32 & 0x0f) << 8) | data[k] as i32) << 20 >> 20);
            }
        }
        8 => {
            flat.extend(data[..total].iter().map(|&b| b as i8 as i32));
            let mut acc: Vec<i32> = (0..n_signals)
                .map(|s| initial.get(s).copied().unwrap_or(0) as i32)
                .collect();
            // `max(1)`: no signals means no samples (and no panic on a chunk size of 0).
            for frame in flat.chunks_exact_mut(n_signals.max(1)) {
                for (v, a) in frame.iter_mut().zip(acc.iter_mut()) {
                    *a = a.wrapping_add(*v);
                    *v = *a;
                }
            }
        }
        _ => unreachable!("checked by check_supported"),
    }
    if n_signals == 1 {
        return Ok(vec![flat]);
    }
    Ok((0..n_signals)
        .map(|s| flat.iter().skip(s).step_by(n_signals).copied().collect())
        .collect())
}

/// The WFDB checksum of a signal: the sum of its samples modulo 2^16, as a signed 16-bit value.
pub fn checksum(samples: &[i32]) -> i16 {
    samples
        .iter()
        .fold(0i16, |acc, &v| acc.wrapping_add(v as i16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.dat")
    }

    #[test]
    fn format_212_packs_two_signed_12_bit_samples_in_three_bytes() {
        // 955 = 0x3BB, 992 = 0x3E0, -1 = 0xFFF, -2048 = 0x800
        let bytes = [0xBB, 0x33, 0xE0, 0xFF, 0x8F, 0x00];
        let s = decode(212, &bytes, 2, 2, &[], p()).unwrap();
        assert_eq!(s, vec![vec![955, -1], vec![992, -2048]]);
    }

    #[test]
    fn format_212_odd_sample_count() {
        let s = decode(212, &[0x01, 0x00], 1, 1, &[], p()).unwrap();
        assert_eq!(s, vec![vec![1]]);
    }

    #[test]
    fn formats_16_61_80_160_24_32_8() {
        assert_eq!(
            decode(16, &[0x38, 0xff, 0x10, 0x00], 2, 1, &[], p()).unwrap(),
            vec![vec![-200], vec![16]]
        );
        assert_eq!(
            decode(61, &[0xff, 0x38], 1, 1, &[], p()).unwrap(),
            vec![vec![-200]]
        );
        assert_eq!(
            decode(80, &[0x80, 0x00, 0xff], 1, 3, &[], p()).unwrap(),
            vec![vec![0, -128, 127]]
        );
        assert_eq!(
            decode(160, &[0x00, 0x80, 0x00, 0x00], 1, 2, &[], p()).unwrap(),
            vec![vec![0, -32768]]
        );
        assert_eq!(
            decode(24, &[0xfe, 0xff, 0xff, 0x01, 0x00, 0x80], 1, 2, &[], p()).unwrap(),
            vec![vec![-2, -8388607]]
        );
        assert_eq!(
            decode(32, &[1, 0, 0, 0x80], 1, 1, &[], p()).unwrap(),
            vec![vec![i32::MIN + 1]]
        );
        assert_eq!(
            decode(8, &[1, 0xff, 3], 1, 3, &[10], p()).unwrap(),
            vec![vec![11, 10, 13]]
        );
    }

    #[test]
    fn truncated_and_unsupported_are_errors() {
        let e = decode(16, &[0, 0, 0], 1, 2, &[], p()).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        for f in [0u16, 310, 311, 508, 516, 524, 999] {
            let e = decode(f, &[0; 64], 1, 2, &[], p()).unwrap_err();
            assert_eq!(e.to_string(), format!("unsupported format {f} in x.dat"));
        }
    }

    #[test]
    fn checksum_wraps_to_signed_16_bits() {
        assert_eq!(checksum(&[32767, 1]), -32768);
        assert_eq!(checksum(&[-1, -1]), -2);
    }

    #[test]
    fn sizes_that_overflow_are_errors_not_allocations() {
        // 2^62 frames of format 16: 2^66 bytes, which wrapped to 0 before sizes were checked.
        let e = decode(16, &[0; 8], 1, 1 << 62, &[], p()).unwrap_err();
        assert!(
            e.to_string().contains("more bytes than can be addressed"),
            "{e}"
        );
        assert_eq!(bytes_needed(16, 1 << 62, 1), None);
        assert_eq!(bytes_needed(212, 3, 1), Some(5));
        assert_eq!(bytes_needed(310, 3, 1), None);
        assert_eq!(frames_in(8, u64::MAX, 1), u64::MAX);
        assert_eq!(frames_in(212, u64::MAX, 1), 12_297_829_382_473_034_410);
        assert!(decode(16, &[], 0, 5, &[], p()).unwrap().is_empty());
        assert!(decode(8, &[], 0, 5, &[], p()).unwrap().is_empty());
    }

    proptest::proptest! {
        /// Extreme frame and signal counts over a small buffer: an error, never a panic or an
        /// allocation sized by the counts.
        #[test]
        fn extreme_counts_are_errors(fmt in proptest::sample::select(vec![8u16, 16, 24, 32, 61, 80, 160, 212]),
                                     data in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                                     nsig in proptest::prop_oneof![proptest::strategy::Just(1usize), 1usize..5000, proptest::strategy::Just(usize::MAX)],
                                     frames in proptest::prop_oneof![proptest::strategy::Just(u64::MAX), proptest::strategy::Just(1u64 << 62), (1u64 << 10)..u64::MAX]) {
            proptest::prop_assert!(decode(fmt, &data, nsig, frames, &[], p()).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(fmt in proptest::sample::select(vec![8u16, 16, 24, 32, 61, 80, 160, 212, 310]),
                                                 data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                                 nsig in 1usize..4) {
            let frames = frames_in(fmt, data.len() as u64, nsig);
            if let Ok(out) = decode(fmt, &data, nsig, frames, &[0; 4], p()) {
                proptest::prop_assert!(out.iter().all(|s| s.len() as u64 == frames));
            }
        }
    }
}
