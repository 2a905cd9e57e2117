//! Deterministic seeded selection of a site's slice of a cohort (docs/flight.md "Slices").
//!
//! For each allocation cell (label, sex, age band) of this site, in the order of the
//! CohortCreated entry, the candidates are the visible rows of that stratum; they are ordered
//! by SHA-256("ecgfed/v1/select\n" ‖ seed (u64 big-endian) ‖ cohort id ‖ 0x00 ‖ segment id)
//! and the first `count` are taken. The same store, cohort and seed give the same slice.

use ecgfed_proto::v1::AllocationCell;
use sha2::{Digest, Sha256};

use crate::error::{GatewayError, Result};
use crate::server::catalog::Catalog;

/// Domain-separation tag of the selection order.
pub(super) const SELECT_TAG: &[u8] = b"ecgfed/v1/select\n";

fn order_key(seed: u64, cohort: &str, segment_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SELECT_TAG);
    h.update(seed.to_be_bytes());
    h.update(cohort.as_bytes());
    h.update([0]);
    h.update(segment_id.as_bytes());
    h.finalize().into()
}

/// Row indexes (into `c.rows`) of the slice, in slice order.
pub(super) fn select(
    c: &Catalog,
    cohort: &str,
    seed: u64,
    cells: &[AllocationCell],
) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for cell in cells {
        let mut cand: Vec<(usize, [u8; 32])> = c
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.visible
                    && r.label == cell.label
                    && r.sex == cell.sex
                    && r.age_band == cell.age_band
            })
            .map(|(i, r)| (i, order_key(seed, cohort, &r.segment_id)))
            .collect();
        if (cand.len() as u64) < cell.count {
            return Err(GatewayError::refused(
                tonic::Code::FailedPrecondition,
                format!(
                    "allocation cell label={} sex={} age_band={} asks for {} segments; site {} has {} selectable",
                    cell.label,
                    cell.sex,
                    cell.age_band,
                    cell.count,
                    c.site,
                    cand.len()
                ),
            ));
        }
        cand.sort_by_key(|c| c.1);
        out.extend(cand.into_iter().take(cell.count as usize).map(|(i, _)| i));
    }
    Ok(out)
}
