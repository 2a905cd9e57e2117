//! WFDB header (`.hea`) parser.
//!
//! Follows the `header(5)` specification of the WFDB library: a record line, one line per
//! signal, and `#` comment lines anywhere. Accepts CRLF or LF line endings, record names
//! written with an extension (as in the CinC 2020 Georgia headers: `E00271.mat 12 500 ...`),
//! and units in any case (`1000/mv`). A multi-segment header (`name/n` on the record line,
//! then one `segment length` line per segment, `~` for a gap) is a [`MultiHeader`], read with
//! [`read_any_header`]; [`read_header`] is for single-segment headers.
//! A signal file name must be a plain file name ([`paths::check_name`]): `../x`, `/abs/x`
//! or `/dev/zero` is an error naming the header line. Every field is parsed char by char
//! (non-ASCII text is an error, never a panic).

use std::path::{Path, PathBuf};

use crate::error::{DatasetError, Result};
use crate::paths;

/// One parsed WFDB header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Header file it was read from (used in error messages).
    pub path: PathBuf,
    /// Record name exactly as written on the record line (may carry an extension).
    pub record_name: String,
    /// Sampling frequency in Hz (WFDB default 250 when absent).
    pub fs: f64,
    /// Number of samples per signal, when the header gives it.
    pub n_samples: Option<u64>,
    /// Base time field (`hh:mm:ss`), verbatim.
    pub base_time: Option<String>,
    /// Base date field (`dd/mm/yyyy` or `dd-Mon-yyyy`), verbatim.
    pub base_date: Option<String>,
    /// Signal specifications, in signal order.
    pub signals: Vec<SignalSpec>,
    /// Comment lines without the leading `#`, trailing whitespace removed.
    pub comments: Vec<String>,
}

/// A parsed header of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyHeader {
    /// An ordinary record: signal lines naming signal files.
    Single(Header),
    /// A multi-segment record: segment lines naming single-segment records of its folder.
    Multi(MultiHeader),
}

/// A multi-segment header (`header(5)`): a record made of consecutive segments, each a
/// single-segment record of the same folder, or a gap (`~`).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiHeader {
    /// Header file it was read from (used in error messages).
    pub path: PathBuf,
    /// 1-based line of the record line.
    pub line: usize,
    /// Record name (before the `/`).
    pub record_name: String,
    /// Number of signals of the record.
    pub n_signals: usize,
    /// Sampling frequency in Hz (frames per second).
    pub fs: f64,
    /// Total number of frames, when the header gives it.
    pub n_samples: Option<u64>,
    /// Base time field, verbatim.
    pub base_time: Option<String>,
    /// Base date field, verbatim.
    pub base_date: Option<String>,
    /// The segments in order.
    pub segments: Vec<SegmentRef>,
    /// Comment lines without the leading `#`.
    pub comments: Vec<String>,
}

/// One segment line of a multi-segment header.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRef {
    /// 1-based line of the header (for error messages).
    pub line: usize,
    /// Record name of the segment (its header is `<name>.hea` in the same folder); `None`
    /// for a gap (`~`).
    pub name: Option<String>,
    /// Frames in the segment.
    pub n_samples: u64,
}

/// One signal line of a header.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalSpec {
    /// 1-based line of the header this signal was read from (for error messages).
    pub line: usize,
    /// Signal file name: a plain file name in the header's folder ([`paths::check_name`]).
    pub file_name: String,
    /// Storage format code (`212`, `16`, ...), verbatim without modifiers.
    pub format: u16,
    /// Samples per frame (`x` modifier); 1 when absent.
    pub samples_per_frame: u32,
    /// Skew in frames (`:` modifier); 0 when absent.
    pub skew: u32,
    /// Byte offset of the first sample in the file (`+` modifier); 0 when absent.
    pub byte_offset: u64,
    /// ADC gain in ADC units per physical unit (WFDB default 200 when absent or 0).
    pub adc_gain: f64,
    /// Baseline in ADC units (defaults to the ADC zero).
    pub baseline: i64,
    /// Physical units as written (default `mV`).
    pub units: String,
    /// ADC resolution in bits (0 when absent).
    pub adc_resolution: u32,
    /// ADC zero.
    pub adc_zero: i64,
    /// Initial value (the first sample), when given.
    pub initial_value: Option<i64>,
    /// 16-bit checksum of all samples, when given.
    pub checksum: Option<i64>,
    /// Block size (0 when absent).
    pub block_size: u32,
    /// Signal description (lead name), may contain spaces; empty when absent.
    pub description: String,
}

impl SignalSpec {
    /// The signal of a record read in physical units by another format's reader (EDF, DICOM,
    /// aECG): the values live in the record, so the WFDB storage fields are nominal (format 16,
    /// gain 1, no offset or checksum). Empty `units` become `(none)`, not WFDB's default `mV`.
    pub fn converted(
        path: &Path,
        description: String,
        units: String,
        samples_per_frame: u32,
    ) -> SignalSpec {
        SignalSpec {
            line: 0,
            file_name: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            format: 16,
            samples_per_frame,
            skew: 0,
            byte_offset: 0,
            adc_gain: 1.0,
            baseline: 0,
            units: if units.trim().is_empty() {
                "(none)".into()
            } else {
                units
            },
            adc_resolution: 0,
            adc_zero: 0,
            initial_value: None,
            checksum: None,
            block_size: 0,
            description,
        }
    }

    /// Factor that converts this signal's physical units into millivolts, or `None` when the
    /// units are not a voltage.
    pub fn to_millivolts(&self) -> Option<f64> {
        Self::millivolts_per(&self.units)
    }

    /// Millivolts per unit of `units` (`mV`, `uV`/`µV`, `nV`, `V`, any case), or `None` when
    /// they are not a voltage.
    pub fn millivolts_per(units: &str) -> Option<f64> {
        match units.to_ascii_lowercase().as_str() {
            "mv" => Some(1.0),
            "uv" | "µv" | "μv" => Some(1e-3),
            "v" => Some(1e3),
            "nv" => Some(1e-6),
            _ => None,
        }
    }
}

/// Reads and parses the header file at `path`, opened under the rules of [`paths`] (at most
/// [`paths::MAX_TEXT_BYTES`]).
pub fn read_header(path: &Path) -> Result<Header> {
    single(read_any_header(path)?)
}

/// Reads and parses a single- or multi-segment header file at `path`, opened under the
/// rules of [`paths`] (at most [`paths::MAX_TEXT_BYTES`]).
pub fn read_any_header(path: &Path) -> Result<AnyHeader> {
    let bytes = paths::open_listed(path)
        .and_then(|f| f.read_all(paths::MAX_TEXT_BYTES))
        .map_err(|e| e.at(path))?;
    let text = String::from_utf8_lossy(&bytes);
    parse_any_header(&text, path)
}

/// A single-segment header, or an error naming the multi-segment one.
fn single(h: AnyHeader) -> Result<Header> {
    match h {
        AnyHeader::Single(h) => Ok(h),
        AnyHeader::Multi(m) => Err(err(
            &m.path,
            m.line,
            format!(
                "multi-segment record `{}/{}`: read it as one (load::load_record)",
                m.record_name,
                m.segments.len()
            ),
        )),
    }
}

fn err(path: &Path, line: usize, reason: impl Into<String>) -> DatasetError {
    DatasetError::Header {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Parses single-segment header text; `path` is only used in error messages.
pub fn parse_header(text: &str, path: &Path) -> Result<Header> {
    single(parse_any_header(text, path)?)
}

/// Parses header text of either kind; `path` is only used in error messages.
pub fn parse_any_header(text: &str, path: &Path) -> Result<AnyHeader> {
    let mut comments = Vec::new();
    let mut content: Vec<(usize, &str)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim();
        if let Some(c) = trimmed.strip_prefix('#') {
            comments.push(c.trim_end().to_string());
        } else if !trimmed.is_empty() {
            content.push((i + 1, trimmed));
        }
    }
    let Some(&(record_line_no, record_line)) = content.first() else {
        return Err(err(
            path,
            0,
            "no record line (file is empty or only comments)",
        ));
    };
    let mut fields = record_line.split_whitespace();
    let name_field = fields.next().unwrap_or_default();
    let (name_field, n_segments) = match name_field.split_once('/') {
        Some((name, n)) => {
            let n: usize = n
                .parse()
                .ok()
                .filter(|&n| n > 0 && n <= 1 << 20)
                .ok_or_else(|| {
                    err(
                        path,
                        record_line_no,
                        format!("number of segments `{n}` is not an integer from 1 to 1048576"),
                    )
                })?;
            (name, Some(n))
        }
        None => (name_field, None),
    };
    let n_signals: usize = match fields.next() {
        Some(s) => s.parse().map_err(|_| {
            err(
                path,
                record_line_no,
                format!("number of signals `{s}` is not a non-negative integer"),
            )
        })?,
        None => {
            return Err(err(
                path,
                record_line_no,
                "record line lacks the number of signals",
            ));
        }
    };
    if n_signals > 4096 {
        return Err(err(
            path,
            record_line_no,
            format!("implausible number of signals {n_signals}"),
        ));
    }
    let fs = match fields.next() {
        Some(s) => parse_frequency(s).ok_or_else(|| {
            err(
                path,
                record_line_no,
                format!("sampling frequency `{s}` is not a positive number"),
            )
        })?,
        None => 250.0,
    };
    let n_samples = match fields.next() {
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            err(
                path,
                record_line_no,
                format!("number of samples `{s}` is not a non-negative integer"),
            )
        })?),
        None => None,
    };
    // Base time then base date per the specification; some writers (CinC 2020 Georgia) put
    // the date first, so each field is classified by its shape (a time contains ':').
    let (mut base_time, mut base_date) = (None, None);
    for f in fields.by_ref().take(2) {
        if f.contains(':') && base_time.is_none() {
            base_time = Some(f.to_string());
        } else {
            base_date = Some(f.to_string());
        }
    }

    if let Some(n_segments) = n_segments {
        let lines = &content[1..];
        if lines.len() < n_segments {
            return Err(err(
                path,
                0,
                format!(
                    "record line announces {n_segments} segments but {} segment lines follow",
                    lines.len()
                ),
            ));
        }
        let segments = lines[..n_segments]
            .iter()
            .map(|&(line_no, line)| {
                parse_segment_line(line, line_no).map_err(|r| err(path, line_no, r))
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(AnyHeader::Multi(MultiHeader {
            path: path.to_path_buf(),
            line: record_line_no,
            record_name: name_field.to_string(),
            n_signals,
            fs,
            n_samples,
            base_time,
            base_date,
            segments,
            comments,
        }));
    }
    let signal_lines = &content[1..];
    if signal_lines.len() < n_signals {
        return Err(err(
            path,
            0,
            format!(
                "record line announces {n_signals} signals but {} signal lines follow",
                signal_lines.len()
            ),
        ));
    }
    let mut signals = Vec::with_capacity(n_signals);
    for &(line_no, line) in &signal_lines[..n_signals] {
        signals.push(parse_signal_line(line, line_no).map_err(|r| err(path, line_no, r))?);
    }
    Ok(AnyHeader::Single(Header {
        path: path.to_path_buf(),
        record_name: name_field.to_string(),
        fs,
        n_samples,
        base_time,
        base_date,
        signals,
        comments,
    }))
}

/// Parses a segment line `name length` (`~ length` for a gap).
fn parse_segment_line(line: &str, line_no: usize) -> Result<SegmentRef, String> {
    let mut f = line.split_whitespace();
    let name = f.next().ok_or("empty segment line")?;
    let len = f
        .next()
        .ok_or_else(|| format!("segment line for `{name}` lacks the number of samples"))?;
    let n_samples: u64 = len
        .parse()
        .map_err(|_| format!("segment length `{len}` is not a non-negative integer"))?;
    let name = if name == "~" {
        None
    } else {
        paths::check_name(format!("{name}.hea"))
            .map_err(|e| e.describe("segment record", name, "the record's folder"))?;
        Some(name.to_string())
    };
    Ok(SegmentRef {
        line: line_no,
        name,
        n_samples,
    })
}

/// `fs[/counter_freq[(base_counter)]]` → fs.
fn parse_frequency(s: &str) -> Option<f64> {
    let fs: f64 = s.split('/').next()?.parse().ok()?;
    (fs.is_finite() && fs > 0.0).then_some(fs)
}

/// Splits `s` after its leading ASCII digits (a char boundary: digits are one byte each).
fn split_digits(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

/// Parses `format[xspf][:skew][+offset]`.
fn parse_format(s: &str) -> Result<(u16, u32, u32, u64), String> {
    let bad = || format!("format field `{s}` is malformed");
    let (digits, rest) = split_digits(s);
    if digits.is_empty() {
        return Err(bad());
    }
    let format: u16 = digits.parse().map_err(|_| bad())?;
    let (mut spf, mut skew, mut offset) = (1u32, 0u32, 0u64);
    let mut chars = rest.chars();
    while let Some(tag) = chars.next() {
        let (num, after) = split_digits(chars.as_str());
        match tag {
            'x' => spf = num.parse().map_err(|_| bad())?,
            ':' => skew = num.parse().map_err(|_| bad())?,
            '+' => offset = num.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        }
        chars = after.chars();
    }
    Ok((format, spf, skew, offset))
}

/// Parses `gain[(baseline)][/units]`; returns (gain, baseline, units).
fn parse_gain(s: &str) -> Result<(f64, Option<i64>, Option<String>), String> {
    let bad = || format!("gain field `{s}` is malformed");
    let (gain_part, units) = match s.split_once('/') {
        Some((g, u)) if !u.is_empty() => (g, Some(u.to_string())),
        Some(_) => return Err(bad()),
        None => (s, None),
    };
    let (gain_str, baseline) = match gain_part.split_once('(') {
        Some((g, b)) => {
            let b = b.strip_suffix(')').ok_or_else(bad)?;
            (g, Some(b.parse::<i64>().map_err(|_| bad())?))
        }
        None => (gain_part, None),
    };
    // A negative gain is legal (an inverted signal, as in wfdb-python's `wave_4`).
    let gain: f64 = gain_str.parse().map_err(|_| bad())?;
    if !gain.is_finite() {
        return Err(bad());
    }
    Ok((gain, baseline, units))
}

fn parse_signal_line(line: &str, line_no: usize) -> Result<SignalSpec, String> {
    let mut f = line.split_whitespace();
    let file_name = f.next().ok_or("empty signal line")?.to_string();
    paths::check_name(&file_name)
        .map_err(|e| e.describe("signal file", &file_name, "the record's folder"))?;
    let format_field = f
        .next()
        .ok_or_else(|| format!("signal line for `{file_name}` lacks the format"))?;
    let (format, samples_per_frame, skew, byte_offset) = parse_format(format_field)?;
    if samples_per_frame == 0 {
        return Err(format!("samples per frame is 0 in `{format_field}`"));
    }
    let (mut adc_gain, mut baseline, mut units) = (200.0, None, None);
    if let Some(g) = f.next() {
        let (gain, b, u) = parse_gain(g)?;
        if gain != 0.0 {
            adc_gain = gain;
        }
        baseline = b;
        units = u;
    }
    let int = |name: &str, v: Option<&str>| -> Result<Option<i64>, String> {
        v.map(|s| {
            s.parse::<i64>()
                .map_err(|_| format!("{name} `{s}` is not an integer"))
        })
        .transpose()
    };
    let adc_resolution = int("ADC resolution", f.next())?.unwrap_or(0);
    let adc_zero = int("ADC zero", f.next())?.unwrap_or(0);
    let initial_value = int("initial value", f.next())?;
    let checksum = int("checksum", f.next())?;
    let block_size = int("block size", f.next())?.unwrap_or(0);
    let description = f.collect::<Vec<_>>().join(" ");
    Ok(SignalSpec {
        line: line_no,
        file_name,
        format,
        samples_per_frame,
        skew,
        byte_offset,
        adc_gain,
        baseline: baseline.unwrap_or(adc_zero),
        units: units.unwrap_or_else(|| "mV".to_string()),
        adc_resolution: u32::try_from(adc_resolution)
            .map_err(|_| format!("ADC resolution {adc_resolution} out of range"))?,
        adc_zero,
        initial_value,
        checksum,
        block_size: u32::try_from(block_size)
            .map_err(|_| format!("block size {block_size} out of range"))?,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Header {
        parse_header(text, Path::new("t.hea")).expect("parses")
    }

    #[test]
    fn mitdb_101_with_crlf() {
        let h = p(
            "101 2 360 650000\r\n101.dat 212 200 11 1024 955 29832 0 MLII\r\n\
                   101.dat 212 200 11 1024 992 19589 0 V1\r\n# 75 F 1011 654 x1\r\n# Diapres\r\n",
        );
        assert_eq!(h.record_name, "101");
        assert_eq!(h.fs, 360.0);
        assert_eq!(h.n_samples, Some(650000));
        assert_eq!(h.signals.len(), 2);
        let s = &h.signals[0];
        assert_eq!(
            (s.format, s.adc_gain, s.adc_resolution, s.adc_zero),
            (212, 200.0, 11, 1024)
        );
        assert_eq!((s.initial_value, s.checksum), (Some(955), Some(29832)));
        assert_eq!(s.baseline, 1024, "baseline defaults to the ADC zero");
        assert_eq!(s.units, "mV");
        assert_eq!(h.signals[1].description, "V1");
        assert_eq!(h.comments, vec![" 75 F 1011 654 x1", " Diapres"]);
    }

    #[test]
    fn cinc2017_time_date_trailing_space_and_mat_offset() {
        let h = p(
            "A00001 1 300 9000 05:05:15 1/05/2000 \r\nA00001.mat 16+24 1000/mV 16 0 -127 0 0 ECG \r\n",
        );
        assert_eq!(h.base_time.as_deref(), Some("05:05:15"));
        assert_eq!(h.base_date.as_deref(), Some("1/05/2000"));
        let s = &h.signals[0];
        assert_eq!((s.format, s.byte_offset, s.adc_gain), (16, 24, 1000.0));
        assert_eq!(
            (s.initial_value, s.checksum, s.description.as_str()),
            (Some(-127), Some(0), "ECG")
        );
    }

    #[test]
    fn ludb_gain_with_baseline_and_georgia_name_with_extension() {
        let h = p(
            "1 12 500 5000\n1.dat 16 1716(6)/mV 0 0 -120 -32198 0 i\n1.dat 16 1206(2)/mV 0 0 25 12402 0 ii\n\
                   1.dat 16 1 0 0 0 0 0 iii\n1.dat 16 1 0 0 0 0 0 avr\n1.dat 16 1 0 0 0 0 0 avl\n1.dat 16 1 0 0 0 0 0 avf\n\
                   1.dat 16 1 0 0 0 0 0 v1\n1.dat 16 1 0 0 0 0 0 v2\n1.dat 16 1 0 0 0 0 0 v3\n1.dat 16 1 0 0 0 0 0 v4\n\
                   1.dat 16 1 0 0 0 0 0 v5\n1.dat 16 1 0 0 0 0 0 v6\n#<age>: 51\n",
        );
        assert_eq!((h.signals[0].adc_gain, h.signals[0].baseline), (1716.0, 6));
        assert_eq!(h.signals[0].adc_zero, 0);
        let g = p(
            "E00271.mat 1 500 5000 05-May-2020 14:50:55\nE00271.mat 16+24 1000/mv 16 0 0 15270 0 I\n",
        );
        assert_eq!(g.record_name, "E00271.mat");
        assert_eq!(g.base_date.as_deref(), Some("05-May-2020"));
        assert_eq!(g.base_time.as_deref(), Some("14:50:55"));
        assert_eq!(g.signals[0].to_millivolts(), Some(1.0));
    }

    #[test]
    fn errors_name_line_and_reason() {
        let e = parse_header("x 2 360\nx.dat 212\n", Path::new("x.hea")).unwrap_err();
        assert!(e.to_string().contains("announces 2 signals but 1"), "{e}");
        let e = parse_header("x 1 abc\nx.dat 212\n", Path::new("x.hea")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.hea:1: sampling frequency `abc`"),
            "{e}"
        );
        let e = parse_header("x 1 360\nx.dat 2a2\n", Path::new("x.hea")).unwrap_err();
        assert!(e.to_string().contains("x.hea:2: format field `2a2`"), "{e}");
        let e = parse_header("x/1 2 360\nx_1 10\n", Path::new("x.hea")).unwrap_err();
        assert!(e.to_string().contains("multi-segment record `x/1`"), "{e}");
        let e = parse_any_header("x/3 2 360\nx_1 10\n", Path::new("x.hea")).unwrap_err();
        assert!(e.to_string().contains("announces 3 segments but 1"), "{e}");
        let e = parse_any_header("x/0 2 360\n", Path::new("x.hea")).unwrap_err();
        assert!(e.to_string().contains("number of segments `0`"), "{e}");
        let e = parse_any_header("x/1 2 360\n../y 10\n", Path::new("x.hea")).unwrap_err();
        assert!(e.to_string().contains("x.hea:2: segment record"), "{e}");
        assert!(parse_header("# only\n", Path::new("x.hea")).is_err());
    }

    #[test]
    fn non_ascii_format_modifier_is_an_error_not_a_panic() {
        for fmt in ["16é", "16xé", "16+2é", "16:é", "212x2é", "16\u{1F600}"] {
            let t = format!("odd 1 500 10\nodd.dat {fmt} 200/mV\n");
            let e = parse_header(&t, Path::new("odd.hea")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("odd.hea:2: format field `{fmt}` is malformed")
            );
        }
    }

    #[test]
    fn signal_file_names_must_be_plain_file_names() {
        let e = parse_header(
            "evil 1 100 1000\n/srv/outside/canary.bin 16 200/mV\n",
            Path::new("evil.hea"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "evil.hea:2: signal file name \"/srv/outside/canary.bin\" is not a plain file name \
             in the record's folder: it contains `/`"
        );
        for (name, why) in [
            ("../x", "it contains `/`"),
            ("..", "it is `.` or `..`"),
            (".", "it is `.` or `..`"),
            ("a\\b", "it contains `\\`"),
            ("a\u{1}b", "it contains a control character"),
        ] {
            let t = format!("r 2 100 10\nr.dat 16\n{name} 16\n");
            let e = parse_header(&t, Path::new("r.hea"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("r.hea:3: signal file name") && e.ends_with(why),
                "{e}"
            );
        }
        assert_eq!(p("r 1\nr.dat 16\n").signals[0].line, 2);
    }

    #[test]
    fn multi_segment_header_of_the_mimic_waveform_database() {
        // s00001-2896-10-09-01-56.hea of wfdb-python's sample data (MIMIC-III matched subset).
        let h = parse_any_header(
            "s00001-2896-10-09-01-56/2 4 125 7500 01:56:25.894 09/10/2896\n3248903_layout 0\n~ 7500\n# <age>: 60 <sex>: F\n",
            Path::new("s.hea"),
        )
        .unwrap();
        let AnyHeader::Multi(m) = h else {
            panic!("not multi-segment")
        };
        assert_eq!(
            (m.record_name.as_str(), m.n_signals, m.fs),
            ("s00001-2896-10-09-01-56", 4, 125.0)
        );
        assert_eq!(m.n_samples, Some(7500));
        assert_eq!(m.base_date.as_deref(), Some("09/10/2896"));
        assert_eq!(
            m.segments,
            vec![
                SegmentRef {
                    line: 2,
                    name: Some("3248903_layout".into()),
                    n_samples: 0
                },
                SegmentRef {
                    line: 3,
                    name: None,
                    n_samples: 7500
                },
            ]
        );
        assert_eq!(m.comments, vec![" <age>: 60 <sex>: F"]);
    }

    #[test]
    fn format_modifiers_and_defaults() {
        let h = p("r 1\nr.dat 212x2:3+512\n");
        let s = &h.signals[0];
        assert_eq!(
            (s.format, s.samples_per_frame, s.skew, s.byte_offset),
            (212, 2, 3, 512)
        );
        assert_eq!((s.adc_gain, s.units.as_str(), h.fs), (200.0, "mV", 250.0));
        assert_eq!(s.initial_value, None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,400}") {
            let _ = parse_header(&s, Path::new("f.hea"));
        }

        #[test]
        fn never_panics_on_header_like_text(
            name in "[A-Za-z0-9._/]{0,12}", n in 0usize..4, fs in "[0-9./()a-z]{0,8}",
            fmt in "[0-9x:+a]{0,8}", gain in "[0-9.()/mMvV-]{0,10}", rest in "[ 0-9a-z-]{0,30}")
        {
            let mut t = format!("{name} {n} {fs} 100\r\n");
            for _ in 0..n { t.push_str(&format!("{name}.dat {fmt} {gain} {rest}\r\n")); }
            let _ = parse_header(&t, Path::new("f.hea"));
        }

        /// Non-ASCII text (any printable character) in every field, the format modifiers and
        /// the gain and units included: an error or a header, never a panic; and a parsed
        /// header only ever names plain file names.
        #[test]
        fn never_panics_on_non_ascii_fields(
            name in "\\PC{0,12}", n in 0usize..4, fs in "(\\PC|[0-9./()]){0,10}",
            nsamp in proptest::prop_oneof![
                proptest::strategy::Just(u64::MAX.to_string()),
                proptest::strategy::Just((1u64 << 62).to_string()),
                "\\PC{0,8}",
            ],
            file in proptest::prop_oneof![
                proptest::strategy::Just("r.dat".to_string()),
                "\\PC{0,12}",
            ],
            fmt in "[0-9]{0,4}(\\PC|[x:+0-9]){0,8}",
            gain in "(\\PC|[0-9.()-]){0,10}", units in "(\\PC|[mMuUvVµ]){0,6}",
            rest in "(\\PC| ){0,40}")
        {
            let mut t = format!("{name} {n} {fs} {nsamp}\r\n");
            for _ in 0..n { t.push_str(&format!("{file} {fmt} {gain}/{units} {rest}\r\n")); }
            if let Ok(h) = parse_header(&t, Path::new("f.hea")) {
                for s in &h.signals {
                    proptest::prop_assert!(paths::check_name(&s.file_name).is_ok());
                    let _ = s.to_millivolts();
                }
            }
        }

        #[test]
        fn round_trips_generated_headers(
            nsig in 1usize..13, fs in 1u32..2000, nsamp in 0u64..10_000_000,
            gain in 1u32..5000, base in -500i64..500, init in -2048i64..2047, ck in -32768i64..32767)
        {
            let mut t = format!("rec {nsig} {fs} {nsamp}\n");
            for i in 0..nsig { t.push_str(&format!("rec.dat 16 {gain}({base})/mV 16 0 {init} {ck} 0 lead {i}\n")); }
            let h = parse_header(&t, Path::new("f.hea")).unwrap();
            proptest::prop_assert_eq!(h.signals.len(), nsig);
            proptest::prop_assert_eq!(h.fs, fs as f64);
            proptest::prop_assert_eq!(h.n_samples, Some(nsamp));
            let s = &h.signals[nsig - 1];
            proptest::prop_assert_eq!((s.adc_gain, s.baseline, s.initial_value, s.checksum), (gain as f64, base, Some(init), Some(ck)));
            proptest::prop_assert_eq!(&s.description, &format!("lead {}", nsig - 1));
        }
    }
}
