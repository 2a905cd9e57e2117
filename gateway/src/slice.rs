//! Served slices: the Arrow schema of a DoGet stream, building its batches from store rows,
//! and verifying every received row (docs/flight.md "Served rows").

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, FixedSizeBinaryBuilder, ListArray, ListBuilder,
    RecordBatch, StringArray, UInt64Array,
};
use arrow::datatypes::{
    DataType, Field, Float32Type, Schema, SchemaRef, UInt8Type, UInt32Type, UInt64Type,
};
use ecgfed_datasets::segment::SegmentView;

use crate::catalog::Catalog;
use crate::commitment::{CommitmentTree, commitment};
use crate::error::{GatewayError, Result};

/// Flight ticket prefix: a ticket is `"ecgfed-slice:" + slice_id` in UTF-8.
pub const TICKET_PREFIX: &str = "ecgfed-slice:";

/// Schema metadata keys of a served stream.
pub mod meta {
    /// Slice id.
    pub const SLICE_ID: &str = "ecgfed.slice_id";
    /// Cohort id.
    pub const COHORT_ID: &str = "ecgfed.cohort_id";
    /// Site.
    pub const SITE: &str = "ecgfed.site";
    /// Hex of the slice root.
    pub const SLICE_ROOT: &str = "ecgfed.slice_root";
    /// Leaves of the slice tree (decimal).
    pub const SLICE_SIZE: &str = "ecgfed.slice_size";
    /// Index of the CohortSliceCommitted entry (decimal).
    pub const LEDGER_INDEX: &str = "ecgfed.ledger_index";
    /// JSON list of `[leaf index, hex commitment]` of leaves not served because erased.
    pub const ERASED: &str = "ecgfed.erased";
}

/// The ticket of a slice.
pub fn ticket(slice_id: &str) -> Vec<u8> {
    format!("{TICKET_PREFIX}{slice_id}").into_bytes()
}

/// The slice id of a ticket.
pub fn parse_ticket(t: &[u8]) -> Result<String> {
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.strip_prefix(TICKET_PREFIX))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            GatewayError::refused(
                tonic::Code::InvalidArgument,
                format!("ticket is not \"{TICKET_PREFIX}<slice id>\""),
            )
        })
}

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
    /// Hex commitments in leaf order.
    pub commitments: Vec<String>,
    /// Hex slice root.
    pub root: String,
    /// Index of the CohortSliceCommitted entry.
    pub ledger_index: u64,
}

impl SliceRecord {
    /// The commitments in leaf order, as bytes.
    pub fn commitment_bytes(&self) -> Vec<[u8; 32]> {
        self.commitments
            .iter()
            .map(|h| crate::commitment::hash32(h).unwrap_or([0; 32]))
            .collect()
    }

    /// The slice's commitment tree (for inclusion proofs).
    pub fn tree(&self) -> CommitmentTree {
        CommitmentTree::new(&self.commitment_bytes())
    }
}

/// The Arrow schema of served rows: the store schema with `patient` replaced by `pseudonym`,
/// plus `salt`, `commitment`, `leaf_index` and `proof`.
pub fn served_schema(metadata: HashMap<String, String>) -> SchemaRef {
    let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, false)));
    let h32 = DataType::FixedSizeBinary(32);
    Arc::new(
        Schema::new(vec![
            Field::new("segment_id", DataType::Utf8, false),
            Field::new("record_id", DataType::Utf8, false),
            Field::new("pseudonym", DataType::Utf8, false),
            Field::new("site", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("fs", DataType::Float32, false),
            Field::new("leads", list(DataType::Utf8), false),
            Field::new("start_sample", DataType::UInt64, false),
            Field::new("n_samples", DataType::UInt32, false),
            Field::new("signal", list(DataType::Float32), false),
            Field::new("label", DataType::Utf8, false),
            Field::new("label_raw", list(DataType::Utf8), false),
            Field::new("age", DataType::UInt8, true),
            Field::new("sex", DataType::Utf8, true),
            Field::new("content_hash", h32.clone(), false),
            Field::new("salt", h32.clone(), false),
            Field::new("commitment", h32.clone(), false),
            Field::new("leaf_index", DataType::UInt64, false),
            Field::new("proof", list(h32), false),
        ])
        .with_metadata(metadata),
    )
}

/// Leaf index and inclusion proof of a segment id in the slice tree (`None`: not in it).
pub type LeafOf<'a> = dyn Fn(&str) -> Option<(u64, Vec<[u8; 32]>)> + 'a;

/// Turns one store batch (store schema v1) into served rows: `leaf_of(segment_id)` gives the
/// row's leaf index and proof. Rows it returns `None` for are dropped.
pub fn serve_batch(
    store: &RecordBatch,
    catalog: &Catalog,
    schema: &SchemaRef,
    leaf_of: &LeafOf<'_>,
) -> Result<RecordBatch> {
    let col = |n: &str| {
        store
            .column_by_name(n)
            .cloned()
            .ok_or_else(|| GatewayError::Arrow(format!("store batch has no column {n}")))
    };
    let sid = col("segment_id")?;
    let sid = sid
        .as_string_opt::<i32>()
        .ok_or_else(|| GatewayError::Arrow("segment_id is not Utf8".into()))?;
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

/// What a verified stream contained.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifiedRows {
    /// Rows verified.
    pub rows: u64,
    /// Bytes of float32 samples verified.
    pub signal_bytes: u64,
}

/// Column `name` of `b` as a primitive array of type `T` (`what` names it in the error).
fn primitive<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    b: &'a RecordBatch,
    name: &str,
    what: &str,
) -> Result<&'a arrow::array::PrimitiveArray<T>> {
    b.column_by_name(name)
        .ok_or_else(|| GatewayError::Verification(format!("served batch has no column {name}")))?
        .as_primitive_opt::<T>()
        .ok_or_else(|| GatewayError::Verification(format!("{name} is not {what}")))
}

/// The strings of row `i` of a `list<utf8>` column, borrowed.
fn strings(l: &ListArray, i: usize) -> Result<Vec<&str>> {
    let values = l
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| GatewayError::Verification("list<utf8> column of another type".into()))?;
    let (a, z) = (
        l.value_offsets()[i] as usize,
        l.value_offsets()[i + 1] as usize,
    );
    if z > values.len() || a > z {
        return Err(GatewayError::Verification(
            "list<utf8> offsets out of range".into(),
        ));
    }
    Ok((a..z).map(|j| values.value(j)).collect())
}

/// Verifies the rows of one slice as they arrive, batch by batch, against the slice root of
/// `size` leaves recorded on the ledger: for each row, the content hash recomputed from the
/// row's own values, the commitment recomputed from salt, content hash and segment id, and
/// the commitment's inclusion proof at its leaf index (nodes verified for earlier rows are
/// remembered, so a path stops at the first known node). Each leaf may be served once.
#[derive(Debug, Clone)]
pub struct SliceVerifier {
    size: u64,
    seen: Vec<bool>,
    tree: ecgfed_ledger::log::InclusionVerifier,
}

impl SliceVerifier {
    /// A verifier for the slice of `size` leaves with `root`.
    pub fn new(root: [u8; 32], size: u64) -> Self {
        SliceVerifier {
            size,
            seen: vec![false; size as usize],
            tree: ecgfed_ledger::log::InclusionVerifier::new(size, root),
        }
    }

    /// Which leaves have been served and verified.
    pub fn into_seen(self) -> Vec<bool> {
        self.seen
    }

    /// Verifies every row of a served batch, in row order, and marks its leaves as seen.
    /// Errors name the segment; after an error the verifier's state is not meaningful and the
    /// pull must stop.
    pub fn verify_batch(&mut self, b: &RecordBatch) -> Result<VerifiedRows> {
        let size = self.size;
        let bad = |m: String| GatewayError::Verification(m);
        let col = |n: &str| {
            b.column_by_name(n)
                .ok_or_else(|| bad(format!("served batch has no column {n}")))
        };
        let s = |n: &str| -> Result<&StringArray> {
            col(n)?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(format!("column {n} is not Utf8")))
        };
        let l = |n: &str| -> Result<&ListArray> {
            col(n)?
                .as_list_opt::<i32>()
                .ok_or_else(|| bad(format!("column {n} is not a list")))
        };
        let fsb = |n: &str| -> Result<&FixedSizeBinaryArray> {
            col(n)?
                .as_fixed_size_binary_opt()
                .filter(|a| a.value_length() == 32)
                .ok_or_else(|| bad(format!("column {n} is not FixedSizeBinary(32)")))
        };
        let (sid, rid, src, label, sex) = (
            s("segment_id")?,
            s("record_id")?,
            s("source")?,
            s("label")?,
            s("sex")?,
        );
        let (leads, signal, raw, proof) = (l("leads")?, l("signal")?, l("label_raw")?, l("proof")?);
        let (chash, salt, comm) = (fsb("content_hash")?, fsb("salt")?, fsb("commitment")?);
        let fs = primitive::<Float32Type>(b, "fs", "Float32")?;
        let start = primitive::<UInt64Type>(b, "start_sample", "UInt64")?;
        let n = primitive::<UInt32Type>(b, "n_samples", "UInt32")?;
        let age = primitive::<UInt8Type>(b, "age", "UInt8")?;
        let leaf = primitive::<UInt64Type>(b, "leaf_index", "UInt64")?;
        let samples = signal
            .values()
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| bad("signal is not list<float32>".into()))?
            .values();
        let offsets = signal.value_offsets();
        let proof_values = proof
            .values()
            .as_fixed_size_binary_opt()
            .filter(|a| a.value_length() == 32)
            .ok_or_else(|| bad("proof is not list<FixedSizeBinary(32)>".into()))?;
        let proof_offsets = proof.value_offsets();
        let mut out = VerifiedRows::default();
        for i in 0..b.num_rows() {
            let id = sid.value(i);
            let lead_refs = strings(leads, i)?;
            let raw_refs = strings(raw, i)?;
            let (a, z) = (offsets[i] as usize, offsets[i + 1] as usize);
            let sig = samples
                .get(a..z)
                .ok_or_else(|| bad(format!("segment {id}: signal offsets out of range")))?;
            let view = SegmentView {
                source: src.value(i),
                record_id: rid.value(i),
                start_sample: start.value(i),
                n_samples: n.value(i),
                fs: fs.value(i),
                leads: &lead_refs,
                signal: sig,
                label: label.value(i),
                label_raw: &raw_refs,
                age: age.is_valid(i).then(|| age.value(i)),
                sex: sex.is_valid(i).then(|| sex.value(i)),
            };
            let h = view.content_hash();
            if h[..] != *chash.value(i) {
                return Err(bad(format!(
                    "segment {id}: its values do not hash to its content hash (data altered)"
                )));
            }
            let salt_i: [u8; 32] = salt.value(i).try_into().unwrap_or([0; 32]);
            let c = commitment(&salt_i, &h, id);
            if c[..] != *comm.value(i) {
                return Err(bad(format!(
                    "segment {id}: commitment does not match salt, content hash and segment id"
                )));
            }
            let index = leaf.value(i);
            let (pa, pz) = (proof_offsets[i] as usize, proof_offsets[i + 1] as usize);
            if pz > proof_values.len() || pa > pz {
                return Err(bad(format!("segment {id}: proof offsets out of range")));
            }
            // The proof's hashes, read in place (32-byte values, checked above).
            let (path, _) = proof_values.value_data()[pa * 32..pz * 32].as_chunks::<32>();
            self.tree
            .verify(index, &ecgfed_ledger::log::leaf_hash(&c), path)
            .map_err(|e| {
                bad(format!(
                    "segment {id}: commitment is not in the slice root recorded on the ledger: {e}"
                ))
            })?;
            let slot = self.seen.get_mut(index as usize).ok_or_else(|| {
                bad(format!(
                    "segment {id}: leaf index {index} beyond the slice's {size} rows"
                ))
            })?;
            if *slot {
                return Err(bad(format!("segment {id}: leaf {index} served twice")));
            }
            *slot = true;
            out.rows += 1;
            out.signal_bytes += (z - a) as u64 * 4;
        }
        Ok(out)
    }
}
