//! ECG segments (one store row each), segmentation of records into windows or beat-centred
//! windows, and the canonical content hash.

use sha2::{Digest, Sha256};

use crate::annotation::{Annotation, is_beat};
use crate::demographics::Sex;
use crate::labels;

/// One ECG segment: the unit of data of a site store (schema v1, see docs/datasets.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Source database id.
    pub source: String,
    /// Record name as in the source.
    pub record_id: String,
    /// Patient id as known at the site.
    pub patient: String,
    /// Site name given at ingest.
    pub site: String,
    /// Sampling rate of `signal` in Hz.
    pub fs: f32,
    /// Lead names, in signal order.
    pub leads: Vec<String>,
    /// First sample of the window in the original record.
    pub start_sample: u64,
    /// Window length in samples of the original record.
    pub n_samples: u32,
    /// Samples in mV, lead-major.
    pub signal: Vec<f32>,
    /// Normalised label.
    pub label: String,
    /// Source codes, verbatim.
    pub label_raw: Vec<String>,
    /// Age in years, `None` when unknown.
    pub age: Option<u8>,
    /// Sex, `None` when unknown.
    pub sex: Option<Sex>,
}

/// Domain-separation tag that starts every canonical segment encoding.
pub const HASH_TAG: &[u8] = b"ecgfed-segment-v2";

/// Borrowed fields of a segment that its content hash covers: enough to hash a row straight
/// from Arrow columns without copying the signal.
#[derive(Debug, Clone, Copy)]
pub struct SegmentView<'a> {
    /// Source database id.
    pub source: &'a str,
    /// Record name.
    pub record_id: &'a str,
    /// First sample of the window.
    pub start_sample: u64,
    /// Window length in samples of the original record.
    pub n_samples: u32,
    /// Sampling rate in Hz.
    pub fs: f32,
    /// Lead names.
    pub leads: &'a [&'a str],
    /// Samples in mV, lead-major.
    pub signal: &'a [f32],
    /// Normalised label.
    pub label: &'a str,
    /// Source codes.
    pub label_raw: &'a [&'a str],
    /// Age in years.
    pub age: Option<u8>,
    /// Sex code (`M`, `F`).
    pub sex: Option<&'a str>,
}

fn put_str(out: &mut impl FnMut(&[u8]), s: &str) {
    out(&(s.len() as u32).to_le_bytes());
    out(s.as_bytes());
}

fn put_strs(out: &mut impl FnMut(&[u8]), v: &[&str]) {
    out(&(v.len() as u32).to_le_bytes());
    for s in v {
        put_str(out, s);
    }
}

/// BLAKE3 of the samples as stored: each sample's IEEE 754 bits, little-endian, lead-major
/// (docs/datasets.md, "Content hash"). The samples are hashed as one input of their own so
/// that BLAKE3 runs at its full SIMD width; the encoding then carries this digest.
pub fn signal_digest(signal: &[f32]) -> [u8; 32] {
    if cfg!(target_endian = "little") {
        use arrow::datatypes::ToByteSlice;
        blake3::hash(signal.to_byte_slice()).into()
    } else {
        let mut h = blake3::Hasher::new();
        for v in signal {
            h.update(&v.to_bits().to_le_bytes());
        }
        h.finalize().into()
    }
}

impl SegmentView<'_> {
    /// Feeds the canonical encoding (docs/datasets.md, "Content hash") to `out`, in pieces.
    pub fn encode(&self, out: &mut impl FnMut(&[u8])) {
        self.encode_digested(self.signal.len() as u64, &signal_digest(self.signal), out);
    }

    /// The canonical encoding with the samples given as their count and
    /// [`signal_digest`] (`self.signal` is not read): what lets a gateway hash a row as it
    /// will serve it without reading the samples again.
    pub fn encode_digested(&self, samples: u64, digest: &[u8; 32], out: &mut impl FnMut(&[u8])) {
        out(HASH_TAG);
        put_str(out, self.source);
        put_str(out, self.record_id);
        out(&self.start_sample.to_le_bytes());
        out(&self.n_samples.to_le_bytes());
        out(&self.fs.to_bits().to_le_bytes());
        put_strs(out, self.leads);
        out(&samples.to_le_bytes());
        out(digest);
        put_str(out, self.label);
        put_strs(out, self.label_raw);
        match self.age {
            Some(a) => out(&[1, a]),
            None => out(&[0]),
        }
        match self.sex {
            Some(s) => {
                out(&[1]);
                put_str(out, s);
            }
            None => out(&[0]),
        }
    }

    /// SHA-256 of the canonical encoding.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        self.encode(&mut |b| h.update(b));
        h.finalize().into()
    }

    /// SHA-256 of [`SegmentView::encode_digested`]: the content hash from the samples' count
    /// and digest.
    pub fn content_hash_digested(&self, samples: u64, digest: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        self.encode_digested(samples, digest, &mut |b| h.update(b));
        h.finalize().into()
    }
}

impl Segment {
    /// `<source>/<record>@<start_sample>`.
    pub fn segment_id(&self) -> String {
        format!("{}/{}@{}", self.source, self.record_id, self.start_sample)
    }

    /// Calls `f` with a borrowed view of the hashed fields.
    pub fn with_view<R>(&self, f: impl FnOnce(&SegmentView<'_>) -> R) -> R {
        let leads: Vec<&str> = self.leads.iter().map(String::as_str).collect();
        let raw: Vec<&str> = self.label_raw.iter().map(String::as_str).collect();
        f(&SegmentView {
            source: &self.source,
            record_id: &self.record_id,
            start_sample: self.start_sample,
            n_samples: self.n_samples,
            fs: self.fs,
            leads: &leads,
            signal: &self.signal,
            label: &self.label,
            label_raw: &raw,
            age: self.age,
            sex: self.sex.map(|s| s.code()),
        })
    }

    /// The canonical byte encoding hashed into `content_hash` (docs/datasets.md, "Content
    /// hash"). Site and patient are not part of it: the same recording has the same hash at
    /// any site and after pseudonymisation.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        self.with_view(|v| v.encode(&mut |x| b.extend_from_slice(x)));
        b
    }

    /// SHA-256 of [`Segment::canonical_bytes`].
    pub fn content_hash(&self) -> [u8; 32] {
        self.with_view(|v| v.content_hash())
    }
}

/// How records are cut into segments.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Segmentation {
    /// Fixed windows of `secs` seconds (0 = whole record), labelled by the rhythm in force.
    Windows {
        /// Window length in seconds.
        secs: f64,
    },
    /// Windows of `secs` seconds centred on each beat annotation, labelled with its AAMI class;
    /// records without beat annotations fall back to fixed windows of `fallback_secs`.
    Beats {
        /// Window length in seconds.
        secs: f64,
        /// Window length for records without beat annotations.
        fallback_secs: f64,
    },
}

impl Default for Segmentation {
    fn default() -> Self {
        Segmentation::Windows { secs: 10.0 }
    }
}

/// Where a window's label came from (counted per source in the manifest's `window_labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LabelOrigin {
    /// Rhythm or beat annotations (`.atr`).
    Annotation,
    /// The header: `#Dx` codes, LUDB's `Rhythm:`, a free-text diagnosis phrase.
    Header,
    /// A label file beside the records (CinC 2017 `REFERENCE.csv`).
    LabelFile,
    /// No source states the rhythm: labelled `unknown`.
    Unknown,
}

impl LabelOrigin {
    /// Name in the manifest: `annotation`, `header`, `label_file`, `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            LabelOrigin::Annotation => "annotation",
            LabelOrigin::Header => "header",
            LabelOrigin::LabelFile => "label_file",
            LabelOrigin::Unknown => "unknown",
        }
    }
}

/// A window of a record with its label, before the signal is cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// First sample.
    pub start: u64,
    /// Length in samples.
    pub len: u64,
    /// Normalised label.
    pub label: String,
    /// Source codes.
    pub raw: Vec<String>,
    /// Codes no mapping table knows.
    pub unmapped: Vec<String>,
    /// Where the label came from.
    pub origin: LabelOrigin,
}

/// Fixed windows of `win` samples over a record of `n` samples: consecutive, non-overlapping;
/// a trailing remainder shorter than a window is not stored; a record shorter than one window
/// (or `win == 0`) is one window.
pub fn fixed_windows(n: u64, win: u64) -> Vec<(u64, u64)> {
    if n == 0 {
        return vec![];
    }
    if win == 0 || n <= win {
        return vec![(0, n)];
    }
    (0..n / win).map(|k| (k * win, win)).collect()
}

/// A rhythm interval from MIT `+` annotations: (start sample, aux string).
pub fn rhythm_changes(ann: &[Annotation]) -> Vec<(u64, String)> {
    ann.iter()
        .filter(|a| a.symbol() == "+")
        .filter_map(|a| {
            let aux = a.aux.as_deref()?.trim_end_matches('\0').trim();
            (!aux.is_empty()).then(|| (a.sample, aux.to_string()))
        })
        .collect()
}

/// Labels a window `[start, start+len)` by the rhythm in force for most of its samples.
/// Samples before the first rhythm annotation take `before` (a rhythm the header states for
/// the whole record) or count as `unknown`.
pub fn label_by_rhythm(
    changes: &[(u64, String)],
    start: u64,
    len: u64,
    before: Option<&labels::Label>,
) -> Window {
    let end = start + len;
    let mut cover: Vec<(String, u64)> = Vec::new(); // aux → samples covered, in order seen
    let mut add = |aux: &str, n: u64| {
        if n == 0 {
            return;
        }
        match cover.iter_mut().find(|(a, _)| a == aux) {
            Some((_, c)) => *c += n,
            None => cover.push((aux.to_string(), n)),
        }
    };
    let first = changes.first().map_or(u64::MAX, |c| c.0);
    if start < first {
        add("", end.min(first) - start);
    }
    for (i, (s, aux)) in changes.iter().enumerate() {
        let e = changes.get(i + 1).map_or(u64::MAX, |c| c.0);
        let (a, b) = ((*s).max(start), e.min(end));
        if a < b {
            add(aux, b - a);
        }
    }
    let best = cover
        .iter()
        .max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0)))
        .map(|(a, _)| a.clone())
        .unwrap_or_default();
    let (label, origin) = match (best.is_empty(), before) {
        (false, _) => (
            labels::mit_rhythm(&best).unwrap_or(labels::OTHER),
            LabelOrigin::Annotation,
        ),
        (true, Some(b)) => (b.label.as_str(), LabelOrigin::Header),
        (true, None) => (labels::UNKNOWN, LabelOrigin::Unknown),
    };
    let raw: Vec<String> = cover
        .iter()
        .flat_map(|(a, _)| match (a.is_empty(), before) {
            (false, _) => vec![a.clone()],
            (true, Some(b)) => b.raw.clone(),
            (true, None) => vec![],
        })
        .collect();
    let unmapped = cover
        .iter()
        .filter(|(a, _)| !a.is_empty() && labels::mit_rhythm(a).is_none())
        .map(|(a, _)| a.clone())
        .collect();
    Window {
        start,
        len,
        label: label.to_string(),
        raw,
        unmapped,
        origin,
    }
}

/// Beat-centred windows of `win` samples (clamped into the record) for every beat annotation,
/// labelled with the AAMI class (`unmapped` for beat codes outside AAMI). Two beats whose
/// clamped windows start at the same sample keep the first; the number dropped is returned.
pub fn beat_windows(ann: &[Annotation], n: u64, win: u64) -> (Vec<Window>, usize) {
    let win = win.min(n).max(1);
    let mut out: Vec<Window> = Vec::new();
    let mut dropped = 0;
    for a in ann.iter().filter(|a| is_beat(a.symbol())) {
        if a.sample >= n {
            dropped += 1;
            continue;
        }
        let start = a.sample.saturating_sub(win / 2).min(n - win);
        if out.last().is_some_and(|w| w.start == start) {
            dropped += 1;
            continue;
        }
        let sym = a.symbol();
        let (label, unmapped) = match labels::aami_class(sym) {
            Some(c) => (c, vec![]),
            None => (labels::UNMAPPED_BEAT, vec![sym.to_string()]),
        };
        out.push(Window {
            start,
            len: win,
            label: label.to_string(),
            raw: vec![sym.to_string()],
            unmapped,
            origin: LabelOrigin::Annotation,
        });
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> Segment {
        Segment {
            source: "s".into(),
            record_id: "r".into(),
            patient: "p".into(),
            site: "x".into(),
            fs: 250.0,
            leads: vec!["I".into()],
            start_sample: 2,
            n_samples: 2,
            signal: vec![1.0, f32::NAN],
            label: "N".into(),
            label_raw: vec!["N".into()],
            age: Some(7),
            sex: Some(Sex::F),
        }
    }

    #[test]
    fn signal_digest_is_plain_blake3() {
        // BLAKE3 of the empty input, from the BLAKE3 specification's test vectors.
        assert_eq!(
            hex::encode(signal_digest(&[])),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        // Little-endian bits, lead-major, nothing else.
        let v = [1.5f32, -0.25, f32::NAN];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
        assert_eq!(signal_digest(&v), *blake3::hash(&bytes).as_bytes());
    }

    #[test]
    fn a_digested_hash_is_the_content_hash_and_covers_the_digest() {
        let sig = [0.5f32, 1.0, -2.0, 3.0];
        let v = SegmentView {
            source: "mitdb",
            record_id: "100",
            start_sample: 7,
            n_samples: 2,
            fs: 360.0,
            leads: &["MLII", "V5"],
            signal: &sig,
            label: "N",
            label_raw: &["N"],
            age: Some(69),
            sex: Some("M"),
        };
        let d = signal_digest(&sig);
        let quiet = SegmentView { signal: &[], ..v };
        assert_eq!(quiet.content_hash_digested(4, &d), v.content_hash());
        assert_ne!(quiet.content_hash_digested(4, &[0; 32]), v.content_hash());
        assert_ne!(quiet.content_hash_digested(3, &d), v.content_hash());
    }

    #[test]
    fn canonical_bytes_exact_layout() {
        let b = seg().canonical_bytes();
        let mut e = b"ecgfed-segment-v2".to_vec();
        e.extend([1, 0, 0, 0, b's', 1, 0, 0, 0, b'r']);
        e.extend(2u64.to_le_bytes());
        e.extend(2u32.to_le_bytes());
        e.extend(250f32.to_le_bytes());
        e.extend([1, 0, 0, 0, 1, 0, 0, 0, b'I']);
        e.extend(2u64.to_le_bytes());
        // The samples enter as BLAKE3 of their little-endian bits (1.0 and the quiet NaN).
        e.extend(blake3::hash(&[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0xc0, 0x7f]).as_bytes());
        e.extend([1, 0, 0, 0, b'N', 1, 0, 0, 0, 1, 0, 0, 0, b'N']);
        e.extend([1, 7, 1, 1, 0, 0, 0, b'F']);
        assert_eq!(b, e);
        assert_eq!(seg().content_hash(), <[u8; 32]>::from(Sha256::digest(&e)));
        // Site and patient are not hashed; every hashed field is.
        let mut other = seg();
        other.site = "elsewhere".into();
        other.patient = "q".into();
        assert_eq!(other.content_hash(), seg().content_hash());
        other.signal[0] = 1.0000001;
        assert_ne!(other.content_hash(), seg().content_hash());
        let mut other = seg();
        other.sex = None;
        assert_ne!(other.content_hash(), seg().content_hash());
    }

    #[test]
    fn windows() {
        assert_eq!(fixed_windows(25, 10), vec![(0, 10), (10, 10)]);
        assert_eq!(fixed_windows(7, 10), vec![(0, 7)]);
        assert_eq!(fixed_windows(7, 0), vec![(0, 7)]);
        assert!(fixed_windows(0, 10).is_empty());
    }

    #[test]
    fn rhythm_majority_and_raw_codes() {
        let ch = vec![
            (0u64, "(N".to_string()),
            (14, "(AFIB".to_string()),
            (30, "(XYZ".to_string()),
        ];
        let w = label_by_rhythm(&ch, 10, 10, None);
        assert_eq!(
            (w.label.as_str(), w.raw.clone()),
            (
                labels::ATRIAL_FIBRILLATION,
                vec!["(N".to_string(), "(AFIB".to_string()]
            )
        );
        let w = label_by_rhythm(&ch, 30, 10, None);
        assert_eq!(
            (w.label.as_str(), w.unmapped.clone()),
            (labels::OTHER, vec!["(XYZ".to_string()])
        );
        let w = label_by_rhythm(&[(5, "(N".to_string())], 0, 20, None);
        assert_eq!(w.label, labels::SINUS_RHYTHM);
        let w = label_by_rhythm(&[(15, "(N".to_string())], 0, 20, None);
        assert_eq!(
            (w.label.as_str(), w.origin),
            (labels::UNKNOWN, LabelOrigin::Unknown)
        );
    }

    #[test]
    fn before_the_first_annotation_a_whole_record_header_rhythm_holds() {
        let persistent = labels::Label {
            label: labels::ATRIAL_FIBRILLATION.into(),
            raw: vec!["persistent atrial fibrillation".into()],
            unmapped: vec![],
        };
        let ch = [(15, "(N".to_string())];
        let w = label_by_rhythm(&ch, 0, 20, Some(&persistent));
        assert_eq!(
            (w.label.as_str(), w.origin),
            (labels::ATRIAL_FIBRILLATION, LabelOrigin::Header)
        );
        assert_eq!(w.raw, vec!["persistent atrial fibrillation", "(N"]);
        assert!(w.unmapped.is_empty());
        // Mostly annotated: the annotation wins.
        let w = label_by_rhythm(&ch, 10, 20, Some(&persistent));
        assert_eq!(
            (w.label.as_str(), w.origin),
            (labels::SINUS_RHYTHM, LabelOrigin::Annotation)
        );
    }
}
