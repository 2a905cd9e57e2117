//! Strata: counts of a store's segments, records and patients by label × sex × age band ×
//! source × site, computed with polars over the store's Parquet files. Unknown sex or age is
//! its own value (`unknown`), never imputed. Cells with fewer than `k` distinct patients are
//! suppressed: their counts are withheld and only the number of suppressed cells is given.

use std::path::Path;

use polars::prelude::*;

use crate::error::{DatasetError, Result};
use crate::store::Manifest;

/// A dimension strata can be counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Normalised label.
    Label,
    /// Sex (`M`, `F`, `unknown`).
    Sex,
    /// Age band (see [`StrataOptions::age_edges`]).
    AgeBand,
    /// Source database id.
    Source,
    /// Site name.
    Site,
}

impl Dimension {
    /// Column name in the strata table.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Label => "label",
            Dimension::Sex => "sex",
            Dimension::AgeBand => "age_band",
            Dimension::Source => "source",
            Dimension::Site => "site",
        }
    }

    /// Parses `label`, `sex`, `age_band` (or `age`), `source`, `site`.
    pub fn parse(s: &str) -> Option<Dimension> {
        Some(match s.trim() {
            "label" => Dimension::Label,
            "sex" => Dimension::Sex,
            "age_band" | "age" => Dimension::AgeBand,
            "source" => Dimension::Source,
            "site" => Dimension::Site,
            _ => return None,
        })
    }

    /// Every dimension, in the default order.
    pub const ALL: [Dimension; 5] = [
        Dimension::Label,
        Dimension::Sex,
        Dimension::AgeBand,
        Dimension::Source,
        Dimension::Site,
    ];
}

/// Options of a strata query.
#[derive(Debug, Clone, PartialEq)]
pub struct StrataOptions {
    /// Dimensions to group by.
    pub by: Vec<Dimension>,
    /// Lower edges of the age bands after the first: `[20, 40, 60, 80]` gives `0-19`,
    /// `20-39`, `40-59`, `60-79`, `80+`.
    pub age_edges: Vec<u8>,
    /// Minimum number of distinct patients for a cell to be shown.
    pub k: u64,
}

impl Default for StrataOptions {
    fn default() -> Self {
        StrataOptions {
            by: Dimension::ALL.to_vec(),
            age_edges: vec![20, 40, 60, 80],
            k: 10,
        }
    }
}

/// Names of the age bands for `edges` (sorted, deduplicated by the caller).
pub fn age_band_names(edges: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut lo = 0u32;
    for &e in edges {
        names.push(format!("{lo}-{}", (e as u32).saturating_sub(1)));
        lo = e as u32;
    }
    names.push(format!("{lo}+"));
    names
}

/// The age band an age falls into (`unknown` for `None`).
pub fn age_band(age: Option<u8>, edges: &[u8]) -> String {
    let names = age_band_names(edges);
    match age {
        None => "unknown".into(),
        Some(a) => names[edges.iter().take_while(|&&e| a >= e).count()].clone(),
    }
}

/// One strata cell.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StrataCell {
    /// Values of the grouping dimensions, in the order of [`StrataTable::dimensions`].
    pub key: Vec<String>,
    /// Segments in the cell.
    pub segments: u64,
    /// Distinct records in the cell.
    pub records: u64,
    /// Distinct patients in the cell.
    pub patients: u64,
}

/// A strata table with small cells suppressed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StrataTable {
    /// Grouping dimensions.
    pub dimensions: Vec<String>,
    /// Suppression threshold (distinct patients).
    pub k: u64,
    /// Age band edges used.
    pub age_edges: Vec<u8>,
    /// Cells with at least `k` patients, sorted by key.
    pub cells: Vec<StrataCell>,
    /// Number of cells withheld because they had fewer than `k` patients.
    pub suppressed_cells: u64,
}

fn polars_err(dir: &Path) -> impl Fn(PolarsError) -> DatasetError + '_ {
    move |e| DatasetError::store(dir, format!("strata query failed: {e}"))
}

/// Counts the store at `dir` by `opts.by`, suppressing cells under `opts.k` patients.
pub fn strata(dir: &Path, opts: &StrataOptions) -> Result<StrataTable> {
    let manifest = Manifest::read(dir)?;
    let mut edges = opts.age_edges.clone();
    edges.sort_unstable();
    edges.dedup();
    if edges.first() == Some(&0) {
        return Err(DatasetError::store(dir, "age band edges must be above 0"));
    }
    let mut by = opts.by.clone();
    by.dedup();
    let pe = polars_err(dir);
    let mut frames = Vec::new();
    for f in &manifest.files {
        let path = PlRefPath::try_from_path(&dir.join(&f.name)).map_err(&pe)?;
        frames.push(LazyFrame::scan_parquet(path, ScanArgsParquet::default()).map_err(&pe)?);
    }
    let dims: Vec<String> = by.iter().map(|d| d.name().to_string()).collect();
    if frames.is_empty() {
        return Ok(StrataTable {
            dimensions: dims,
            k: opts.k,
            age_edges: edges,
            cells: vec![],
            suppressed_cells: 0,
        });
    }
    let lf = concat(frames, UnionArgs::default()).map_err(&pe)?;
    let names = age_band_names(&edges);
    let age = col("age").cast(DataType::Int32);
    let mut band = lit(names[names.len() - 1].clone());
    for (i, &e) in edges.iter().enumerate().rev() {
        band = when(age.clone().lt(lit(e as i32)))
            .then(lit(names[i].clone()))
            .otherwise(band);
    }
    let band = when(age.clone().is_null())
        .then(lit("unknown"))
        .otherwise(band);
    let keyed = lf.select([
        col("label"),
        col("sex").fill_null(lit("unknown")).alias("sex"),
        band.alias("age_band"),
        col("source"),
        col("site"),
        col("record_id"),
        col("patient"),
    ]);
    let group: Vec<Expr> = dims.iter().map(|d| col(d.as_str())).collect();
    // String `+` concatenates: keys unique across sources.
    let record_key = col("source") + lit("/") + col("record_id");
    let patient_key = col("source") + lit("/") + col("patient");
    let aggs = [
        len().cast(DataType::UInt64).alias("segments"),
        record_key
            .n_unique()
            .cast(DataType::UInt64)
            .alias("records"),
        patient_key
            .n_unique()
            .cast(DataType::UInt64)
            .alias("patients"),
    ];
    let grouped = if group.is_empty() {
        keyed.select(aggs)
    } else {
        keyed.group_by(group).agg(aggs)
    };
    let df = grouped.collect().map_err(&pe)?;
    let u64col = |name: &str| -> Result<Vec<u64>> {
        let ca = df.column(name).map_err(&pe)?.u64().map_err(&pe)?;
        Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(0)).collect())
    };
    let (segments, records, patients) =
        (u64col("segments")?, u64col("records")?, u64col("patients")?);
    let mut keys: Vec<Vec<String>> = vec![Vec::with_capacity(dims.len()); df.height()];
    for d in &dims {
        let c = df.column(d).map_err(&pe)?.str().map_err(&pe)?;
        for (i, key) in keys.iter_mut().enumerate() {
            key.push(c.get(i).unwrap_or("unknown").to_string());
        }
    }
    let mut cells = Vec::new();
    let mut suppressed = 0;
    for (i, key) in keys.into_iter().enumerate() {
        if patients[i] < opts.k {
            suppressed += 1;
        } else {
            cells.push(StrataCell {
                key,
                segments: segments[i],
                records: records[i],
                patients: patients[i],
            });
        }
    }
    cells.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(StrataTable {
        dimensions: dims,
        k: opts.k,
        age_edges: edges,
        cells,
        suppressed_cells: suppressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands() {
        assert_eq!(age_band_names(&[20, 40]), vec!["0-19", "20-39", "40+"]);
        assert_eq!(age_band(Some(19), &[20, 40]), "0-19");
        assert_eq!(age_band(Some(40), &[20, 40]), "40+");
        assert_eq!(age_band(None, &[20, 40]), "unknown");
    }
}
