//! Served slices: the Arrow schema of a DoGet stream, building its batches from store rows,
//! and verifying every received row (docs/flight.md "Served rows").

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, FixedSizeBinaryBuilder, ListBuilder, RecordBatch, StringArray, UInt8Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, SchemaRef};

use crate::commitment::CommitmentTree;
use arrow::error::ArrowError;

use crate::error::{GatewayError, Result};
use ecgfed_ledger::log::Hash32;

use crate::server::catalog::Catalog;
use crate::server::served::SliceKeys;

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
    /// The dataset commitment of each leaf's store row, in leaf order (hex in the stored
    /// JSON). Empty for slices reserved before leaves were made per slice: their leaves are
    /// those dataset commitments and their rows are served as stored.
    #[serde(default)]
    pub rows: Vec<Hash32>,
    /// The slice of a federated cohort: its rows never leave (no DoGet), rounds train on them
    /// here.
    #[serde(default)]
    pub federated: bool,
}

impl SliceRecord {
    /// The commitments in leaf order, as bytes.
    pub fn commitment_bytes(&self) -> Vec<[u8; 32]> {
        self.commitments.iter().map(|h| h.0).collect()
    }

    /// Whether the slice was reserved before leaves were made per slice (see `rows`).
    pub fn legacy(&self) -> bool {
        self.rows.is_empty()
    }

    /// The dataset commitment of leaf `i`'s store row.
    pub fn row_commitment(&self, i: usize) -> Option<&Hash32> {
        if self.legacy() {
            self.commitments.get(i)
        } else {
            self.rows.get(i)
        }
    }

    /// The slice's commitment tree (for inclusion proofs).
    pub(crate) fn tree(&self) -> CommitmentTree {
        CommitmentTree::new(&self.commitment_bytes())
    }
}

/// A leaf of a slice whose row was erased since the reservation, as announced to the puller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErasedLeaf {
    /// Leaf index.
    pub index: u64,
    /// The leaf commitment.
    pub commitment: Hash32,
    /// The leaf's salt, with which the puller finds the erasure's token on the ledger (`None`
    /// for slices reserved before leaves were per slice: the entry names the commitment).
    pub salt: Option<Hash32>,
}

/// Leaf index and inclusion proof of a segment id in the slice tree (`None`: not in it).
pub(super) type LeafOf<'a> = dyn Fn(&str) -> Option<(u64, Vec<[u8; 32]>)> + 'a;

/// Turns one store batch into served rows: `leaf_of(segment_id)` gives the row's leaf index
/// and proof, `keys` what leaves in place of the stored identifiers, age and hash. Rows it
/// returns `None` for are dropped.
pub(super) fn serve_batch(
    store: &RecordBatch,
    catalog: &Catalog,
    schema: &SchemaRef,
    leaf_of: &LeafOf<'_>,
    keys: &SliceKeys,
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
    let (mut segment_ids, mut record_ids, mut pseudonyms, mut ages) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut hash, mut salt, mut comm) = (
        FixedSizeBinaryBuilder::new(32),
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
        let out = keys.row(row);
        segment_ids.push(out.segment_id);
        record_ids.push(out.record_id);
        pseudonyms.push(out.pseudonym);
        ages.push(out.age);
        hash.append_value(out.content_hash)?;
        salt.append_value(out.salt)?;
        comm.append_value(out.commitment)?;
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
        Arc::new(StringArray::from(segment_ids)),
        Arc::new(StringArray::from(record_ids)),
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
        Arc::new(UInt8Array::from(ages)),
        pick(col("sex")?)?,
        Arc::new(hash.finish()),
        Arc::new(salt.finish()),
        Arc::new(comm.finish()),
        Arc::new(UInt64Array::from(leaf)),
        Arc::new(proof.finish()),
    ];
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
