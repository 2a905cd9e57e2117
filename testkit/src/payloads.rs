//! Ledger payloads with fixed contents, for tests and load generators that need entries of
//! each kind and do not care about their values.

use ecgfed_proto::v1::{
    CohortCreated, DatasetRegistered, ModelTrained, QueryBySubjectRequest, Subject, SubjectKind,
    entry_body::Payload,
};

/// Every `ModelTrained` entry, from the first, unproven: a long answer (what the stream-limit
/// tests and the adversary bench leave unread).
pub fn all_models() -> QueryBySubjectRequest {
    QueryBySubjectRequest {
        subject: Some(Subject {
            kind: SubjectKind::EntryKind as i32,
            id: "ModelTrained".into(),
        }),
        from_index: 0,
        limit: 0,
        prove_at_size: 0,
    }
}

/// A `DatasetRegistered` of `site` with id `id` (fixed counts and hashes).
pub fn dataset(site: &str, id: &str) -> Payload {
    Payload::DatasetRegistered(DatasetRegistered {
        dataset_id: id.into(),
        site: site.into(),
        version: 1,
        record_count: 10,
        segment_count: 100,
        commitment_root: vec![1; 32],
        manifest_sha256: vec![2; 32],
        summary_json: "{}".into(),
    })
}

/// A `CohortCreated` of `id` requested by `requester`, with no allocation.
pub fn cohort(requester: &str, id: &str) -> Payload {
    Payload::CohortCreated(CohortCreated {
        cohort_id: id.into(),
        spec_sha256: vec![3; 32],
        allocation: vec![],
        seed: 7,
        purpose: "test".into(),
        requester: requester.into(),
        ..Default::default()
    })
}

/// A `ModelTrained` of `id` for cohort `c1`.
pub fn model(id: &str) -> Payload {
    Payload::ModelTrained(ModelTrained {
        model_id: id.into(),
        cohort_id: "c1".into(),
        weights_sha256: vec![4; 32],
        code_version: "test".into(),
        hyperparameters_json: "{}".into(),
        metrics_json: "{}".into(),
        ..Default::default()
    })
}
