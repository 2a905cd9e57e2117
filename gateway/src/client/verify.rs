//! Verification of received rows (docs/flight.md "Served rows"): every row's content hash,
//! commitment and inclusion proof against the slice root recorded on the ledger, as the rows
//! arrive.

use arrow::array::{Array, AsArray, FixedSizeBinaryArray, ListArray, RecordBatch, StringArray};
use arrow::datatypes::{Float32Type, UInt8Type, UInt32Type, UInt64Type};
use ecgfed_datasets::segment::SegmentView;

use crate::commitment::commitment;
use ecgfed_ledger::log::Hash32;

use crate::error::{Result, VerificationError};

/// What a verified stream contained.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifiedRows {
    /// Rows verified.
    pub rows: u64,
    /// Bytes of float32 samples verified.
    pub signal_bytes: u64,
}

/// A missing or mistyped column of a served batch.
fn column(column: &'static str, expected: &'static str) -> VerificationError {
    VerificationError::Column { column, expected }
}

/// Column `name` of `b` as a primitive array of type `T` (`what` names the type in the error).
fn primitive<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    b: &'a RecordBatch,
    name: &'static str,
    what: &'static str,
) -> Result<&'a arrow::array::PrimitiveArray<T>, VerificationError> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
        .ok_or(column(name, what))
}

/// The strings of row `i` (segment `segment`) of the `list<utf8>` column `name`, borrowed.
fn strings<'a>(
    l: &'a ListArray,
    i: usize,
    name: &'static str,
    segment: &str,
) -> Result<Vec<&'a str>, VerificationError> {
    let values = l
        .values()
        .as_string_opt::<i32>()
        .ok_or(column(name, "list<utf8>"))?;
    let (a, z) = (
        l.value_offsets()[i] as usize,
        l.value_offsets()[i + 1] as usize,
    );
    if z > values.len() || a > z {
        return Err(VerificationError::Offsets {
            segment: segment.into(),
            column: name,
        });
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
        let s = |n: &'static str| -> Result<&StringArray, VerificationError> {
            b.column_by_name(n)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or(column(n, "Utf8"))
        };
        let l = |n: &'static str, t: &'static str| -> Result<&ListArray, VerificationError> {
            b.column_by_name(n)
                .and_then(|c| c.as_list_opt::<i32>())
                .ok_or(column(n, t))
        };
        let fsb = |n: &'static str| -> Result<&FixedSizeBinaryArray, VerificationError> {
            b.column_by_name(n)
                .and_then(|c| c.as_fixed_size_binary_opt())
                .filter(|a| a.value_length() == 32)
                .ok_or(column(n, "FixedSizeBinary(32)"))
        };
        let (sid, rid, src, label, sex) = (
            s("segment_id")?,
            s("record_id")?,
            s("source")?,
            s("label")?,
            s("sex")?,
        );
        let (leads, signal) = (l("leads", "list<utf8>")?, l("signal", "list<float32>")?);
        let (raw, proof) = (
            l("label_raw", "list<utf8>")?,
            l("proof", "list<FixedSizeBinary(32)>")?,
        );
        let (chash, salt, comm) = (fsb("content_hash")?, fsb("salt")?, fsb("commitment")?);
        let fs = primitive::<Float32Type>(b, "fs", "Float32")?;
        let start = primitive::<UInt64Type>(b, "start_sample", "UInt64")?;
        let n = primitive::<UInt32Type>(b, "n_samples", "UInt32")?;
        let age = primitive::<UInt8Type>(b, "age", "UInt8")?;
        let leaf = primitive::<UInt64Type>(b, "leaf_index", "UInt64")?;
        let samples = signal
            .values()
            .as_primitive_opt::<Float32Type>()
            .ok_or(column("signal", "list<float32>"))?
            .values();
        let offsets = signal.value_offsets();
        let proof_values = proof
            .values()
            .as_fixed_size_binary_opt()
            .filter(|a| a.value_length() == 32)
            .ok_or(column("proof", "list<FixedSizeBinary(32)>"))?;
        let proof_offsets = proof.value_offsets();
        let mut out = VerifiedRows::default();
        for i in 0..b.num_rows() {
            let id = sid.value(i);
            let lead_refs = strings(leads, i, "leads", id)?;
            let raw_refs = strings(raw, i, "label_raw", id)?;
            let (a, z) = (offsets[i] as usize, offsets[i + 1] as usize);
            let sig = samples
                .get(a..z)
                .ok_or_else(|| VerificationError::Offsets {
                    segment: id.into(),
                    column: "signal",
                })?;
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
                return Err(VerificationError::ContentHash {
                    segment: id.into(),
                    served: Hash32(chash.value(i).try_into().unwrap_or_default()),
                    computed: Hash32(h),
                }
                .into());
            }
            let salt_i: [u8; 32] = salt.value(i).try_into().unwrap_or([0; 32]);
            let c = commitment(&salt_i, &h, id);
            if c[..] != *comm.value(i) {
                return Err(VerificationError::Commitment { segment: id.into() }.into());
            }
            let index = leaf.value(i);
            let (pa, pz) = (proof_offsets[i] as usize, proof_offsets[i + 1] as usize);
            if pz > proof_values.len() || pa > pz {
                return Err(VerificationError::Offsets {
                    segment: id.into(),
                    column: "proof",
                }
                .into());
            }
            // The proof's hashes, read in place (32-byte values, checked above).
            let (path, _) = proof_values.value_data()[pa * 32..pz * 32].as_chunks::<32>();
            self.tree
                .verify(index, &ecgfed_ledger::log::leaf_hash(&c), path)
                .map_err(|source| VerificationError::NotInSlice {
                    segment: id.into(),
                    leaf: index,
                    source,
                })?;
            let slot = self.seen.get_mut(index as usize).ok_or_else(|| {
                VerificationError::LeafOutOfRange {
                    segment: id.into(),
                    leaf: index,
                    size,
                }
            })?;
            if *slot {
                return Err(VerificationError::ServedTwice {
                    segment: id.into(),
                    leaf: index,
                }
                .into());
            }
            *slot = true;
            out.rows += 1;
            out.signal_bytes += (z - a) as u64 * 4;
        }
        Ok(out)
    }
}
