//! HL7 aECG files (the FDA's annotated ECG, HL7 v3 `PORT_MT020001`, XML) read into a
//! [`Record`] with the `roxmltree` crate (a read-only XML tree that refuses DTDs, so no entity
//! expansion reaches us).
//!
//! Mapping to a record:
//!
//! - A file is an aECG when it is `.xml` and its root element is `AnnotatedECG` in the HL7 v3
//!   namespace (`urn:hl7-org:v3`).
//! - The record is the first `component/sequenceSet` of the first `component/series` of the
//!   root (the rhythm data; `series/derivation/derivedSeries`, the representative beats, is
//!   never read). Other sequence sets are named in an `aecg_sequence_set_skipped` warning.
//! - The time sequence (`TIME_ABSOLUTE` or `TIME_RELATIVE`, `GLIST_TS`/`GLIST_PQ`) gives the
//!   sample period: `increment` in `s` or `ms`; fs = 1 / period.
//! - Every other sequence of the set is a lead (`SLIST_PQ`): value = `origin` + `scale` ×
//!   digit, in the units of `scale` (`uV`, `mV`, `V`; `origin` in its own units), converted to
//!   mV. Lead names: the code after `MDC_ECG_LEAD_`, with `AVR`, `AVL`, `AVF` written `aVR`,
//!   `aVL`, `aVF`; other codes are kept whole. Every lead must have as many digits as the
//!   first.
//! - Patient: `trialSubject/id@extension` is the patient id at the site; sex from
//!   `administrativeGenderCode@code` (`M`/`F`); age from a `Reported Age` observation (LOINC
//!   21612-7, unit `a`), else whole years from `birthTime` to the ECG's `effectiveTime`. The
//!   name (initials) and birth time are never kept.
//! - Interpretation statements (`annotation` with a code starting `MDC_ECG_INTERPRETATION`
//!   and a text value) are header comments: the diagnosis phrase table applies.

use std::path::Path;

use roxmltree::{Document, Node};

use crate::demographics::{age_between, yyyymmdd};
use crate::error::{DatasetError, Result};
use crate::header::{Header, SignalSpec};
use crate::paths;
use crate::record::{Record, RecordWarning};

/// The HL7 v3 namespace of aECG elements.
pub const HL7_V3: &str = "urn:hl7-org:v3";

fn bad(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::signal(path, "*", reason.into())
}

/// Whether `path` names an aECG file: `.xml` and an `AnnotatedECG` element in its first
/// 4 kB (read through [`paths`]).
pub fn is_aecg(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
        && paths::open_listed(path)
            .ok()
            .and_then(|f| f.read_range(0, f.len().min(4096)).ok())
            .is_some_and(|b| b.windows(13).any(|w| w == b"<AnnotatedECG"))
}

/// Reads the aECG file at `path` (opened under the rules of [`paths`], at most
/// [`paths::MAX_TEXT_BYTES`]) as a record.
pub fn load(path: &Path) -> Result<Record> {
    let bytes = paths::open_listed(path)
        .and_then(|f| f.read_all(paths::MAX_TEXT_BYTES))
        .map_err(|e| e.at(path))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|e| bad(path, format!("not UTF-8 text: {e}")))?;
    parse(text, path)
}

/// The first child element of `n` with local name `name` in the HL7 v3 namespace.
fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| is(c, name))
}

fn is(n: &Node, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(HL7_V3)
}

/// Children of `n` named `a` with a child named `b`: `a/b` steps.
fn path_of<'a, 'i>(
    n: Node<'a, 'i>,
    a: &'a str,
    b: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| is(c, a))
        .filter_map(move |c| child(c, b))
}

fn attr<'a>(n: Option<Node<'a, '_>>, name: &str) -> Option<&'a str> {
    n?.attribute(name)
}

/// Lead name of an aECG sequence code.
fn lead_name(code: &str) -> String {
    match code.strip_prefix("MDC_ECG_LEAD_") {
        Some("AVR") => "aVR".into(),
        Some("AVL") => "aVL".into(),
        Some("AVF") => "aVF".into(),
        Some(l) => l.to_string(),
        None => code.to_string(),
    }
}

/// Millivolts per unit of a UCUM voltage unit, `None` for other units.
fn mv_per(unit: &str) -> Option<f64> {
    SignalSpec::millivolts_per(unit)
}

/// Parses aECG text; `path` names the file in errors and gives the record id.
pub fn parse(text: &str, path: &Path) -> Result<Record> {
    let doc = Document::parse(text).map_err(|e| bad(path, format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    if !is(&root, "AnnotatedECG") {
        return Err(bad(
            path,
            format!(
                "root element `{}` is not an HL7 aECG `AnnotatedECG` ({HL7_V3})",
                root.tag_name().name()
            ),
        ));
    }
    let id = crate::record::record_id(path);
    let series = path_of(root, "component", "series")
        .next()
        .ok_or_else(|| bad(path, "no component/series"))?;
    let mut sets = path_of(series, "component", "sequenceSet");
    let set = sets
        .next()
        .ok_or_else(|| bad(path, "the series has no component/sequenceSet"))?;
    let mut warnings = Vec::new();
    let others = sets.count();
    if others > 0 {
        warnings.push(RecordWarning {
            kind: "aecg_sequence_set_skipped".into(),
            record: id.clone(),
            detail: format!(
                "{}: the first sequence set of the series was read, {others} more were not",
                path.display()
            ),
        });
    }
    let mut period = None;
    let mut leads: Vec<(String, String, Vec<f32>)> = Vec::new();
    for seq in path_of(set, "component", "sequence") {
        let code = attr(child(seq, "code"), "code").unwrap_or_default();
        let value =
            child(seq, "value").ok_or_else(|| bad(path, format!("sequence {code}: no value")))?;
        if code.starts_with("TIME_") {
            let inc = child(value, "increment")
                .ok_or_else(|| bad(path, format!("{code}: no increment")))?;
            let v: f64 = inc
                .attribute("value")
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| bad(path, format!("{code}: increment is not a number")))?;
            let scale = match inc.attribute("unit").unwrap_or("s") {
                "s" => 1.0,
                "ms" => 1e-3,
                u => {
                    return Err(bad(
                        path,
                        format!("{code}: increment unit `{u}` is not s or ms"),
                    ));
                }
            };
            let p = v * scale;
            if !(p.is_finite() && p > 0.0) {
                return Err(bad(path, format!("{code}: increment {v} is not positive")));
            }
            period = Some(p);
            continue;
        }
        let name = lead_name(code);
        let quantity = |what: &str| -> Result<(f64, String)> {
            let n =
                child(value, what).ok_or_else(|| bad(path, format!("lead {name}: no {what}")))?;
            let v: f64 = n
                .attribute("value")
                .and_then(|v| v.trim().parse().ok())
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| bad(path, format!("lead {name}: {what} is not a number")))?;
            Ok((v, n.attribute("unit").unwrap_or("").to_string()))
        };
        let (origin, origin_unit) = quantity("origin")?;
        let (scale, unit) = quantity("scale")?;
        let digits = child(value, "digits")
            .and_then(|d| d.text())
            .ok_or_else(|| bad(path, format!("lead {name}: no digits")))?;
        let values = match (mv_per(&unit), mv_per(&origin_unit).or(mv_per(&unit))) {
            (Some(s_mv), Some(o_mv)) => digits
                .split_ascii_whitespace()
                .map(|d| {
                    d.parse::<f64>()
                        .map(|d| ((origin * o_mv) + scale * d * s_mv) as f32)
                        .map_err(|_| bad(path, format!("lead {name}: digit `{d}` is not a number")))
                })
                .collect::<Result<Vec<f32>>>()?,
            _ => Vec::new(),
        };
        leads.push((name, unit, values));
    }
    let period = period.ok_or_else(|| bad(path, "the sequence set has no time sequence"))?;
    if leads.is_empty() {
        return Err(bad(path, "the sequence set has no lead"));
    }
    let n = leads
        .iter()
        .find(|(_, u, _)| mv_per(u).is_some())
        .map_or(0, |(_, _, v)| v.len());
    if let Some((name, _, v)) = leads
        .iter()
        .find(|(_, u, v)| mv_per(u).is_some() && v.len() != n)
    {
        return Err(bad(
            path,
            format!("lead {name} has {} samples, the first lead {n}", v.len()),
        ));
    }

    // Patient.
    let mut comments = Vec::new();
    let subject = root.descendants().find(|d| is(d, "trialSubject"));
    let person = subject.and_then(|s| child(s, "subjectDemographicPerson"));
    let patient = attr(subject.and_then(|s| child(s, "id")), "extension")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(sex) = attr(
        person.and_then(|p| child(p, "administrativeGenderCode")),
        "code",
    )
    .filter(|s| *s == "M" || *s == "F")
    {
        comments.push(format!("<sex>: {sex}"));
    }
    let reported = root
        .descendants()
        .filter(|d| is(d, "relatedObservation"))
        .find(|o| attr(child(*o, "code"), "code") == Some("21612-7"))
        .and_then(|o| child(o, "value"))
        .filter(|v| v.attribute("unit") == Some("a"))
        .and_then(|v| v.attribute("value")?.trim().parse::<f64>().ok())
        .filter(|a| (0.0..=120.0).contains(a))
        .map(|a| a as u8);
    let age = reported.or_else(|| {
        let birth = yyyymmdd(attr(person.and_then(|p| child(p, "birthTime")), "value")?)?;
        let time = child(root, "effectiveTime")?;
        let at = time
            .children()
            .filter(|c| is(c, "center") || is(c, "low"))
            .find_map(|c| yyyymmdd(c.attribute("value")?))?;
        age_between(birth, at)
    });
    if let Some(age) = age {
        comments.push(format!("<age>: {age}"));
    }
    for a in root.descendants().filter(|d| is(d, "annotation")) {
        let code = attr(child(a, "code"), "code").unwrap_or_default();
        if code.starts_with("MDC_ECG_INTERPRETATION")
            && let Some(t) = child(a, "value")
                .and_then(|v| v.text())
                .and_then(crate::labels::statement)
        {
            comments.push(t);
        }
    }

    let mut specs = Vec::with_capacity(leads.len());
    let mut physical = Vec::with_capacity(leads.len());
    for (name, unit, values) in leads {
        let voltage = mv_per(&unit).is_some();
        specs.push(SignalSpec::converted(path, name, unit, 1));
        physical.push(voltage.then_some(values));
    }
    let header = Header {
        path: path.to_path_buf(),
        record_name: id.clone(),
        fs: 1.0 / period,
        n_samples: Some(n as u64),
        base_time: None,
        base_date: None,
        signals: specs,
        comments,
    };
    Ok(Record::from_physical(
        id,
        header,
        physical,
        n as u64,
        text.len() as u64,
        warnings,
        patient,
    ))
}
