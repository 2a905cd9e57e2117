//! Decoding of WFDB signal storage formats into digital sample values.
//!
//! Decoded: 8 (first differences), 16, 24, 32, 61 (big-endian 16), 80 (offset 8-bit),
//! 160 (offset 16-bit), 212 (two 12-bit samples in three bytes), 310 and 311 (three 10-bit
//! samples in four bytes, two bit layouts) and the FLAC formats 508, 516 and 524 (a FLAC
//! stream of at most 8, 16 or 24 bits, one FLAC channel per signal of the file, decoded with
//! the `claxon` crate). Every other format is refused with "unsupported format N in FILE";
//! nothing is ever guessed.
//!
//! Multi-frequency files are decoded frame by frame: a frame holds `samples_per_frame`
//! consecutive samples of each signal in turn, and each signal's samples come out in time
//! order ("expanded", as `wfdb.rdrecord(smooth_frames=False)` gives them).

use std::path::Path;

use crate::error::{DatasetError, Result};

/// Formats this module decodes.
pub const SUPPORTED_FORMATS: [u16; 13] = [8, 16, 24, 32, 61, 80, 160, 212, 310, 311, 508, 516, 524];

/// Whether `format` is one of the FLAC formats (508, 516, 524).
pub fn is_flac(format: u16) -> bool {
    matches!(format, 508 | 516 | 524)
}

/// Bits per stored sample of a supported binary format (310 and 311 store three samples in
/// 32 bits and are sized by [`bytes_for_samples`]).
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

/// Bytes that `n` consecutive samples of binary `format` occupy (what a reader needs, as the
/// WFDB library and wfdb-python read them: a partial 310 block needs its whole last 16-bit
/// half, a partial 311 block only the bytes its samples touch).
fn bytes_for_samples(format: u16, n: u64) -> Option<u64> {
    match format {
        310 | 311 => {
            let tail = match (n % 3, format) {
                (0, _) => 0,
                (1, _) => 2,
                (_, 310) => 4,
                _ => 3,
            };
            (n / 3).checked_mul(4)?.checked_add(tail)
        }
        _ => n
            .checked_mul(bits_per_sample(format)?)
            .map(|b| b.div_ceil(8)),
    }
}

/// Whole samples that `n_bytes` of binary `format` hold.
fn samples_in(format: u16, n_bytes: u64) -> u64 {
    match format {
        310 | 311 => {
            let (words, rest) = (n_bytes / 4, n_bytes % 4);
            let tail = match (rest, format) {
                (0 | 1, _) => 0,
                (2, _) | (3, 310) => 1,
                _ => 2,
            };
            words * 3 + tail
        }
        _ => {
            let bits = bits_per_sample(format).unwrap_or(8);
            // In u128: `n_bytes * 8` cannot overflow, and the result is at most `n_bytes * 8`.
            u64::try_from(u128::from(n_bytes) * 8 / u128::from(bits)).unwrap_or(u64::MAX)
        }
    }
}

/// The digital value WFDB uses to mark an invalid (missing) sample in `format`, if any.
pub fn invalid_sample(format: u16) -> Option<i32> {
    match format {
        212 => Some(-2048),
        310 | 311 => Some(-512),
        16 | 61 | 160 | 516 => Some(-32768),
        80 | 508 => Some(-128),
        24 | 524 => Some(-(1 << 23)),
        32 => Some(i32::MIN),
        _ => None,
    }
}

/// Returns an error unless `format` is decoded by this module.
pub fn check_supported(format: u16, path: &Path) -> Result<()> {
    if SUPPORTED_FORMATS.contains(&format) {
        Ok(())
    } else {
        Err(DatasetError::UnsupportedFormat {
            format: format.to_string(),
            path: path.to_path_buf(),
        })
    }
}

/// Number of complete frames that `n_bytes` of binary `format` hold, a frame being
/// `slots` samples (the sum of the file's samples per frame).
pub fn frames_in(format: u16, n_bytes: u64, slots: usize) -> u64 {
    samples_in(format, n_bytes) / (slots.max(1) as u64)
}

/// Bytes that `n_frames` frames of `slots` samples of binary `format` occupy, or `None` when
/// the format is not a binary format decoded here or the count does not fit in a `u64`.
pub fn bytes_needed(format: u16, n_frames: u64, slots: usize) -> Option<u64> {
    bytes_for_samples(format, n_frames.checked_mul(u64::try_from(slots).ok()?)?)
}

fn total_slots(spf: &[u32]) -> usize {
    spf.iter().map(|&k| k as usize).sum()
}

/// Splits an interleaved stream of frames (each `spf[0] + spf[1] + ...` samples) into one
/// vector per signal, in time order.
fn split_frames(flat: &[i32], spf: &[u32]) -> Vec<Vec<i32>> {
    let slots = total_slots(spf);
    if slots == 0 {
        return vec![Vec::new(); spf.len()];
    }
    if spf.len() == 1 {
        return vec![flat.to_vec()];
    }
    let frames = flat.len() / slots.max(1);
    let mut out: Vec<Vec<i32>> = spf
        .iter()
        .map(|&k| Vec::with_capacity(frames * k as usize))
        .collect();
    if spf.iter().all(|&k| k == 1) {
        for frame in flat.chunks_exact(slots) {
            for (o, &v) in out.iter_mut().zip(frame) {
                o.push(v);
            }
        }
        return out;
    }
    for frame in flat.chunks_exact(slots) {
        let mut at = 0;
        for (o, &k) in out.iter_mut().zip(spf) {
            o.extend_from_slice(&frame[at..at + k as usize]);
            at += k as usize;
        }
    }
    out
}

/// Decodes `n_frames` frames of the signals of one binary file stored in `format` from
/// `data` (which starts at the first sample, after any byte offset). `spf` gives each
/// signal's samples per frame; returns one vector per signal of `n_frames * spf[i]` samples.
///
/// `initial` gives each signal's initial value (used by the difference format 8 only).
/// `path` names the file in errors.
pub fn decode(
    format: u16,
    data: &[u8],
    spf: &[u32],
    n_frames: u64,
    initial: &[i64],
    path: &Path,
) -> Result<Vec<Vec<i32>>> {
    check_supported(format, path)?;
    if is_flac(format) {
        return Err(DatasetError::signal(
            path,
            "*",
            format!("format {format} is a FLAC stream: decode it with `decode_flac`"),
        ));
    }
    let slots = total_slots(spf);
    let overflow = || {
        DatasetError::signal(
            path,
            "*",
            format!(
                "header announces {n_frames} frames of {slots} samples: more bytes than can be addressed"
            ),
        )
    };
    let need = bytes_needed(format, n_frames, slots).ok_or_else(overflow)?;
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
        .checked_mul(slots as u64)
        .and_then(|t| usize::try_from(t).ok())
        .ok_or_else(overflow)?;
    let mut flat: Vec<i32> = Vec::with_capacity(total);
    decode_flat(format, data, total, &mut flat);
    let mut out = split_frames(&flat, spf);
    if format == 8 {
        for (s, v) in out.iter_mut().enumerate() {
            let mut acc = initial.get(s).copied().unwrap_or(0) as i32;
            for x in v.iter_mut() {
                acc = acc.wrapping_add(*x);
                *x = acc;
            }
        }
    }
    Ok(out)
}

/// Sign-extends the low `bits` bits of `v`.
fn sign_extend(v: i32, bits: u32) -> i32 {
    (v << (32 - bits)) >> (32 - bits)
}

/// Decodes `total` samples of binary `format` from `data` (which holds at least
/// [`bytes_for_samples`] bytes) into `flat`; format 8 yields the differences.
fn decode_flat(format: u16, data: &[u8], total: usize, flat: &mut Vec<i32>) {
    let b = |i: usize| data[i] as i32;
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
        8 => flat.extend(data[..total].iter().map(|&b| b as i8 as i32)),
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
                flat.push(sign_extend(((c[1] as i32 & 0x0f) << 8) | c[0] as i32, 12));
                flat.push(sign_extend(((c[1] as i32 & 0xf0) << 4) | c[2] as i32, 12));
            }
            if total % 2 == 1 {
                let k = (total / 2) * 3;
                flat.push(sign_extend(((b(k + 1) & 0x0f) << 8) | b(k), 12));
            }
        }
        // Three 10-bit samples in two little-endian 16-bit words: the first sample in bits
        // 1-10 of the first word, the second in bits 1-10 of the second, the third in bits
        // 11-15 of the first (low five bits) and of the second (high five bits).
        310 => {
            for k in 0..total {
                let w = (k / 3) * 4;
                let v = match k % 3 {
                    0 => (b(w) >> 1) | ((b(w + 1) & 0x07) << 7),
                    1 => (b(w + 2) >> 1) | ((b(w + 3) & 0x07) << 7),
                    _ => ((b(w + 1) >> 3) & 0x1f) | (((b(w + 3) >> 3) & 0x1f) << 5),
                };
                flat.push(sign_extend(v, 10));
            }
        }
        // Three 10-bit samples in one little-endian 32-bit word: bits 0-9, 10-19 and 20-29.
        311 => {
            for k in 0..total {
                let w = (k / 3) * 4;
                let v = match k % 3 {
                    0 => b(w) | ((b(w + 1) & 0x03) << 8),
                    1 => (b(w + 1) >> 2) | ((b(w + 2) & 0x0f) << 6),
                    _ => (b(w + 2) >> 4) | ((b(w + 3) & 0x3f) << 4),
                };
                flat.push(sign_extend(v, 10));
            }
        }
        _ => unreachable!("checked by check_supported"),
    }
}

/// Decodes the FLAC stream `data` of one signal file in FLAC `format` (508, 516, 524): one
/// FLAC channel per signal of the file, every signal with the same samples per frame `spf`.
/// Skips `sample_offset` samples of each channel (the header's `+` modifier counts samples
/// for FLAC files), then returns at most `max_frames` frames (`spf` samples per signal each;
/// every frame of the stream when `None`) and the number of frames returned; the caller
/// checks that there are enough. Every FLAC frame must have the stream's channel count and
/// samples within the format's bits (8, 16 or 24), and at most `max_samples` samples are
/// decoded in all (a small stream of constant values can expand enormously).
pub fn decode_flac(
    format: u16,
    data: &[u8],
    spf: &[u32],
    sample_offset: u64,
    max_frames: Option<u64>,
    max_samples: u64,
    path: &Path,
) -> Result<(Vec<Vec<i32>>, u64)> {
    let fail = |reason: String| DatasetError::signal(path, "*", reason);
    let k = spf.first().copied().unwrap_or(1);
    if spf.iter().any(|&s| s != k) {
        return Err(fail(
            "every signal of a FLAC file must have the same samples per frame".into(),
        ));
    }
    if !data.starts_with(b"fLaC") {
        return Err(fail(format!(
            "format {format} announces a FLAC stream but the file does not start with `fLaC`"
        )));
    }
    let mut reader = claxon::FlacReader::new(std::io::Cursor::new(data))
        .map_err(|e| fail(format!("FLAC stream: {e}")))?;
    let info = reader.streaminfo();
    let max_bits = u32::from(format - 500);
    if info.bits_per_sample > max_bits {
        return Err(fail(format!(
            "FLAC stream of {} bits in format {format} (at most {max_bits})",
            info.bits_per_sample
        )));
    }
    if info.channels as usize != spf.len() {
        return Err(fail(format!(
            "FLAC stream has {} channels but the header gives {} signals in this file",
            info.channels,
            spf.len()
        )));
    }
    let k = u64::from(k);
    let want = max_frames.map(|n| n.saturating_mul(k));
    let cap = |n: u64| n.saturating_mul(spf.len() as u64) > max_samples;
    let too_many = || {
        fail(format!(
            "more than {max_samples} samples in all: refused (the limit on one record)"
        ))
    };
    let expected = want.or(info.samples.map(|s| s.saturating_sub(sample_offset)));
    if expected.is_some_and(cap) && want.is_none_or(cap) {
        return Err(too_many());
    }
    let capacity = expected
        .unwrap_or(0)
        .min(max_samples / spf.len().max(1) as u64);
    let mut out: Vec<Vec<i32>> = spf
        .iter()
        .map(|_| Vec::with_capacity(capacity as usize))
        .collect();
    let (lo, hi) = (-(1i32 << (max_bits - 1)), (1i32 << (max_bits - 1)) - 1);
    let mut skip = sample_offset;
    let mut blocks = reader.blocks();
    let mut buffer = Vec::new();
    loop {
        let have = out[0].len() as u64;
        if want.is_some_and(|w| have >= w) {
            break;
        }
        if cap(have) {
            return Err(too_many());
        }
        let block = match blocks.read_next_or_eof(buffer) {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => return Err(fail(format!("FLAC stream, after {have} samples: {e}"))),
        };
        // claxon does not compare a frame's channels with the stream's: a frame with fewer
        // would be read past its end.
        if block.channels() as usize != spf.len() {
            return Err(fail(format!(
                "FLAC frame at sample {} has {} channels, the stream {}",
                block.time(),
                block.channels(),
                spf.len()
            )));
        }
        let len = u64::from(block.duration());
        let from = skip.min(len);
        skip -= from;
        let take = match want {
            Some(w) => (len - from).min(w - have),
            None => len - from,
        };
        for (ch, o) in out.iter_mut().enumerate() {
            let c = block.channel(ch as u32);
            let part = c
                .get(from as usize..(from + take) as usize)
                .ok_or_else(|| fail(format!("FLAC frame at sample {} is short", block.time())))?;
            if let Some(v) = part.iter().find(|v| !(lo..=hi).contains(*v)) {
                return Err(fail(format!(
                    "FLAC sample {v} does not fit the {max_bits} bits of format {format}"
                )));
            }
            o.extend_from_slice(part);
        }
        buffer = block.into_buffer();
    }
    let frames = out[0].len() as u64 / k;
    for o in &mut out {
        o.truncate((frames * k) as usize);
    }
    Ok((out, frames))
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
        let s = decode(212, &bytes, &[1, 1], 2, &[], p()).unwrap();
        assert_eq!(s, vec![vec![955, -1], vec![992, -2048]]);
    }

    #[test]
    fn format_212_odd_sample_count() {
        let s = decode(212, &[0x01, 0x00], &[1], 1, &[], p()).unwrap();
        assert_eq!(s, vec![vec![1]]);
    }

    #[test]
    fn formats_16_61_80_160_24_32_8() {
        assert_eq!(
            decode(16, &[0x38, 0xff, 0x10, 0x00], &[1, 1], 1, &[], p()).unwrap(),
            vec![vec![-200], vec![16]]
        );
        assert_eq!(
            decode(61, &[0xff, 0x38], &[1], 1, &[], p()).unwrap(),
            vec![vec![-200]]
        );
        assert_eq!(
            decode(80, &[0x80, 0x00, 0xff], &[1], 3, &[], p()).unwrap(),
            vec![vec![0, -128, 127]]
        );
        assert_eq!(
            decode(160, &[0x00, 0x80, 0x00, 0x00], &[1], 2, &[], p()).unwrap(),
            vec![vec![0, -32768]]
        );
        assert_eq!(
            decode(24, &[0xfe, 0xff, 0xff, 0x01, 0x00, 0x80], &[1], 2, &[], p()).unwrap(),
            vec![vec![-2, -8388607]]
        );
        assert_eq!(
            decode(32, &[1, 0, 0, 0x80], &[1], 1, &[], p()).unwrap(),
            vec![vec![i32::MIN + 1]]
        );
        assert_eq!(
            decode(8, &[1, 0xff, 3], &[1], 3, &[10], p()).unwrap(),
            vec![vec![11, 10, 13]]
        );
    }

    /// Packs three 10-bit samples the way the WFDB library writes formats 310 and 311
    /// (written here from the bit layout in signal(5), independently of the decoder).
    fn pack(format: u16, s: [i32; 3]) -> [u8; 4] {
        let u = s.map(|v| (v & 0x3ff) as u32);
        match format {
            310 => {
                let w0 = (u[0] << 1) | ((u[2] & 0x1f) << 11);
                let w1 = (u[1] << 1) | ((u[2] >> 5) << 11);
                let [a, b] = (w0 as u16).to_le_bytes();
                let [c, d] = (w1 as u16).to_le_bytes();
                [a, b, c, d]
            }
            _ => (u[0] | (u[1] << 10) | (u[2] << 20)).to_le_bytes(),
        }
    }

    #[test]
    fn formats_310_and_311_pack_three_10_bit_samples_in_four_bytes() {
        for format in [310u16, 311] {
            let samples = [[511, -512, -1], [0, 1, 300], [-300, 7, -8]];
            let bytes: Vec<u8> = samples.iter().flat_map(|s| pack(format, *s)).collect();
            let got = decode(format, &bytes, &[1, 1, 1], 3, &[], p()).unwrap();
            for (i, s) in got.iter().enumerate() {
                let want: Vec<i32> = samples.iter().map(|f| f[i]).collect();
                assert_eq!(s, &want, "format {format}, signal {i}");
            }
            // A partial last block: one and two samples.
            let one = decode(format, &bytes[..2], &[1], 1, &[], p()).unwrap();
            assert_eq!(one, vec![vec![511]]);
            let need = if format == 310 { 4 } else { 3 };
            assert_eq!(bytes_needed(format, 2, 1), Some(need));
            let two = decode(format, &bytes[..need as usize], &[1], 2, &[], p()).unwrap();
            assert_eq!(two, vec![vec![511, -512]]);
            assert_eq!(frames_in(format, 3, 1), if format == 310 { 1 } else { 2 });
            assert_eq!(frames_in(format, 8, 2), 3);
        }
    }

    #[test]
    fn multi_frequency_frames_split_in_time_order() {
        // Frame = 2 samples of signal 0, 1 of signal 1, 3 of signal 2.
        let flat: Vec<i16> = (1..=12).collect();
        let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
        let got = decode(16, &bytes, &[2, 1, 3], 2, &[], p()).unwrap();
        assert_eq!(
            got,
            vec![vec![1, 2, 7, 8], vec![3, 9], vec![4, 5, 6, 10, 11, 12]]
        );
        // Format 8 accumulates each signal's differences in time order.
        let got = decode(8, &[1, 1, 5, 1, 1, 5], &[2, 1], 2, &[10, 0], p()).unwrap();
        assert_eq!(got, vec![vec![11, 12, 13, 14], vec![5, 10]]);
        assert_eq!(bytes_needed(212, 2, 3), Some(9));
        assert_eq!(frames_in(16, 24, 6), 2);
    }

    #[test]
    fn truncated_and_unsupported_are_errors() {
        let e = decode(16, &[0, 0, 0], &[1], 2, &[], p()).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        for f in [0u16, 1, 9, 100, 312, 500, 999] {
            let e = decode(f, &[0; 64], &[1], 2, &[], p()).unwrap_err();
            assert_eq!(e.to_string(), format!("unsupported format {f} in x.dat"));
        }
        let e = decode(516, &[0; 64], &[1], 2, &[], p()).unwrap_err();
        assert!(e.to_string().contains("FLAC"), "{e}");
    }

    #[test]
    fn flac_that_is_not_flac_is_an_error() {
        let e = decode_flac(516, b"RIFF....", &[1], 0, Some(1), 1 << 20, p()).unwrap_err();
        assert!(e.to_string().contains("does not start with `fLaC`"), "{e}");
        let e = decode_flac(516, b"fLaC\0\0", &[1], 0, Some(1), 1 << 20, p()).unwrap_err();
        assert!(e.to_string().contains("FLAC stream"), "{e}");
        let e = decode_flac(516, b"fLaC", &[1, 2], 0, None, 1 << 20, p()).unwrap_err();
        assert!(e.to_string().contains("same samples per frame"), "{e}");
    }

    /// CRC of `bytes`, most significant bit first, initial value 0: FLAC's CRC-8 (`poly`
    /// 0x07, `width` 8) of a frame header and CRC-16 (0x8005, 16) of a whole frame.
    fn flac_crc(bytes: &[u8], poly: u16, width: u32) -> u16 {
        let top = 1u32 << (width - 1);
        let mask = (1u32 << width) - 1;
        let mut crc = 0u32;
        for &b in bytes {
            crc ^= u32::from(b) << (width - 8);
            for _ in 0..8 {
                crc = if crc & top != 0 {
                    (crc << 1) ^ u32::from(poly)
                } else {
                    crc << 1
                } & mask;
            }
        }
        crc as u16
    }

    /// A 16-bit FLAC stream whose STREAMINFO announces `channels` and whose frames (16 samples
    /// each, fixed blocking) hold the given constant channels: written by the FLAC format
    /// specification, both CRCs included, so that a frame can disagree with its stream.
    fn flac_stream(channels: u8, frames: &[&[i16]]) -> Vec<u8> {
        let mut out = b"fLaC".to_vec();
        out.extend([0x80, 0, 0, 34]); // last metadata block, STREAMINFO, 34 bytes
        out.extend(16u16.to_be_bytes()); // minimum block size
        out.extend(16u16.to_be_bytes()); // maximum block size
        out.extend([0; 6]); // frame sizes unknown
        // 20 bits of sample rate (250), 3 of channels - 1, 5 of bits - 1, 36 of total samples.
        let total = 16 * frames.len() as u64;
        let packed: u64 = (250 << 44) | (u64::from(channels - 1) << 41) | (15 << 36) | total;
        out.extend(packed.to_be_bytes());
        out.extend([0; 16]); // MD5 of the samples: not checked
        for (n, values) in frames.iter().enumerate() {
            let assignment = values.len() as u8 - 1; // independent channels
            // Sync and fixed blocking; 8-bit block size - 1 at the end, rate from STREAMINFO;
            // channel assignment, 16 bits per sample; frame number (one UTF-8 byte); 16 - 1.
            let mut frame = vec![0xFF, 0xF8, 0x60, (assignment << 4) | 0b1000, n as u8, 15];
            frame.push(flac_crc(&frame, 0x07, 8) as u8);
            for v in values.iter() {
                frame.push(0); // a CONSTANT subframe, no wasted bits
                frame.extend(v.to_be_bytes());
            }
            let crc = flac_crc(&frame, 0x8005, 16);
            frame.extend(crc.to_be_bytes());
            out.extend(frame);
        }
        out
    }

    #[test]
    fn a_flac_frame_with_other_channels_than_its_stream_is_an_error() {
        // The hand-written stream decodes: two frames of two constant channels.
        let good = flac_stream(2, &[&[100, -7], &[5, 6]]);
        let (got, frames) = decode_flac(516, &good, &[1, 1], 0, None, 1 << 20, p()).unwrap();
        assert_eq!(frames, 32);
        assert_eq!(got[0], [vec![100; 16], vec![5; 16]].concat());
        assert_eq!(got[1], [vec![-7; 16], vec![6; 16]].concat());
        // Its second frame with one channel, then with three, under the stream's two.
        for bad in [&[5i16][..], &[5, 6, 7]] {
            let data = flac_stream(2, &[&[100, -7], bad]);
            let e = decode_flac(516, &data, &[1, 1], 0, None, 1 << 20, p()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "x.dat: lead *: FLAC frame at sample 16 has {} channels, the stream 2",
                    bad.len()
                )
            );
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
        let e = decode(16, &[0; 8], &[1], 1 << 62, &[], p()).unwrap_err();
        assert!(
            e.to_string().contains("more bytes than can be addressed"),
            "{e}"
        );
        assert_eq!(bytes_needed(16, 1 << 62, 1), None);
        assert_eq!(bytes_needed(212, 3, 1), Some(5));
        assert_eq!(bytes_needed(310, 3, 1), Some(4));
        assert_eq!(bytes_needed(311, u64::MAX, 1), None);
        assert_eq!(bytes_needed(508, 3, 1), None);
        assert_eq!(frames_in(8, u64::MAX, 1), u64::MAX);
        assert_eq!(frames_in(212, u64::MAX, 1), 12_297_829_382_473_034_410);
        assert!(decode(16, &[], &[], 5, &[], p()).unwrap().is_empty());
        assert!(decode(8, &[], &[], 5, &[], p()).unwrap().is_empty());
        assert_eq!(
            decode(16, &[], &[0, 0], 5, &[], p()).unwrap(),
            vec![Vec::<i32>::new(), vec![]]
        );
    }

    fn binary_formats() -> Vec<u16> {
        vec![8u16, 16, 24, 32, 61, 80, 160, 212, 310, 311]
    }

    proptest::proptest! {
        /// Extreme frame and signal counts over a small buffer: an error, never a panic or an
        /// allocation sized by the counts.
        #[test]
        fn extreme_counts_are_errors(fmt in proptest::sample::select(binary_formats()),
                                     data in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                                     spf in proptest::collection::vec(1u32..3000, 1..4),
                                     frames in proptest::prop_oneof![proptest::strategy::Just(u64::MAX), proptest::strategy::Just(1u64 << 62), (1u64 << 10)..u64::MAX]) {
            proptest::prop_assert!(decode(fmt, &data, &spf, frames, &[], p()).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(fmt in proptest::sample::select(binary_formats()),
                                                 data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                                 spf in proptest::collection::vec(1u32..4, 1..4)) {
            let slots: usize = spf.iter().map(|&k| k as usize).sum();
            let frames = frames_in(fmt, data.len() as u64, slots);
            let out = decode(fmt, &data, &spf, frames, &[0; 4], p()).unwrap();
            for (s, k) in out.iter().zip(&spf) {
                proptest::prop_assert_eq!(s.len() as u64, frames * u64::from(*k));
            }
        }

        /// Formats 310 and 311 round-trip any 10-bit samples packed as signal(5) lays them out.
        #[test]
        fn formats_310_311_round_trip(fmt in proptest::sample::select(vec![310u16, 311]),
                                      samples in proptest::collection::vec(-512i32..512, 1..60)) {
            let mut padded = samples.clone();
            while padded.len() % 3 != 0 { padded.push(0); }
            let bytes: Vec<u8> = padded.chunks(3).flat_map(|c| pack(fmt, [c[0], c[1], c[2]])).collect();
            let n = samples.len() as u64;
            let need = bytes_needed(fmt, n, 1).unwrap() as usize;
            let got = decode(fmt, &bytes[..need], &[1], n, &[], p()).unwrap();
            proptest::prop_assert_eq!(&got[0], &samples);
        }

        /// Arbitrary bytes behind a FLAC signature: an error or samples, never a panic.
        #[test]
        fn flac_decoding_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                                      frames in proptest::option::of(0u64..100)) {
            let mut bytes = b"fLaC".to_vec();
            bytes.extend(data);
            let _ = decode_flac(524, &bytes, &[1, 1], 0, frames, 1 << 16, p());
        }
    }
}
