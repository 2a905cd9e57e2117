//! Patient age and sex from WFDB header comments, in every dialect of the sources we ingest.
//!
//! * MIT-BIH: first comment `# 69 M 1085 1629 x1` (age `-1` or `?` = unknown).
//! * CinC 2020/2021: `#Age: 53`, `#Sex: Male` (also `Female`, `NaN`, `Unknown`).
//! * LUDB: `#<age>: 51`, `#<sex>: M`.
//!
//! CinC 2017 carries no demographics: both stay unknown. Nothing is ever imputed: a value that
//! is missing, unparsable or implausible (age above 120) is unknown (`None`).

/// Sex as recorded by the source.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Sex {
    /// Male.
    M,
    /// Female.
    F,
}

impl Sex {
    /// The store's code for this sex (`M` or `F`).
    pub fn code(self) -> &'static str {
        match self {
            Sex::M => "M",
            Sex::F => "F",
        }
    }

    /// Parses `M`, `F`, `Male`, `Female` in any case; anything else is unknown.
    pub fn parse(s: &str) -> Option<Sex> {
        match s.trim().to_ascii_lowercase().as_str() {
            "m" | "male" => Some(Sex::M),
            "f" | "female" => Some(Sex::F),
            _ => None,
        }
    }
}

/// Age and sex of one record's patient; `None` means unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demographics {
    /// Age in whole years.
    pub age: Option<u8>,
    /// Sex.
    pub sex: Option<Sex>,
}

/// Parses an age in years; unknown for negative, non-numeric, NaN or above 120.
pub fn parse_age(s: &str) -> Option<u8> {
    let v: f64 = s.trim().parse().ok()?;
    (v.is_finite() && (0.0..=120.0).contains(&v)).then(|| v.floor() as u8)
}

/// A calendar date (year, month, day) as the file formats write it.
pub type Date = (i32, u32, u32);

/// A `YYYYMMDD...` date (DICOM DA, HL7 TS): `None` unless ASCII with a valid month and day.
pub fn yyyymmdd(s: &str) -> Option<Date> {
    if s.len() < 8 || !s.is_ascii() {
        return None;
    }
    let y = s[..4].parse().ok()?;
    let m = s[4..6].parse().ok()?;
    let d = s[6..8].parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// Whole years from `birth` to `at`; `None` when negative or above 120. Only the age is kept:
/// the dates themselves are never stored.
pub fn age_between(birth: Date, at: Date) -> Option<u8> {
    let mut years = at.0 - birth.0;
    if (at.1, at.2) < (birth.1, birth.2) {
        years -= 1;
    }
    u8::try_from(years).ok().filter(|&a| a <= 120)
}

/// Extracts demographics from header comment lines (without their leading `#`).
pub fn from_comments(comments: &[String]) -> Demographics {
    let mut d = Demographics::default();
    let mut keyed = false;
    for c in comments {
        let Some((key, value)) = c.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_start_matches('<').trim_end_matches('>');
        match key.to_ascii_lowercase().as_str() {
            "age" => {
                keyed = true;
                d.age = parse_age(value);
            }
            "sex" | "gender" => {
                keyed = true;
                d.sex = Sex::parse(value);
            }
            _ => {}
        }
    }
    if keyed {
        return d;
    }
    // MIT-BIH: the first comment is `<age> <sex> ...`.
    if let Some(first) = comments.first() {
        let mut it = first.split_whitespace();
        if let (Some(age), Some(sex)) = (it.next(), it.next())
            && let Some(sex) = Sex::parse(sex)
        {
            return Demographics {
                age: parse_age(age),
                sex: Some(sex),
            };
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(lines: &[&str]) -> Demographics {
        from_comments(&lines.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_dialect() {
        assert_eq!(
            c(&[" 69 M 1085 1629 x1", " Aldomet"]),
            Demographics {
                age: Some(69),
                sex: Some(Sex::M)
            }
        );
        assert_eq!(
            c(&[" -1 M 1085 1629 x1"]),
            Demographics {
                age: None,
                sex: Some(Sex::M)
            }
        );
        assert_eq!(
            c(&["Age: 53", "Sex: Male", "Dx: 164889003"]),
            Demographics {
                age: Some(53),
                sex: Some(Sex::M)
            }
        );
        assert_eq!(c(&["Age: NaN", "Sex: Unknown"]), Demographics::default());
        assert_eq!(
            c(&[
                "<age>: 51",
                "<sex>: F",
                "<diagnoses>:",
                "Rhythm: Sinus bradycardia."
            ]),
            Demographics {
                age: Some(51),
                sex: Some(Sex::F)
            }
        );
        assert_eq!(c(&[]), Demographics::default());
        assert_eq!(
            c(&["Age: 250", "Sex: F"]).age,
            None,
            "implausible age is unknown"
        );
    }

    proptest::proptest! {
        /// Any printable text in comments: demographics or unknown, never a panic, never an
        /// age above 120.
        #[test]
        fn arbitrary_comments_never_panic(lines in proptest::collection::vec("(\\PC|[<>:]|Age|Sex){0,30}", 0..6)) {
            let d = from_comments(&lines);
            proptest::prop_assert!(d.age.is_none_or(|a| a <= 120));
        }
    }
}
