//! MATLAB Level 4 (`.mat` v4) container check, as used by CinC 2017 and CinC 2020/2021.
//!
//! Those files hold one matrix `val` (int16, leads × samples, column-major). Column-major
//! storage of a leads × samples matrix is exactly WFDB format 16 interleaving, which is why
//! their headers say `16+24`: 20 bytes of matrix header plus the name `val\0`. This module
//! reads the matrix header and checks it agrees with the WFDB header, so a wrong or damaged
//! container is reported as such instead of being decoded as garbage.

use std::path::Path;

use crate::error::{DatasetError, Result};

/// Header of the first matrix in a Level 4 MAT file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mat4Header {
    /// Rows (leads).
    pub rows: u32,
    /// Columns (samples).
    pub cols: u32,
    /// Element type code P of the MOPT type field (0 f64, 1 f32, 2 i32, 3 i16, 4 u16, 5 u8).
    pub precision: u32,
    /// Variable name.
    pub name: String,
    /// Byte offset of the first element.
    pub data_offset: u64,
}

/// Parses the first matrix header of a little-endian Level 4 MAT file.
pub(crate) fn parse_header(bytes: &[u8], path: &Path) -> Result<Mat4Header> {
    let bad = |reason: String| DatasetError::signal(path, "*", reason);
    if bytes.len() < 20 {
        return Err(bad(format!(
            "not a MATLAB v4 file: {} bytes, shorter than the 20-byte matrix header",
            bytes.len()
        )));
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (mopt, rows, cols, imagf, namelen) = (word(0), word(4), word(8), word(12), word(16));
    if mopt >= 1000 {
        return Err(bad(format!(
            "MATLAB v4 type {mopt}: only little-endian IEEE files (type < 1000) are supported"
        )));
    }
    let (o, p, t) = ((mopt / 100) % 10, (mopt / 10) % 10, mopt % 10);
    if o != 0 || t != 0 || imagf != 0 || p > 5 {
        return Err(bad(format!(
            "MATLAB v4 type {mopt} (imaginary flag {imagf}) is not a real full numeric matrix"
        )));
    }
    if namelen == 0 || namelen > 64 || bytes.len() < 20 + namelen as usize {
        return Err(bad(format!(
            "MATLAB v4 variable name length {namelen} is invalid"
        )));
    }
    let raw = &bytes[20..20 + namelen as usize];
    let name = String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or(raw)).into_owned();
    Ok(Mat4Header {
        rows,
        cols,
        precision: p,
        name,
        data_offset: 20 + namelen as u64,
    })
}

/// Checks that a MAT v4 file holds int16 `val` with `n_signals` rows starting at `byte_offset`,
/// and returns its number of columns (samples per signal).
pub(crate) fn check_val_matrix(
    bytes: &[u8],
    n_signals: usize,
    byte_offset: u64,
    path: &Path,
) -> Result<u64> {
    let h = parse_header(bytes, path)?;
    let bad = |reason: String| DatasetError::signal(path, "*", reason);
    if h.name != "val" {
        return Err(bad(format!(
            "MATLAB v4 variable is `{}`, expected `val`",
            h.name
        )));
    }
    if h.precision != 3 {
        return Err(bad(format!(
            "MATLAB v4 `val` has element type {}, expected 3 (int16)",
            h.precision
        )));
    }
    if h.rows as usize != n_signals {
        return Err(bad(format!(
            "MATLAB v4 `val` has {} rows but the header lists {n_signals} signals",
            h.rows
        )));
    }
    if h.data_offset != byte_offset {
        return Err(bad(format!(
            "MATLAB v4 data starts at byte {} but the header's format says +{byte_offset}",
            h.data_offset
        )));
    }
    Ok(h.cols as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mat(mopt: u32, rows: u32, cols: u32, name: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [mopt, rows, cols, 0, name.len() as u32] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(name);
        v
    }

    #[test]
    fn cinc_val_matrix() {
        let m = mat(30, 12, 5000, b"val\0");
        assert_eq!(
            check_val_matrix(&m, 12, 24, Path::new("a.mat")).unwrap(),
            5000
        );
    }

    #[test]
    fn wrong_containers_are_named() {
        let p = Path::new("a.mat");
        let e = check_val_matrix(&mat(30, 1, 10, b"sig\0"), 1, 24, p).unwrap_err();
        assert!(e.to_string().contains("variable is `sig`"), "{e}");
        let e = check_val_matrix(&mat(0, 1, 10, b"val\0"), 1, 24, p).unwrap_err();
        assert!(e.to_string().contains("element type 0"), "{e}");
        let e = check_val_matrix(&mat(30, 2, 10, b"val\0"), 1, 24, p).unwrap_err();
        assert!(e.to_string().contains("2 rows"), "{e}");
        let e = check_val_matrix(b"MATLAB 5.0 MAT-file", 1, 24, p).unwrap_err();
        assert!(
            e.to_string().contains("not a MATLAB v4 file") || e.to_string().contains("type"),
            "{e}"
        );
        assert!(parse_header(&[], p).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
                                       nsig in 0usize..5000, offset in proptest::num::u64::ANY) {
            if let Ok(cols) = check_val_matrix(&bytes, nsig, offset, Path::new("a.mat")) {
                proptest::prop_assert_eq!(offset, 24);
                proptest::prop_assert!(cols <= u32::MAX as u64);
            }
        }
    }
}
