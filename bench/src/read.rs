//! Read throughput measurement: decode every record (signals in mV and annotations) under some
//! folders without writing a store. Used by `ecgfed-bench datasets` and the criterion bench
//! (benches/readers.rs).

use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;

use ecgfed_datasets::{DatasetError, annotation, layout, load};

/// Figures of one read pass.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadStats {
    /// Records decoded.
    pub records: u64,
    /// Records that failed (with the reason, in `failures`).
    pub failed: u64,
    /// Bytes of signal files read.
    pub bytes: u64,
    /// Annotations decoded.
    pub annotations: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Failures: (header file, reason).
    pub failures: Vec<(String, String)>,
}

impl ReadStats {
    /// Raw signal megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }

    /// Records per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }
}

/// Decodes every record under `folders` on all cores (rayon) and times it.
pub fn read_all(folders: &[PathBuf]) -> ReadStats {
    let start = Instant::now();
    let mut jobs = Vec::new();
    let mut stats = ReadStats::default();
    for f in folders {
        match layout::discover(f) {
            Ok(srcs) => {
                for s in srcs {
                    let v = s.layout.verification();
                    jobs.extend(s.headers.into_iter().map(|h| (h, v)));
                }
            }
            Err(e) => stats
                .failures
                .push((f.display().to_string(), e.to_string())),
        }
    }
    let results: Vec<Result<(u64, u64), (String, String)>> = jobs
        .par_iter()
        .map(|(h, v)| {
            let fail = |e: DatasetError| (h.display().to_string(), e.to_string());
            let r = load::load_record(h, *v).map_err(fail)?;
            let phys = r.physical().map_err(fail)?;
            std::hint::black_box(&phys);
            let atr = h.with_extension("atr");
            let n_ann = annotation::read_annotations_if_present(&atr)
                .map_err(fail)?
                .map_or(0, |a| a.len() as u64);
            Ok((r.bytes_read, n_ann))
        })
        .collect();
    for r in results {
        match r {
            Ok((b, a)) => {
                stats.records += 1;
                stats.bytes += b;
                stats.annotations += a;
            }
            Err(f) => {
                stats.failed += 1;
                stats.failures.push(f);
            }
        }
    }
    stats.seconds = start.elapsed().as_secs_f64();
    stats
}
