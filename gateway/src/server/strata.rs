//! k-anonymous strata over a catalog, safe against differencing (docs/flight.md "Strata").
//!
//! Every answer is computed from the *visible rows* only: rows whose finest cell (label × sex
//! × age band × source) holds at least k distinct patients. Rows of suppressed finest cells
//! never enter any count, whatever the grouping, so the difference of two answers is a
//! difference of counts over visible rows and says nothing about a suppressed cell. Age bands
//! and k are fixed by the gateway's configuration, not chosen per query. Any coarser cell is a
//! union of visible finest cells and therefore holds at least k patients itself.

use std::collections::{BTreeMap, HashSet};

use ecgfed_proto::v1::{StrataCell, StrataDimension, StrataTable};

use crate::error::{GatewayError, Result};
use crate::server::catalog::{Catalog, Row};

/// The value of `dim` for a row.
fn value<'a>(c: &'a Catalog, r: &'a Row, dim: StrataDimension) -> &'a str {
    match dim {
        StrataDimension::Label => &r.label,
        StrataDimension::Sex => &r.sex,
        StrataDimension::AgeBand => &r.age_band,
        StrataDimension::Source => &r.source,
        StrataDimension::Site | StrataDimension::Unspecified => &c.site,
    }
}

/// Dimension names as the store's strata use them.
pub(super) fn dimension_name(d: StrataDimension) -> &'static str {
    match d {
        StrataDimension::Label => "label",
        StrataDimension::Sex => "sex",
        StrataDimension::AgeBand => "age_band",
        StrataDimension::Source => "source",
        StrataDimension::Site | StrataDimension::Unspecified => "site",
    }
}

/// Counts the visible rows of `c` grouped by `by` (raw proto enum values; empty = label ×
/// sex × age band × source).
pub(super) fn strata(c: &Catalog, by: &[i32]) -> Result<StrataTable> {
    let mut dims = Vec::new();
    for &d in by {
        let dim = StrataDimension::try_from(d)
            .ok()
            .filter(|d| *d != StrataDimension::Unspecified)
            .ok_or_else(|| {
                GatewayError::refused(
                    tonic::Code::InvalidArgument,
                    format!("unknown strata dimension {d}"),
                )
            })?;
        if !dims.contains(&dim) {
            dims.push(dim);
        }
    }
    if dims.is_empty() {
        dims = vec![
            StrataDimension::Label,
            StrataDimension::Sex,
            StrataDimension::AgeBand,
            StrataDimension::Source,
        ];
    }
    type Acc<'a> = (u64, HashSet<(&'a str, &'a str)>, HashSet<&'a [u8]>);
    let mut cells: BTreeMap<Vec<&str>, Acc<'_>> = BTreeMap::new();
    for r in c.rows.iter().filter(|r| r.visible) {
        let key: Vec<&str> = dims.iter().map(|&d| value(c, r, d)).collect();
        let e = cells.entry(key).or_default();
        e.0 += 1;
        e.1.insert((&r.source, &r.record_id));
        e.2.insert(&r.patient_key);
    }
    Ok(StrataTable {
        dimensions: dims
            .iter()
            .map(|&d| dimension_name(d).to_string())
            .collect(),
        k: c.k,
        age_edges: c.age_edges.iter().map(|&e| e as u32).collect(),
        cells: cells
            .into_iter()
            .map(|(k, (segments, records, patients))| StrataCell {
                key: k.into_iter().map(str::to_string).collect(),
                segments,
                records: records.len() as u64,
                patients: patients.len() as u64,
            })
            .collect(),
        suppressed_cells: c.suppressed_cells,
    })
}
