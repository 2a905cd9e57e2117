//! Normalised label vocabularies and the mapping tables from every source.
//!
//! Rhythm labels are SNOMED CT concept ids (as strings); three labels are not SNOMED concepts:
//! `other` (a stated rhythm outside the vocabulary), `noisy` (unreadable recording, CinC 2017
//! `~`) and `unknown` (the source states no rhythm). Beat labels are the AAMI EC57 classes
//! `N`, `S`, `V`, `F`, `Q`; a beat code outside the AAMI mapping is labelled `unmapped`.
//! The source's own codes are always kept verbatim in `label_raw`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{DatasetError, Result};
use crate::paths;

/// SNOMED CT 426783006: sinus rhythm.
pub const SINUS_RHYTHM: &str = "426783006";
/// SNOMED CT 164889003: atrial fibrillation.
pub const ATRIAL_FIBRILLATION: &str = "164889003";
/// SNOMED CT 164890007: atrial flutter.
pub const ATRIAL_FLUTTER: &str = "164890007";
/// SNOMED CT 427084000: sinus tachycardia.
pub const SINUS_TACHYCARDIA: &str = "427084000";
/// SNOMED CT 426177001: sinus bradycardia.
pub const SINUS_BRADYCARDIA: &str = "426177001";
/// SNOMED CT 427393009: sinus arrhythmia.
pub const SINUS_ARRHYTHMIA: &str = "427393009";
/// A stated rhythm outside the vocabulary.
pub const OTHER: &str = "other";
/// Noisy or unreadable recording.
pub const NOISY: &str = "noisy";
/// The source states no rhythm.
pub const UNKNOWN: &str = "unknown";
/// A beat code outside the AAMI mapping.
pub const UNMAPPED_BEAT: &str = "unmapped";

/// The rhythm vocabulary: (label, short name, description).
pub const RHYTHM_VOCABULARY: [(&str, &str, &str); 9] = [
    (SINUS_RHYTHM, "SR", "sinus rhythm"),
    (ATRIAL_FIBRILLATION, "AF", "atrial fibrillation"),
    (ATRIAL_FLUTTER, "AFL", "atrial flutter"),
    (SINUS_TACHYCARDIA, "STach", "sinus tachycardia"),
    (SINUS_BRADYCARDIA, "SBrad", "sinus bradycardia"),
    (SINUS_ARRHYTHMIA, "SA", "sinus arrhythmia"),
    (OTHER, "other", "other stated rhythm"),
    (NOISY, "noisy", "noisy or unreadable"),
    (UNKNOWN, "unknown", "no rhythm stated"),
];

/// Short name of a label (`AF` for 164889003); the label itself when not in a vocabulary.
pub fn short_name(label: &str) -> &str {
    RHYTHM_VOCABULARY
        .iter()
        .find(|(l, _, _)| *l == label)
        .map(|(_, s, _)| *s)
        .unwrap_or(label)
}

/// A normalised label with the codes it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Normalised label.
    pub label: String,
    /// The source's codes, verbatim.
    pub raw: Vec<String>,
    /// Source codes that no mapping table knows (a subset of `raw`).
    pub unmapped: Vec<String>,
}

/// CinC 2017 `REFERENCE.csv` class → label.
pub fn cinc2017_label(class: &str) -> Option<&'static str> {
    match class {
        "N" => Some(SINUS_RHYTHM),
        "A" => Some(ATRIAL_FIBRILLATION),
        "O" => Some(OTHER),
        "~" => Some(NOISY),
        _ => None,
    }
}

/// Reads a CinC 2017 `REFERENCE.csv` (`A00001,N` per line) into record → class. The file is
/// opened under the rules of [`paths`] (at most [`paths::MAX_TEXT_BYTES`]) and must be UTF-8.
pub fn read_reference_csv(path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = paths::open_listed(path)
        .and_then(|f| f.read_all(paths::MAX_TEXT_BYTES))
        .map_err(|e| e.at(path))?;
    let text = String::from_utf8(bytes).map_err(|e| DatasetError::Labels {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 text: {e}"),
    })?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| DatasetError::Labels {
            path: path.to_path_buf(),
            reason: format!("line {}: {reason}", i + 1),
        };
        let (rec, class) = line
            .split_once(',')
            .ok_or_else(|| bad(format!("`{line}` is not `record,class`")))?;
        let class = class.trim();
        if cinc2017_label(class).is_none() {
            return Err(bad(format!("class `{class}` is not one of N, A, O, ~")));
        }
        if out
            .insert(rec.trim().to_string(), class.to_string())
            .is_some()
        {
            return Err(bad(format!("record `{}` listed twice", rec.trim())));
        }
    }
    Ok(out)
}

/// SNOMED CT rhythm codes of CinC 2020/2021 `#Dx` lines, in priority order (the first one
/// present labels the record).
const DX_RHYTHMS: [(&str, &str); 12] = [
    ("164889003", ATRIAL_FIBRILLATION),
    ("195080001", ATRIAL_FIBRILLATION), // atrial fibrillation and flutter
    ("164890007", ATRIAL_FLUTTER),
    ("164895002", OTHER), // ventricular tachycardia
    ("164896001", OTHER), // ventricular fibrillation
    ("426761007", OTHER), // supraventricular tachycardia
    ("713422000", OTHER), // atrial tachycardia
    ("17366009", OTHER),  // atrial arrhythmia
    ("427084000", SINUS_TACHYCARDIA),
    ("426177001", SINUS_BRADYCARDIA),
    ("427393009", SINUS_ARRHYTHMIA),
    ("426783006", SINUS_RHYTHM),
];

/// Well-known non-rhythm SNOMED CT codes of the CinC 2020/2021 scored list: mapped (they do not
/// change the rhythm label) and therefore not counted as unmapped.
const DX_NON_RHYTHM: [&str; 22] = [
    "270492004",
    "164909002",
    "713427006",
    "713426002",
    "445118002",
    "39732003",
    "251146004",
    "10370003",
    "284470004",
    "427172004",
    "164947007",
    "111975006",
    "164917005",
    "47665007",
    "59118001",
    "59931005",
    "63593006",
    "17338001",
    "698252002",
    "164934002",
    "55827005",
    "55930002",
];

/// Labels a CinC 2020/2021 record from its `#Dx` codes.
pub fn dx_label(codes: &[String]) -> Label {
    let label = DX_RHYTHMS
        .iter()
        .find(|(code, _)| codes.iter().any(|c| c == code))
        .map(|(_, l)| *l)
        .unwrap_or(UNKNOWN);
    let unmapped = codes
        .iter()
        .filter(|c| !DX_RHYTHMS.iter().any(|(r, _)| r == c) && !DX_NON_RHYTHM.contains(&c.as_str()))
        .cloned()
        .collect();
    Label {
        label: label.to_string(),
        raw: codes.to_vec(),
        unmapped,
    }
}

/// The `#Dx:` codes of a CinC 2020/2021 header's comments.
pub fn dx_codes(comments: &[String]) -> Option<Vec<String>> {
    comments.iter().find_map(|c| {
        let (k, v) = c.split_once(':')?;
        (k.trim().eq_ignore_ascii_case("dx")).then(|| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
    })
}

/// LUDB `Rhythm:` statement text → label (`None` when the text is not in the table).
pub fn ludb_rhythm(text: &str) -> Option<&'static str> {
    let t = text
        .trim()
        .trim_end_matches('.')
        .trim()
        .to_ascii_lowercase();
    Some(match t.as_str() {
        "sinus rhythm" => SINUS_RHYTHM,
        "sinus bradycardia" => SINUS_BRADYCARDIA,
        "sinus tachycardia" => SINUS_TACHYCARDIA,
        "sinus arrhythmia" | "irregular sinus rhythm" => SINUS_ARRHYTHMIA,
        "atrial fibrillation" => ATRIAL_FIBRILLATION,
        _ if t.starts_with("atrial flutter") => ATRIAL_FLUTTER,
        _ => return None,
    })
}

/// Labels a LUDB record from its header comments (`Rhythm: ...` line).
pub fn ludb_label(comments: &[String]) -> Label {
    let stmt = comments.iter().find_map(|c| {
        let (k, v) = c.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("rhythm")
            .then(|| v.trim().to_string())
    });
    match stmt {
        None => Label {
            label: UNKNOWN.into(),
            raw: vec![],
            unmapped: vec![],
        },
        Some(s) => match ludb_rhythm(&s) {
            Some(l) => Label {
                label: l.into(),
                raw: vec![s],
                unmapped: vec![],
            },
            None => Label {
                label: OTHER.into(),
                raw: vec![s.clone()],
                unmapped: vec![s],
            },
        },
    }
}

/// How long a rhythm stated in a header comment holds in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Course {
    /// The whole record (persistent or permanent AF; "non atrial fibrillation").
    Whole,
    /// Episodes (paroxysmal AF): not every stretch of the record.
    Paroxysmal,
    /// The statement does not say.
    Unstated,
}

/// Free-text diagnosis phrases of header comments: (normalised phrase, SNOMED CT concept or
/// `None`, label, course). A phrase is matched against a whole comment line, normalised: a
/// leading `Dx:`, `Diagnosis:`, `Diagnoses:`, `Rhythm:` or `Reason for admission:` key
/// removed, lower case, every character that is not a letter or digit a space, spaces
/// collapsed. Sources: the PhysioNet/CinC 2015 alarm database (`#Ventricular_Tachycardia`),
/// the CPSC 2021 paroxysmal AF database (`#paroxysmal atrial fibrillation`, `#non atrial
/// fibrillation`), PTB's `Reason for admission:`, LUDB's `Rhythm:` statements, the CinC
/// 2020/2021 rhythm names, and common English rhythm names.
pub const HEADER_PHRASES: &[(&str, Option<&str>, &str, Course)] = &[
    (
        "atrial fibrillation",
        Some("164889003"),
        ATRIAL_FIBRILLATION,
        Course::Unstated,
    ),
    (
        "af",
        Some("164889003"),
        ATRIAL_FIBRILLATION,
        Course::Unstated,
    ),
    (
        "afib",
        Some("164889003"),
        ATRIAL_FIBRILLATION,
        Course::Unstated,
    ),
    (
        "paroxysmal atrial fibrillation",
        Some("282825002"),
        ATRIAL_FIBRILLATION,
        Course::Paroxysmal,
    ),
    (
        "paroxysmal af",
        Some("282825002"),
        ATRIAL_FIBRILLATION,
        Course::Paroxysmal,
    ),
    (
        "persistent atrial fibrillation",
        Some("440059007"),
        ATRIAL_FIBRILLATION,
        Course::Whole,
    ),
    (
        "persistent af",
        Some("440059007"),
        ATRIAL_FIBRILLATION,
        Course::Whole,
    ),
    (
        "permanent atrial fibrillation",
        Some("426749004"),
        ATRIAL_FIBRILLATION,
        Course::Whole,
    ),
    (
        "chronic atrial fibrillation",
        Some("426749004"),
        ATRIAL_FIBRILLATION,
        Course::Whole,
    ),
    ("non atrial fibrillation", None, OTHER, Course::Whole),
    ("non af", None, OTHER, Course::Whole),
    ("no atrial fibrillation", None, OTHER, Course::Whole),
    (
        "atrial flutter",
        Some("164890007"),
        ATRIAL_FLUTTER,
        Course::Unstated,
    ),
    (
        "sinus rhythm",
        Some("426783006"),
        SINUS_RHYTHM,
        Course::Unstated,
    ),
    (
        "normal sinus rhythm",
        Some("426783006"),
        SINUS_RHYTHM,
        Course::Unstated,
    ),
    (
        "sinus bradycardia",
        Some("426177001"),
        SINUS_BRADYCARDIA,
        Course::Unstated,
    ),
    (
        "sinus tachycardia",
        Some("427084000"),
        SINUS_TACHYCARDIA,
        Course::Unstated,
    ),
    (
        "sinus arrhythmia",
        Some("427393009"),
        SINUS_ARRHYTHMIA,
        Course::Unstated,
    ),
    (
        "irregular sinus rhythm",
        Some("427393009"),
        SINUS_ARRHYTHMIA,
        Course::Unstated,
    ),
    (
        "ventricular tachycardia",
        Some("164895002"),
        OTHER,
        Course::Unstated,
    ),
    (
        "ventricular fibrillation",
        Some("164896001"),
        OTHER,
        Course::Unstated,
    ),
    (
        "ventricular flutter fib",
        Some("164896001"),
        OTHER,
        Course::Unstated,
    ),
    (
        "supraventricular tachycardia",
        Some("426761007"),
        OTHER,
        Course::Unstated,
    ),
    (
        "atrial tachycardia",
        Some("713422000"),
        OTHER,
        Course::Unstated,
    ),
    ("asystole", Some("397829000"), OTHER, Course::Unstated),
    (
        "extreme bradycardia",
        Some("48867003"),
        OTHER,
        Course::Unstated,
    ),
    (
        "extreme tachycardia",
        Some("3424008"),
        OTHER,
        Course::Unstated,
    ),
    ("dysrhythmia", Some("698247007"), OTHER, Course::Unstated),
];

/// Priority of a rhythm label when a record states several (as for `#Dx` codes): AF > AFL >
/// other rhythms > STach > SBrad > SA > SR.
fn rhythm_rank(label: &str) -> usize {
    [
        ATRIAL_FIBRILLATION,
        ATRIAL_FLUTTER,
        OTHER,
        SINUS_TACHYCARDIA,
        SINUS_BRADYCARDIA,
        SINUS_ARRHYTHMIA,
        SINUS_RHYTHM,
    ]
    .iter()
    .position(|l| *l == label)
    .unwrap_or(usize::MAX)
}

/// A free-text statement of another format (a DICOM annotation, an aECG interpretation) as a
/// header comment: trimmed, `None` when empty or when it would read as a `Dx:` line (free
/// text must never turn into codes).
pub fn statement(text: &str) -> Option<String> {
    let t = text.trim();
    let is_dx = t
        .split_once(':')
        .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("dx"));
    (!t.is_empty() && !is_dx).then(|| t.to_string())
}

/// A rhythm stated in free text in a header comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderDiagnosis {
    /// Normalised label.
    pub label: &'static str,
    /// SNOMED CT concept of the phrase, when it has one.
    pub snomed: Option<&'static str>,
    /// How long it holds.
    pub course: Course,
    /// The comment as written (without `#`, trimmed).
    pub text: String,
}

impl HeaderDiagnosis {
    /// The record label it gives (`label_raw` = the comment as written).
    pub fn label(&self) -> Label {
        Label {
            label: self.label.to_string(),
            raw: vec![self.text.clone()],
            unmapped: vec![],
        }
    }
}

/// A header comment normalised for [`HEADER_PHRASES`].
fn normalise_phrase(comment: &str) -> String {
    let lower = comment.trim().to_lowercase();
    let mut text = lower.as_str();
    for key in [
        "dx",
        "diagnosis",
        "diagnoses",
        "rhythm",
        "reason for admission",
    ] {
        if let Some(rest) = text
            .strip_prefix(key)
            .and_then(|r| r.trim_start().strip_prefix(':'))
        {
            text = rest;
            break;
        }
    }
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The rhythm stated in a header's free-text comments (whole comment lines matching
/// [`HEADER_PHRASES`]); of several, the first by rhythm priority. `None` when no comment is a
/// known phrase.
pub fn header_diagnosis(comments: &[String]) -> Option<HeaderDiagnosis> {
    comments
        .iter()
        .filter_map(|c| {
            let n = normalise_phrase(c);
            HEADER_PHRASES
                .iter()
                .find(|(p, ..)| *p == n)
                .map(|&(_, snomed, label, course)| HeaderDiagnosis {
                    label,
                    snomed,
                    course,
                    text: c.trim().to_string(),
                })
        })
        .min_by_key(|d| rhythm_rank(d.label))
}

/// MIT rhythm aux string (`(AFIB`, trailing NULs removed) → label, `None` when not in the table.
pub fn mit_rhythm(aux: &str) -> Option<&'static str> {
    Some(match aux.trim_end_matches('\0').trim() {
        "(N" => SINUS_RHYTHM,
        "(AFIB" => ATRIAL_FIBRILLATION,
        "(AFL" => ATRIAL_FLUTTER,
        "(SBR" => SINUS_BRADYCARDIA,
        "(AB" | "(B" | "(BII" | "(IVR" | "(NOD" | "(P" | "(PREX" | "(SVTA" | "(T" | "(VFL"
        | "(VT" => OTHER,
        _ => return None,
    })
}

/// AAMI EC57 class of an MIT beat symbol: N={N,L,R,e,j}, S={A,a,J,S}, V={V,E}, F={F},
/// Q={/,f,Q}; `None` for other symbols (B, r, n, ? and non-beats).
pub fn aami_class(symbol: &str) -> Option<&'static str> {
    Some(match symbol {
        "N" | "L" | "R" | "e" | "j" => "N",
        "A" | "a" | "J" | "S" => "S",
        "V" | "E" => "V",
        "F" => "F",
        "/" | "f" | "Q" => "Q",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dx(lines: &[&str]) -> Option<HeaderDiagnosis> {
        header_diagnosis(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn free_text_statements_never_become_codes() {
        assert_eq!(
            statement("  RITMO SINUSALE "),
            Some("RITMO SINUSALE".into())
        );
        assert_eq!(statement("Dx: 164889003, confirmed by Dr Roe"), None);
        assert_eq!(statement(" dx :x"), None);
        assert_eq!(statement("   "), None);
    }

    #[test]
    fn header_phrases_of_public_databases() {
        // PhysioNet/CinC 2015 (a103l, v102s): the alarm's rhythm, then whether it was true.
        let d = dx(&["Asystole", "False alarm"]).unwrap();
        assert_eq!(
            (d.label, d.snomed, d.text.as_str()),
            (OTHER, Some("397829000"), "Asystole")
        );
        let d = dx(&["Ventricular_Tachycardia", "True alarm"]).unwrap();
        assert_eq!((d.label, d.snomed), (OTHER, Some("164895002")));
        // CPSC 2021 (paroxysmal AF database) statements.
        let d = dx(&["paroxysmal atrial fibrillation"]).unwrap();
        assert_eq!(
            (d.label, d.course),
            (ATRIAL_FIBRILLATION, Course::Paroxysmal)
        );
        let d = dx(&[" persistent atrial fibrillation"]).unwrap();
        assert_eq!((d.label, d.course), (ATRIAL_FIBRILLATION, Course::Whole));
        let d = dx(&["non atrial fibrillation"]).unwrap();
        assert_eq!((d.label, d.course, d.snomed), (OTHER, Course::Whole, None));
        // PTB and LUDB keys; case, punctuation and a trailing full stop do not matter.
        assert_eq!(
            dx(&["Reason for admission: Atrial fibrillation"])
                .unwrap()
                .label,
            ATRIAL_FIBRILLATION
        );
        assert_eq!(
            dx(&["Rhythm: Sinus bradycardia."]).unwrap().label,
            SINUS_BRADYCARDIA
        );
        // Several statements: rhythm priority (AF first).
        assert_eq!(
            dx(&["Sinus rhythm", "AFIB"]).unwrap().label,
            ATRIAL_FIBRILLATION
        );
        // Not diagnoses: MIT-BIH's demographics and medications, wfdb's `<diagnoses>: (none)`,
        // a phrase inside a longer sentence.
        for lines in [
            &[" 69 M 1085 1629 x1", " Aldomet, Inderal"][..],
            &[" <age>: 25  <sex>: M  <diagnoses>: (none)  <medications>: (none)"],
            &["history of atrial fibrillation"],
            &["False alarm"],
        ] {
            assert_eq!(dx(lines), None, "{lines:?}");
        }
    }

    #[test]
    fn tables() {
        assert_eq!(cinc2017_label("A"), Some(ATRIAL_FIBRILLATION));
        assert_eq!(cinc2017_label("X"), None);
        assert_eq!(
            ludb_rhythm("Atrial flutter, typical. "),
            Some(ATRIAL_FLUTTER)
        );
        assert_eq!(
            ludb_rhythm("Irregular sinus rhythm."),
            Some(SINUS_ARRHYTHMIA)
        );
        assert_eq!(mit_rhythm("(AFIB\0"), Some(ATRIAL_FIBRILLATION));
        assert_eq!(mit_rhythm("(XYZ"), None);
        assert_eq!(aami_class("E"), Some("V"));
        assert_eq!(aami_class("B"), None);
        assert_eq!(short_name(ATRIAL_FIBRILLATION), "AF");
    }

    #[test]
    fn dx_priority_and_unmapped_codes() {
        let codes: Vec<String> = ["426783006", "164889003", "999999"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let l = dx_label(&codes);
        assert_eq!(l.label, ATRIAL_FIBRILLATION);
        assert_eq!(l.unmapped, vec!["999999"]);
        assert_eq!(dx_label(&["59118001".to_string()]).label, UNKNOWN);
        let c = vec!["Age: 3".to_string(), "Dx: 1, 2,3".to_string()];
        assert_eq!(dx_codes(&c).unwrap(), vec!["1", "2", "3"]);
    }

    #[test]
    fn reference_csv_errors_name_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("REFERENCE.csv");
        std::fs::write(&p, "A00001,N\nA00002,Z\n").unwrap();
        let e = read_reference_csv(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`Z`"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn reference_csv_link_out_of_folder_or_fifo_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("src");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(d.path().join("secret.csv"), "A00001,N\n").unwrap();
        let p = dir.join("REFERENCE.csv");
        std::os::unix::fs::symlink(d.path().join("secret.csv"), &p).unwrap();
        let e = read_reference_csv(&p).unwrap_err().to_string();
        assert!(
            e.contains("REFERENCE.csv: resolves to") && e.contains("outside its folder"),
            "{e}"
        );
        std::fs::remove_file(&p).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        let e = read_reference_csv(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("REFERENCE.csv: is not a regular file but a FIFO"),
            "{e}"
        );
    }

    proptest::proptest! {
        /// Any printable text in label statements and codes: a label, never a panic; codes no
        /// table knows are counted as unmapped.
        #[test]
        fn arbitrary_statements_never_panic(lines in proptest::collection::vec("(\\PC|[:,.]|Rhythm|Dx){0,40}", 0..6),
                                            aux in "\\PC{0,12}") {
            let l = ludb_label(&lines);
            proptest::prop_assert!(l.unmapped.iter().all(|u| l.raw.contains(u)));
            if let Some(codes) = dx_codes(&lines) {
                let l = dx_label(&codes);
                proptest::prop_assert!(l.unmapped.iter().all(|u| codes.contains(u)));
            }
            let _ = mit_rhythm(&aux);
        }
    }
}
