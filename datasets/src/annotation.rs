//! MIT-format WFDB annotation files (`.atr`, LUDB's per-lead `.i`, `.ii`, ... files).
//!
//! Each annotation is a little-endian 16-bit word: the top 6 bits are the code `A`, the low
//! 10 bits `I` the time since the previous annotation. Pseudo-codes: `SKIP` (59, a 32-bit
//! interval follows, high half first), `NUM` (60), `SUB` (61), `CHN` (62) and `AUX` (63, `I`
//! bytes of text follow, padded to an even length) modify the annotation read just before
//! them (`SKIP` the next one); `NUM` and `CHN` persist for later annotations. `A = 0, I = 0`
//! ends the file.

use std::path::Path;

use crate::error::{DatasetError, Result};
use crate::paths;

/// One annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Sample index (time) of the annotation.
    pub sample: u64,
    /// Annotation code (1–49; 0 is `NOTQRS`).
    pub code: u8,
    /// Subtype.
    pub subtype: i16,
    /// Channel.
    pub chan: u16,
    /// Annotator number.
    pub num: i16,
    /// Auxiliary text (rhythm strings such as `(AFIB` on `+` annotations).
    pub aux: Option<String>,
}

impl Annotation {
    /// The WFDB mnemonic symbol of this annotation's code (`N`, `V`, `+`, `(`, ...).
    pub fn symbol(&self) -> &'static str {
        symbol(self.code)
    }
}

const SKIP: u16 = 59;
const NUM: u16 = 60;
const SUB: u16 = 61;
const CHN: u16 = 62;
const AUX: u16 = 63;

/// Symbols of the WFDB annotation codes 0–49 (`ecgcodes.h`); unassigned codes are `[n]`.
const SYMBOLS: [&str; 50] = [
    " ", "N", "L", "R", "a", "V", "F", "J", "A", "S", "E", "j", "/", "Q", "~", "[15]", "|", "[17]",
    "s", "T", "*", "D", "\"", "=", "p", "B", "^", "t", "+", "u", "?", "!", "[", "]", "e", "n", "@",
    "x", "f", "(", ")", "r", "[42]", "[43]", "[44]", "[45]", "[46]", "[47]", "[48]", "[49]",
];

/// The WFDB mnemonic symbol of annotation `code`.
pub fn symbol(code: u8) -> &'static str {
    SYMBOLS.get(code as usize).copied().unwrap_or("[?]")
}

/// The 19 MIT beat annotation symbols.
pub const BEAT_SYMBOLS: [&str; 19] = [
    "N", "L", "R", "B", "A", "a", "J", "S", "V", "r", "F", "e", "j", "n", "E", "/", "f", "Q", "?",
];

/// Whether `symbol` is one of the 19 MIT beat annotation symbols.
pub fn is_beat(symbol: &str) -> bool {
    BEAT_SYMBOLS.contains(&symbol)
}

/// Reads and parses the annotation file at `path`, opened under the rules of [`paths`] (at
/// most [`paths::MAX_FILE_BYTES`]).
pub fn read_annotations(path: &Path) -> Result<Vec<Annotation>> {
    let file = paths::open_listed(path).map_err(|e| e.at(path))?;
    read_opened(&file, path)
}

/// Like [`read_annotations`], but `Ok(None)` when no file exists at `path`.
pub fn read_annotations_if_present(path: &Path) -> Result<Option<Vec<Annotation>>> {
    match paths::open_listed_if_present(path).map_err(|e| e.at(path))? {
        Some(file) => read_opened(&file, path).map(Some),
        None => Ok(None),
    }
}

fn read_opened(file: &paths::CheckedFile, path: &Path) -> Result<Vec<Annotation>> {
    let bytes = file
        .read_all(paths::MAX_FILE_BYTES)
        .map_err(|e| e.at(path))?;
    parse_annotations(&bytes, path)
}

/// Parses MIT-format annotation bytes; `path` is only used in error messages.
pub fn parse_annotations(bytes: &[u8], path: &Path) -> Result<Vec<Annotation>> {
    let err = |index: usize, reason: String| DatasetError::Annotation {
        path: path.to_path_buf(),
        index,
        reason,
    };
    let mut out: Vec<Annotation> = Vec::new();
    let mut time: u64 = 0;
    let (mut num, mut chan) = (0i16, 0u16);
    let mut pos = 0usize;
    let mut index = 0usize;
    let word_at = |pos: usize| -> Option<u16> {
        bytes
            .get(pos..pos + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    loop {
        let Some(word) = word_at(pos) else {
            if pos == bytes.len() {
                break; // tolerated: file ends without the 0-word terminator
            }
            return Err(err(index, format!("odd trailing byte at offset {pos}")));
        };
        pos += 2;
        let (a, i) = (word >> 10, word & 0x3ff);
        match a {
            0 if i == 0 => break,
            SKIP => {
                let (Some(hi), Some(lo)) = (word_at(pos), word_at(pos + 2)) else {
                    return Err(err(
                        index,
                        "SKIP without its 4-byte interval (file truncated)".into(),
                    ));
                };
                pos += 4;
                let interval = (((hi as u32) << 16) | lo as u32) as i32;
                time = time.checked_add_signed(interval as i64).ok_or_else(|| {
                    err(
                        index,
                        format!("SKIP interval {interval} moves time before 0"),
                    )
                })?;
            }
            NUM | SUB | CHN | AUX => {
                let Some(last) = out.last_mut() else {
                    return Err(err(
                        index,
                        format!("pseudo-annotation {a} before any annotation"),
                    ));
                };
                match a {
                    NUM => {
                        num = (i as i16) << 6 >> 6;
                        last.num = num;
                    }
                    SUB => last.subtype = (i as i16) << 6 >> 6,
                    CHN => {
                        chan = i;
                        last.chan = chan;
                    }
                    _ => {
                        let len = i as usize;
                        let text = bytes.get(pos..pos + len).ok_or_else(|| {
                            err(
                                index,
                                format!("AUX of {len} bytes runs past the end of the file"),
                            )
                        })?;
                        let text = text.split(|&b| b == 0).next().unwrap_or(text);
                        last.aux = Some(String::from_utf8_lossy(text).into_owned());
                        pos += len + (len & 1);
                    }
                }
            }
            code => {
                if code > 49 {
                    return Err(err(
                        index,
                        format!("annotation code {code} is out of range"),
                    ));
                }
                time = time
                    .checked_add(u64::from(i))
                    .ok_or_else(|| err(index, "annotation time passes 2^64 samples".into()))?;
                out.push(Annotation {
                    sample: time,
                    code: code as u8,
                    subtype: 0,
                    chan,
                    num,
                    aux: None,
                });
            }
        }
        index += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(a: u16, i: u16) -> [u8; 2] {
        ((a << 10) | i).to_le_bytes()
    }

    #[test]
    fn beats_rhythm_aux_skip_num_sub_chn() {
        let mut b = Vec::new();
        b.extend(w(28, 18)); // '+' at 18
        b.extend(w(63, 5));
        b.extend(b"(AFIB\0");
        b.extend(w(1, 100)); // N at 118
        b.extend(w(61, 2)); // SUB 2 for that N
        b.extend(w(62, 1)); // CHN 1 from now on
        b.extend(w(59, 0)); // SKIP 70000
        b.extend(0x0001u16.to_le_bytes());
        b.extend(0x1170u16.to_le_bytes());
        b.extend(w(5, 10)); // V at 118 + 70000 + 10
        b.extend(w(60, 3)); // NUM 3
        b.extend(w(0, 0));
        let a = parse_annotations(&b, Path::new("r.atr")).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            (a[0].sample, a[0].symbol(), a[0].aux.as_deref()),
            (18, "+", Some("(AFIB"))
        );
        assert_eq!(
            (a[1].sample, a[1].symbol(), a[1].subtype, a[1].chan),
            (118, "N", 2, 1)
        );
        assert_eq!(
            (a[2].sample, a[2].symbol(), a[2].chan, a[2].num),
            (70128, "V", 1, 3)
        );
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let p = Path::new("r.atr");
        assert!(parse_annotations(&[0x01], p).is_err());
        let mut b = Vec::new();
        b.extend(w(28, 1));
        b.extend(w(63, 40));
        b.extend(b"(N");
        assert!(
            parse_annotations(&b, p)
                .unwrap_err()
                .to_string()
                .contains("runs past")
        );
        assert!(
            parse_annotations(&w(60, 1), p)
                .unwrap_err()
                .to_string()
                .contains("before any")
        );
        assert_eq!(parse_annotations(&[], p).unwrap(), vec![]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_times_never_decrease(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(a) = parse_annotations(&bytes, Path::new("f.atr")) {
                // SKIP may move backwards, so only check that parsing produced sane codes.
                proptest::prop_assert!(a.iter().all(|x| x.code <= 49));
            }
        }

        #[test]
        fn encoded_annotations_round_trip(items in proptest::collection::vec((1u16..50, 0u16..1024), 0..200)) {
            let mut b = Vec::new();
            let mut expect = Vec::new();
            let mut t = 0u64;
            for &(a, i) in &items {
                if (59..=63).contains(&a) { continue; }
                b.extend(w(a, i));
                t += i as u64;
                expect.push((t, a as u8));
            }
            b.extend(w(0, 0));
            let got: Vec<_> = parse_annotations(&b, Path::new("f.atr")).unwrap().iter().map(|x| (x.sample, x.code)).collect();
            proptest::prop_assert_eq!(got, expect);
        }
    }
}
