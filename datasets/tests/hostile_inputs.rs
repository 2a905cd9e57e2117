//! Hostile inputs (issue 23): file names in headers that leave the record's folder, links out
//! of a folder, FIFOs, devices, manifests naming files outside the store, sample counts that
//! overflow. Each is refused with an error naming the header (or store) and the offending
//! name; nothing outside the folder is read; good records beside them are still ingested.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use ecgfed_datasets::ingest;
use ecgfed_datasets::load::load_record;
use ecgfed_datasets::paths::MAX_FILE_BYTES;
use ecgfed_datasets::record::Verification;
use ecgfed_datasets::store::{self, Manifest, read_file_batches};
use ecgfed_datasets::strata::{StrataOptions, strata};

mod common;

use common::{opts, sample};

/// 4 KiB of distinctive pseudo-random bytes (xorshift64*, fixed seed): 2,048 format-16
/// samples that must never reach a store.
fn canary() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..4096)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// A MATLAB v4 file holding the canary as a 1 × 2048 int16 matrix `val` (valid for `16+24`).
fn canary_mat() -> Vec<u8> {
    let mut v = Vec::new();
    for w in [30u32, 1, 2048, 0, 4] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(b"val\0");
    v.extend_from_slice(&canary());
    v
}

/// A valid annotation file: three `N` beats (sample 100, 300, 500), then the terminator.
fn beats_atr() -> Vec<u8> {
    let mut v = Vec::new();
    for i in [100u16, 200, 200, 0] {
        let code = if i == 0 { 0 } else { 1u16 };
        v.extend_from_slice(&((code << 10) | i).to_le_bytes());
    }
    v
}

/// A one-signal format-16 header of 2,048 samples naming `file`, without initial value or
/// checksum (so nothing but the rules of `paths` stops it from being read).
fn hea(record: &str, file: &str, n_samples: Option<u64>) -> String {
    let n = n_samples.map(|n| format!(" {n}")).unwrap_or_default();
    format!("{record} 1 500{n}\n{file} 16 200/mV 16 0\n")
}

struct Fixture {
    _tmp: tempfile::TempDir,
    /// Folder outside the ingested one, holding the canaries.
    outside: PathBuf,
    /// The ingested folder.
    src: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let src = tmp.path().join("src");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(&src).unwrap();
    fs::write(outside.join("canary.dat"), canary()).unwrap();
    fs::write(outside.join("canary.mat"), canary_mat()).unwrap();
    fs::write(outside.join("canary.atr"), beats_atr()).unwrap();
    fs::write(
        outside.join("outside.hea"),
        hea("outside", "canary.dat", Some(2048)),
    )
    .unwrap();
    fs::copy(outside.join("canary.dat"), outside.join("outside.dat")).unwrap();
    Fixture {
        _tmp: tmp,
        outside,
        src,
    }
}

/// The good record: CinC 2021 PTB-XL HR03961 (12 leads, 5,000 samples: one 10 s segment).
fn put_good(dir: &Path) {
    let from = sample().join("cinc2021/ptb-xl");
    for ext in ["hea", "mat"] {
        fs::copy(
            from.join(format!("HR03961.{ext}")),
            dir.join(format!("HR03961.{ext}")),
        )
        .unwrap();
    }
}

fn load(hea_path: &Path) -> Result<ecgfed_datasets::record::Record, String> {
    load_record(hea_path, Verification::Strict).map_err(|e| e.to_string())
}

#[test]
fn header_naming_a_file_in_the_parent_folder_is_refused() {
    let f = fixture();
    let h = f.src.join("dotdot.hea");
    fs::write(&h, hea("dotdot", "../outside/canary.dat", Some(2048))).unwrap();
    let e = load(&h).unwrap_err();
    assert_eq!(
        e,
        format!(
            "{}:2: signal file name \"../outside/canary.dat\" is not a plain file name in the \
             record's folder: it contains `/`",
            h.display()
        )
    );
}

#[test]
fn header_naming_an_absolute_path_is_refused() {
    let f = fixture();
    let target = f.outside.join("canary.dat");
    let h = f.src.join("absolute.hea");
    fs::write(&h, hea("absolute", target.to_str().unwrap(), Some(2048))).unwrap();
    let e = load(&h).unwrap_err();
    assert!(
        e.starts_with(&format!("{}:2: signal file name {:?}", h.display(), target))
            && e.contains("is not a plain file name in the record's folder"),
        "{e}"
    );
}

#[test]
fn header_naming_dev_zero_is_refused_without_reading() {
    let f = fixture();
    let h = f.src.join("devzero.hea");
    // No sample count: a reader that trusts the name reads /dev/zero until memory runs out.
    fs::write(&h, hea("devzero", "/dev/zero", None)).unwrap();
    let e = load(&h).unwrap_err();
    assert!(
        e.contains("signal file name \"/dev/zero\" is not a plain file name"),
        "{e}"
    );
}

#[test]
fn fifo_named_by_a_header_is_refused_without_blocking() {
    let f = fixture();
    let st = std::process::Command::new("mkfifo")
        .arg(f.src.join("fifo.dat"))
        .status()
        .unwrap();
    assert!(st.success());
    let h = f.src.join("fifo.hea");
    fs::write(&h, hea("fifo", "fifo.dat", Some(2048))).unwrap();
    let e = load(&h).unwrap_err();
    assert_eq!(
        e,
        format!(
            "{}:2: signal file \"fifo.dat\" is not a regular file (it is a FIFO)",
            h.display()
        )
    );
}

#[test]
fn link_out_of_the_folder_is_refused_and_a_link_inside_is_followed() {
    let f = fixture();
    symlink(f.outside.join("canary.dat"), f.src.join("link.dat")).unwrap();
    let h = f.src.join("link.hea");
    fs::write(&h, hea("link", "link.dat", Some(2048))).unwrap();
    let e = load(&h).unwrap_err();
    assert!(
        e.starts_with(&format!(
            "{}:2: signal file \"link.dat\" resolves outside the record's folder (to ",
            h.display()
        )) && e.contains("canary.dat"),
        "{e}"
    );
    // A link whose target stays inside the folder is an ordinary file of the record.
    fs::create_dir(f.src.join("sub")).unwrap();
    fs::write(f.src.join("sub/inside.dat"), canary()).unwrap();
    symlink("sub/inside.dat", f.src.join("inlink.dat")).unwrap();
    let h = f.src.join("inlink.hea");
    fs::write(&h, hea("inlink", "inlink.dat", Some(2048))).unwrap();
    let r = load(&h).unwrap();
    let c = canary();
    assert_eq!(r.digital[0][0], i16::from_le_bytes([c[0], c[1]]) as i32);
    assert_eq!((r.n_samples, r.bytes_read), (2048, 4096));
}

#[test]
fn mat_header_naming_a_mat_file_outside_is_refused() {
    let f = fixture();
    let h = f.src.join("evilmat.hea");
    fs::write(
        &h,
        "evilmat 1 500 2048\n../outside/canary.mat 16+24 200/mV 16 0\n",
    )
    .unwrap();
    let e = load(&h).unwrap_err();
    assert!(
        e.contains(":2: signal file name \"../outside/canary.mat\" is not a plain file name"),
        "{e}"
    );
    // The same file inside the folder is a valid record (so only the rule refused it above).
    fs::copy(f.outside.join("canary.mat"), f.src.join("okmat.mat")).unwrap();
    let h = f.src.join("okmat.hea");
    fs::write(&h, "okmat 1 500 2048\nokmat.mat 16+24 200/mV 16 0\n").unwrap();
    assert_eq!(load(&h).unwrap().n_samples, 2048);
}

/// Every hostile record of the issue in one folder beside a good record: each is skipped with
/// an error naming its header and the offending file, the good record is ingested, and no
/// byte or sample of the canaries reaches the store.
#[test]
fn ingest_refuses_every_hostile_file_and_keeps_the_good_record() {
    let f = fixture();
    let src = &f.src;
    put_good(src);
    let abs = f.outside.join("canary.dat");
    fs::write(
        src.join("dotdot.hea"),
        hea("dotdot", "../outside/canary.dat", Some(2048)),
    )
    .unwrap();
    fs::write(
        src.join("absolute.hea"),
        hea("absolute", abs.to_str().unwrap(), Some(2048)),
    )
    .unwrap();
    fs::write(src.join("devzero.hea"), hea("devzero", "/dev/zero", None)).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(src.join("fifo.dat"))
            .status()
            .unwrap()
            .success()
    );
    fs::write(src.join("fifo.hea"), hea("fifo", "fifo.dat", Some(2048))).unwrap();
    symlink(&abs, src.join("link.dat")).unwrap();
    fs::write(src.join("link.hea"), hea("link", "link.dat", Some(2048))).unwrap();
    fs::write(
        src.join("evilmat.hea"),
        "evilmat 1 500 2048\n../outside/canary.mat 16+24 200/mV 16 0\n",
    )
    .unwrap();
    // A record whose own files are fine but whose annotation file is a link out of the folder.
    fs::write(
        src.join("annrec.hea"),
        hea("annrec", "annrec.dat", Some(2048)),
    )
    .unwrap();
    fs::write(src.join("annrec.dat"), vec![0u8; 4096]).unwrap();
    symlink(f.outside.join("canary.atr"), src.join("annrec.atr")).unwrap();
    // A header that is itself a link out of the folder.
    symlink(f.outside.join("outside.hea"), src.join("headlink.hea")).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let m = ingest(std::slice::from_ref(src), &out, &opts(), &|_| {}).unwrap();
    assert_eq!((m.records, m.skipped), (1, 8), "{:#?}", m.sources[0].errors);
    let errors = &m.sources[0].errors;
    let reason = |record: &str| -> String {
        let e = errors
            .iter()
            .find(|e| e.file.ends_with(&format!("/{record}.hea")))
            .unwrap_or_else(|| panic!("no error for {record}: {errors:#?}"));
        e.reason.clone()
    };
    let expect = [
        (
            "dotdot",
            "signal file name \"../outside/canary.dat\" is not a plain file name".to_string(),
        ),
        (
            "absolute",
            format!("signal file name {abs:?} is not a plain file name"),
        ),
        (
            "devzero",
            "signal file name \"/dev/zero\" is not a plain file name".to_string(),
        ),
        (
            "fifo",
            "signal file \"fifo.dat\" is not a regular file (it is a FIFO)".to_string(),
        ),
        (
            "link",
            "signal file \"link.dat\" resolves outside the record's folder".to_string(),
        ),
        (
            "evilmat",
            "signal file name \"../outside/canary.mat\" is not a plain file name".to_string(),
        ),
        ("annrec", "annrec.atr: resolves to ".to_string()),
        ("headlink", "headlink.hea: resolves to ".to_string()),
    ];
    for (record, needle) in &expect {
        let r = reason(record);
        assert!(r.contains(needle.as_str()), "{record}: {r}");
        // The header (or its file) is named in the reason, not only in `file`.
        assert!(r.contains(&format!("{record}.")), "{record}: {r}");
    }
    assert!(reason("annrec").contains("outside its folder"));
    assert!(reason("headlink").contains("outside its folder"));

    // Only the good record's one segment is stored.
    let mut rows = 0;
    for file in &m.files {
        for b in read_file_batches(&out, &file.name, Some(&["record_id"]), None, 1024).unwrap() {
            let b = b.unwrap();
            let ids = arrow::array::AsArray::as_string::<i32>(b.column(0));
            for id in ids.iter() {
                assert_eq!(id, Some("HR03961"));
                rows += 1;
            }
        }
    }
    assert_eq!((rows, m.segments), (1, 1));
    // No raw canary bytes in any file of the store (32-byte pieces at every 32-byte step).
    let c = canary();
    for entry in fs::read_dir(&out).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        for piece in c.chunks(32) {
            assert!(!bytes.windows(32).any(|w| w == piece));
        }
    }
}

/// A reader that panics (a bug in a third party's parser, made here by the fault hook) costs
/// that record only: it is skipped with an error naming its file, and the rest is ingested.
#[test]
fn a_panicking_reader_costs_only_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let from = sample().join("cinc2021/georgia");
    for id in ["E00271", "E01137", "E03823"] {
        for ext in ["hea", "mat"] {
            fs::copy(
                from.join(format!("{id}.{ext}")),
                src.join(format!("{id}.{ext}")),
            )
            .unwrap();
        }
    }
    let bad = src.join("E01137.hea");
    ecgfed_datasets::fault::panic_when_reading(&bad);
    let out = tmp.path().join("store");
    let m = ingest(std::slice::from_ref(&src), &out, &opts(), &|_| {}).unwrap();
    assert_eq!((m.records, m.skipped), (2, 1), "{:#?}", m.sources[0].errors);
    let errors = &m.sources[0].errors;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, bad.display().to_string());
    assert!(
        errors[0]
            .reason
            .contains("the reader failed on this file (a panic, caught)"),
        "{}",
        errors[0].reason
    );
    for (id, stored) in [("E00271", true), ("E01137", false), ("E03823", true)] {
        let segments = store::read_record(&out, id).unwrap();
        assert_eq!(!segments.is_empty(), stored, "{id}");
    }
}

#[test]
fn annotation_file_linked_out_of_the_folder_is_refused() {
    let f = fixture();
    put_good(&f.src);
    symlink(f.outside.join("canary.atr"), f.src.join("HR03961.atr")).unwrap();
    let e = ecgfed_datasets::annotation::read_annotations(&f.src.join("HR03961.atr"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HR03961.atr: resolves to") && e.contains("outside its folder"),
        "{e}"
    );
    // Ingest skips the record with that reason rather than reading the canary's beats.
    let tmp = tempfile::tempdir().unwrap();
    let e = ingest(
        std::slice::from_ref(&f.src),
        &tmp.path().join("s"),
        &opts(),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("nothing could be ingested") && e.contains("HR03961.atr: resolves to"),
        "{e}"
    );
}

/// Sample count 2^62 (and u64::MAX, and 4,096 signals of 2^52) over a 100-byte file: an
/// error, never an allocation or an overflow that slips past the size check.
#[test]
fn huge_sample_counts_are_errors_not_allocations() {
    let f = fixture();
    fs::write(f.src.join("big.dat"), [0u8; 100]).unwrap();
    for (n, fmt) in [
        (1u64 << 62, 16),
        (1u64 << 62, 212),
        (u64::MAX, 16),
        (u64::MAX, 8),
    ] {
        let h = f.src.join("big.hea");
        fs::write(&h, format!("big 1 500 {n}\nbig.dat {fmt} 200/mV 16 0\n")).unwrap();
        let e = load(&h).unwrap_err();
        assert!(
            e.contains("more bytes than can be addressed") || e.contains("truncated"),
            "{n} {fmt}: {e}"
        );
    }
    let mut t = format!("big 4096 500 {}\n", 1u64 << 52);
    for i in 0..4096 {
        t.push_str(&format!("big.dat 16 200/mV 16 0 0 0 0 s{i}\n"));
    }
    let h = f.src.join("big.hea");
    fs::write(&h, t).unwrap();
    let e = load(&h).unwrap_err();
    assert!(e.contains("more bytes than can be addressed"), "{e}");
    // A byte offset past every file.
    fs::write(
        &h,
        format!("big 1 500 10\nbig.dat 16+{} 200/mV\n", u64::MAX),
    )
    .unwrap();
    let e = load(&h).unwrap_err();
    assert!(e.contains("shorter than its byte offset"), "{e}");
}

/// A 10 GB (sparse) file behind a header of 1,000 samples: only 2,000 bytes are read. The same
/// file behind a header without a sample count is refused: more than `MAX_FILE_BYTES`.
#[test]
fn only_the_bytes_the_header_needs_are_read() {
    let f = fixture();
    let big = fs::File::create(f.src.join("huge.dat")).unwrap();
    big.set_len(10_000_000_000).unwrap();
    let h = f.src.join("huge.hea");
    fs::write(&h, hea("huge", "huge.dat", Some(1000))).unwrap();
    let r = load(&h).unwrap();
    assert_eq!((r.n_samples, r.bytes_read), (1000, 2000));
    assert!(r.digital[0].iter().all(|&v| v == 0));
    fs::write(&h, hea("huge", "huge.dat", None)).unwrap();
    let e = load(&h).unwrap_err();
    assert_eq!(
        e,
        format!(
            "{}:2: signal file \"huge.dat\" holds 10000000000 bytes and the header gives no \
             sample count: without one at most {MAX_FILE_BYTES} bytes are read",
            h.display()
        )
    );
}

/// A manifest naming `../x.parquet` or an absolute path is refused by name by every reader
/// of the store, and erasure does not touch the file it names.
#[test]
fn manifest_naming_files_outside_the_store_is_refused() {
    let f = fixture();
    put_good(&f.src);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("store");
    let m = ingest(std::slice::from_ref(&f.src), &out, &opts(), &|_| {}).unwrap();
    let real = m.files[0].name.clone();
    // The store's own file, moved out of the store folder.
    fs::rename(out.join(&real), tmp.path().join("x.parquet")).unwrap();
    let outside_bytes = fs::read(tmp.path().join("x.parquet")).unwrap();
    let abs = tmp.path().join("x.parquet").display().to_string();
    for name in ["../x.parquet", abs.as_str()] {
        let mut bad = m.clone();
        bad.files[0].name = name.to_string();
        fs::write(
            out.join(store::MANIFEST),
            serde_json::to_vec_pretty(&bad).unwrap(),
        )
        .unwrap();
        let needle =
            format!("listed file name {name:?} is not a plain file name in the store folder");
        let e = Manifest::read(&out).unwrap_err().to_string();
        assert!(e.contains(&needle) && e.contains("manifest.json"), "{e}");
        let e = store::read_record(&out, "HR03961").unwrap_err().to_string();
        assert!(e.contains(&needle), "{e}");
        let e = strata(&out, &StrataOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&needle), "{e}");
        let e = store::delete_patients(&out, &[(m.sources[0].id.clone(), "HR03961".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&needle), "{e}");
        let e = read_file_batches(&out, name, None, None, 16)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "store file name {name:?} is not a plain file name"
            )),
            "{e}"
        );
        assert!(store::read_file(&out, name, None, None, 16).is_err());
    }
    assert_eq!(
        fs::read(tmp.path().join("x.parquet")).unwrap(),
        outside_bytes
    );
    // A listed file that is a link out of the store folder is refused too.
    symlink(tmp.path().join("x.parquet"), out.join(&real)).unwrap();
    fs::write(
        out.join(store::MANIFEST),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    let e = Manifest::read(&out).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "listed file {real:?} resolves outside the store folder"
        )),
        "{e}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Extreme sample counts, byte offsets and signal counts over a small file: an error every
    /// time, never a panic, an abort or an allocation sized by the header.
    #[test]
    fn extreme_counts_over_a_small_file_are_errors(
        n in proptest::prop_oneof![
            proptest::strategy::Just(u64::MAX),
            proptest::strategy::Just(1u64 << 62),
            proptest::strategy::Just(1u64 << 40),
            (1u64 << 33)..u64::MAX,
        ],
        nsig in proptest::prop_oneof![
            proptest::strategy::Just(1usize),
            proptest::strategy::Just(12),
            proptest::strategy::Just(4096),
        ],
        fmt in proptest::sample::select(vec![8u16, 16, 24, 32, 61, 80, 160, 212]),
        offset in proptest::prop_oneof![
            proptest::strategy::Just(0u64),
            proptest::strategy::Just(u64::MAX),
            proptest::strategy::Just(1u64 << 62),
            0u64..600,
        ],
        data_len in 0usize..512,
        mat in proptest::bool::ANY,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let file = if mat { "x.mat" } else { "x.dat" };
        fs::write(tmp.path().join(file), vec![7u8; data_len]).unwrap();
        let mut t = format!("x {nsig} 500 {n}\n");
        for i in 0..nsig {
            t.push_str(&format!("{file} {fmt}+{offset} 200/mV 16 0 0 0 0 s{i}\n"));
        }
        let h = tmp.path().join("x.hea");
        fs::write(&h, t).unwrap();
        proptest::prop_assert!(load_record(&h, Verification::Warn).is_err());
    }
}
