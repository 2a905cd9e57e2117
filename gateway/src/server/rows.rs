//! Served slices: the Arrow schema of a DoGet stream, building its batches from store rows,
//! and verifying every received row (docs/flight.md "Served rows").

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, FixedSizeBinaryBuilder, ListBuilder, RecordBatch, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, SchemaRef};

use crate::commitment::CommitmentTree;
use arrow::error::ArrowError;

use crate::error::{GatewayError, Result};
use ecgfed_ledger::log::Hash32;

use crate::server::catalog::Catalog;

/// A reserved slice as the gateway keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SliceRecord {
    /// `<cohort id>/<site>`.
    pub slice_id: String,
    /// Cohort.
    pub cohort_id: String,
    /// The granted requester (member id).
    pub requester: String,
    /// Dataset.
    pub dataset_id: String,
    /// Seed of the selection.
    pub seed: u64,
    /// Segment ids in slice (leaf) order.
    pub segments: Vec<String>,
    /// Commitments in leaf order (hex in the stored JSON).
    pub commitments: Vec<Hash32>,
    /// The slice root (hex in the stored JSON).
    pub root: Hash32,
    /// Index of the CohortSliceCommitted entry.
    pub ledger_index: u64,
    /// When this gateway reserved it, ms since the Unix epoch (0 for reservations made before
    /// quotas existed, and rebuilt ones): what per-scientist quotas count.
    #[serde(default)]
    pub reserved_at_ms: i64,
}

impl SliceRecord {
    /// The commitments in leaf order, as bytes.
    pub fn commitment_bytes(&self) -> Vec<[u8; 32]> {
        self.commitments.iter().map(|h| h.0).collect()
    }

    /// The slice's commitment tree (for inclusion proofs).
    pub(crate) fn tree(&self) -> CommitmentTree {
        CommitmentTree::new(&self.commitment_bytes())
    }
}

/// Leaf index and inclusion proof of a segment id in the slice tree (`None`: not in it).
pub(super) type LeafOf<'a> = dyn Fn(&str) -> Option<(u64, Vec<[u8; 32]>)> + 'a;

/// Turns one store batch (store schema v1) into served rows: `leaf_of(segment_id)` gives the
/// row's leaf index and proof. Rows it returns `None` for are dropped.
pub(super) fn serve_batch(
    store: &RecordBatch,
    catalog: &Catalog,
    schema: &SchemaRef,
    leaf_of: &LeafOf<'_>,
) -> Result<RecordBatch> {
    let col = |n: &str| {
        store.column_by_name(n).cloned().ok_or_else(|| {
            GatewayError::Arrow(ArrowError::SchemaError(format!(
                "store batch has no column {n}"
            )))
        })
    };
    let sid = col("segment_id")?;
    let sid = sid.as_string_opt::<i32>().ok_or_else(|| {
        GatewayError::Arrow(ArrowError::SchemaError("segment_id is not Utf8".into()))
    })?;
    let mut keep = Vec::with_capacity(store.num_rows());
    let mut pseudonyms = Vec::new();
    let (mut salt, mut comm) = (
        FixedSizeBinaryBuilder::new(32),
        FixedSizeBinaryBuilder::new(32),
    );
    let mut leaf = Vec::new();
    let mut proof = ListBuilder::new(FixedSizeBinaryBuilder::new(32)).with_field(Arc::new(
        Field::new_list_field(DataType::FixedSizeBinary(32), false),
    ));
    for i in 0..store.num_rows() {
        let id = sid.value(i);
        let (Some(row), Some((index, path))) = (catalog.row(id), leaf_of(id)) else {
            keep.push(false);
            continue;
        };
        keep.push(true);
        pseudonyms.push(row.pseudonym.clone());
        salt.append_value(row.salt)?;
        comm.append_value(row.commitment)?;
        leaf.push(index);
        for h in &path {
            proof.values().append_value(h)?;
        }
        proof.append(true);
    }
    let all = keep.iter().all(|k| *k);
    let mask = arrow::array::BooleanArray::from(keep);
    let pick = |a: ArrayRef| -> Result<ArrayRef> {
        if all {
            Ok(a)
        } else {
            Ok(arrow::compute::filter(&a, &mask)?)
        }
    };
    let cols: Vec<ArrayRef> = vec![
        pick(col("segment_id")?)?,
        pick(col("record_id")?)?,
        Arc::new(StringArray::from(pseudonyms)),
        pick(col("site")?)?,
        pick(col("source")?)?,
        pick(col("fs")?)?,
        pick(col("leads")?)?,
        pick(col("start_sample")?)?,
        pick(col("n_samples")?)?,
        pick(col("signal")?)?,
        pick(col("label")?)?,
        pick(col("label_raw")?)?,
        pick(col("age")?)?,
        pick(col("sex")?)?,
        pick(col("content_hash")?)?,
        Arc::new(salt.finish()),
        Arc::new(comm.finish()),
        Arc::new(UInt64Array::from(leaf)),
        Arc::new(proof.finish()),
    ];
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
