//! Which signals of a record are ECG leads.
//!
//! ICU and ambulatory records mix ECG leads with pressures, plethysmograms, respiration and
//! more. Ingest keeps the ECG leads and skips the others with a warning that names them. A
//! signal is an ECG lead unless:
//!
//! 1. its units are not a voltage (`mV`, `uV`/`µV`, `V`, any case; WFDB's default when a
//!    header gives none is `mV`): `mmHg`, `NU`, `Ohm`, `bpm`, `%`, ... are never ECG; or
//! 2. its name (split into words at every character that is not a letter or digit, compared
//!    without case) has no word containing `ecg` and has a word of [`NON_ECG_WORDS`]
//!    (`ABP`, `PLETH`, `Resp. Imp.`, `foot GSR`, `EMG`, `Marker`, ...); or
//! 3. its name is an EEG electrode of the 10-20 system ([`EEG_ELECTRODES`]) or a derivation
//!    of them joined by `-` (`Fp1`, `Fp2-F4`, `C4-A1`).
//!
//! Every other voltage signal is kept: standard lead names (`I`, `aVR`, `V1`, `MLII`,
//! `MCL1`, Frank `vx`), `ECG`, and also names that say nothing (`sig0`, `col 1`), which in a
//! WFDB record of a folder given as ECG are most likely ECG.

/// Words (lower case) that name a signal other than ECG.
pub const NON_ECG_WORDS: &[&str] = &[
    // pressures
    "abp",
    "art",
    "pap",
    "cvp",
    "icp",
    "lap",
    "rap",
    "uap",
    "nbp",
    "pres",
    "pressure",
    // plethysmogram and oximetry
    "pleth",
    "ppg",
    "spo2",
    "sao2",
    "pulse",
    // respiration
    "resp",
    "co2",
    "etco2",
    "flow",
    "airflow",
    "thorax",
    "abdomen",
    "snore",
    // other physiology and devices
    "gsr",
    "eda",
    "emg",
    "eog",
    "eeg",
    "temp",
    "temperature",
    "marker",
    "hr",
    "hrv",
    "angle",
    "accelerometer",
    "position",
    "light",
    "uc",
    "toco",
    "stim",
    "sound",
];

/// EEG electrode names of the 10-20 system (lower case).
pub const EEG_ELECTRODES: &[&str] = &[
    "fp1", "fp2", "fpz", "f3", "f4", "f7", "f8", "fz", "c3", "c4", "cz", "p3", "p4", "pz", "o1",
    "o2", "oz", "t3", "t4", "t5", "t6", "t7", "t8", "p7", "p8", "a1", "a2", "m1", "m2",
];

/// Why a signal is not an ECG lead, or `None` when it is one. `units` as the header writes
/// them; `is_voltage` from [`crate::header::SignalSpec::to_millivolts`].
pub fn not_ecg(name: &str, units: &str, is_voltage: bool) -> Option<String> {
    if !is_voltage {
        return Some(format!("units `{units}` are not a voltage"));
    }
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if words.iter().any(|w| w.contains("ecg")) {
        return None;
    }
    if let Some(w) = words.iter().find(|w| NON_ECG_WORDS.contains(w)) {
        return Some(format!("`{w}` names a signal other than ECG"));
    }
    let parts: Vec<&str> = lower.split('-').map(str::trim).collect();
    if parts.iter().all(|p| EEG_ELECTRODES.contains(p)) {
        return Some("an EEG derivation of the 10-20 system".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecg_leads_of_public_records_are_kept() {
        for name in [
            "MLII",
            "V5",
            "V",
            "II",
            "i",
            "avr",
            "v1",
            "vx",
            "MCL1",
            "ECG",
            "ECG lead II",
            "ECG_2",
            "FECG",
            "col 0",
            "sig 3, fmt 80",
            "III",
        ] {
            assert_eq!(not_ecg(name, "mV", true), None, "{name}");
        }
    }

    #[test]
    fn other_signals_of_public_records_are_skipped() {
        // Names and units of wfdb-python's sample records (a103l, 1003, drive02, wave_4,
        // mixedsignals, n16, p10143).
        for (name, units, volt) in [
            ("PLETH", "NU", false),
            ("ABP", "mmHg", false),
            ("Resp. Imp.", "mV", true),
            ("foot GSR", "mV", true),
            ("HR", "bpm", false),
            ("marker", "mV", true),
            ("RESP", "mV", true),
            ("Accelerometer_X", "mg", false),
            ("DEV_Temperature", "degC", false),
            ("Fp2-F4", "uV", true),
            ("C4-A1", "uV", true),
            ("UC", "mV", true),
            ("EEG Fpz-Cz", "uV", true),
            ("Fp1", "uV", true),
        ] {
            assert!(not_ecg(name, units, volt).is_some(), "{name}");
        }
        assert_eq!(
            not_ecg("PLETH", "NU", false).as_deref(),
            Some("units `NU` are not a voltage")
        );
        assert_eq!(
            not_ecg("foot GSR", "mV", true).as_deref(),
            Some("`gsr` names a signal other than ECG")
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(name in "\\PC{0,40}", units in "\\PC{0,8}", v in proptest::bool::ANY) {
            let _ = not_ecg(&name, &units, v);
        }
    }
}
