//! Provenance exports of model lineages: W3C PROV-JSON (one document) and OpenLineage run
//! events (one per activity). Both are validated against the official JSON schemas shipped in
//! `audit/schemas/` (tests/export_schemas.rs). docs/audit.md maps every ledger entry to them.

use std::collections::BTreeMap;

use ecgfed_proto::v1::SubjectKind;
use ecgfed_proto::v1::entry_body::Payload;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::lineage::{EntryRef, ModelLineage};
use crate::source::Source;

/// Producer URI written into OpenLineage events and facets.
pub const PRODUCER: &str = concat!("urn:ecgfed:audit:", env!("CARGO_PKG_VERSION"));
/// The OpenLineage spec version the events follow (the schema shipped in the repository).
pub const OPENLINEAGE_SCHEMA_URL: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
/// `_schemaURL` of the demographics dataset facet (its schema: audit/schemas/facets/).
pub const DEMOGRAPHICS_FACET_URL: &str =
    "urn:ecgfed:schema:facets:EcgfedDemographicsDatasetFacet:v1";
/// `_schemaURL` of the consent dataset facet.
pub const CONSENT_FACET_URL: &str = "urn:ecgfed:schema:facets:EcgfedConsentDatasetFacet:v1";
/// `_schemaURL` of the ledger-entry run facet.
pub const LEDGER_FACET_URL: &str = "urn:ecgfed:schema:facets:EcgfedLedgerEntryRunFacet:v1";

/// Every model id on the ledger (from the `entry_kind: ModelTrained` index), in ledger order.
pub async fn model_ids<S: Source>(src: &mut S) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in src
        .by_subject(SubjectKind::EntryKind, "ModelTrained")
        .await?
    {
        if let Some(Payload::ModelTrained(m)) = e.payload()
            && !v.contains(&m.model_id)
        {
            v.push(m.model_id.clone());
        }
    }
    Ok(v)
}

fn typed(v: &str, ty: &str) -> Value {
    json!({ "$": v, "type": ty })
}

/// PROV-JSON document of the lineages: entities (dataset versions, slices, cohorts, models),
/// activities (registration, selection, transfer, training), agents (members) and the
/// relations between them. Ids are `ecgfed:<kind>-<ledger index>`.
pub fn prov_json(lineages: &[ModelLineage]) -> Value {
    let mut entity = Map::new();
    let mut activity = Map::new();
    let mut agent = Map::new();
    let mut rel: BTreeMap<&'static str, Map<String, Value>> = BTreeMap::new();
    let mut add_rel = |kind: &'static str, body: Value| {
        let m = rel.entry(kind).or_default();
        let id = format!("_:{}{}", kind, m.len() + 1);
        m.insert(id, body);
    };
    let mut add_agent = |who: &str, role: &str| {
        let t = match role {
            "hospital" => "prov:Organization",
            "scientist" | "regulator" => "prov:Person",
            _ => "prov:SoftwareAgent",
        };
        agent.insert(
            format!("ecgfed:member-{who}"),
            json!({ "prov:type": typed(t, "prov:QUALIFIED_NAME"), "ecgfed:role": role, "prov:label": who }),
        );
    };
    let activity_of = |kind: &str, e: &EntryRef| {
        (
            format!("ecgfed:{kind}-{}", e.index),
            json!({ "prov:startTime": e.time, "prov:endTime": e.time, "prov:type": format!("ecgfed:{kind}"), "ecgfed:ledgerEntry": e.index }),
        )
    };
    for l in lineages {
        let model_id = format!("ecgfed:model-{}", l.model.entry.index);
        let cohort_id = format!("ecgfed:cohort-{}", l.cohort.entry.index);
        entity.insert(
            model_id.clone(),
            json!({ "prov:type": "ecgfed:Model", "prov:label": l.model.model_id, "ecgfed:weightsSha256": l.model.weights_sha256, "ecgfed:codeVersion": l.model.code_version, "ecgfed:ledgerEntry": l.model.entry.index }),
        );
        entity.insert(
            cohort_id.clone(),
            json!({ "prov:type": "ecgfed:Cohort", "prov:label": l.cohort.cohort_id, "ecgfed:purpose": l.cohort.purpose, "ecgfed:seed": l.cohort.seed, "ecgfed:specSha256": l.cohort.spec_sha256, "ecgfed:ledgerEntry": l.cohort.entry.index }),
        );
        let (train_id, train) = activity_of("training", &l.model.entry);
        activity.insert(train_id.clone(), train);
        let (plan_id, plan) = activity_of("selection", &l.cohort.entry);
        activity.insert(plan_id.clone(), plan);
        add_agent(&l.model.entry.signer, "scientist");
        add_agent(&l.cohort.requester, "scientist");
        add_rel(
            "wasGeneratedBy",
            json!({ "prov:entity": model_id, "prov:activity": train_id, "prov:time": l.model.entry.time }),
        );
        add_rel(
            "used",
            json!({ "prov:activity": train_id, "prov:entity": cohort_id }),
        );
        add_rel(
            "wasAssociatedWith",
            json!({ "prov:activity": train_id, "prov:agent": format!("ecgfed:member-{}", l.model.entry.signer) }),
        );
        add_rel(
            "wasDerivedFrom",
            json!({ "prov:generatedEntity": model_id, "prov:usedEntity": cohort_id }),
        );
        add_rel(
            "wasGeneratedBy",
            json!({ "prov:entity": cohort_id, "prov:activity": plan_id, "prov:time": l.cohort.entry.time }),
        );
        add_rel(
            "wasAssociatedWith",
            json!({ "prov:activity": plan_id, "prov:agent": format!("ecgfed:member-{}", l.cohort.requester) }),
        );
        add_rel(
            "wasAttributedTo",
            json!({ "prov:entity": model_id, "prov:agent": format!("ecgfed:member-{}", l.model.entry.signer) }),
        );
        for d in &l.datasets {
            let did = format!("ecgfed:dataset-{}", d.entry.index);
            entity.insert(
                did.clone(),
                json!({ "prov:type": "ecgfed:DatasetVersion", "prov:label": format!("{} v{}", d.dataset_id, d.version), "ecgfed:site": d.site, "ecgfed:records": d.records, "ecgfed:segments": d.segments, "ecgfed:commitmentRoot": d.commitment_root, "ecgfed:ledgerEntry": d.entry.index }),
            );
            let (rid, r) = activity_of("registration", &d.entry);
            activity.insert(rid.clone(), r);
            add_agent(&d.entry.signer, "hospital");
            add_rel(
                "wasGeneratedBy",
                json!({ "prov:entity": did, "prov:activity": rid, "prov:time": d.entry.time }),
            );
            add_rel(
                "wasAssociatedWith",
                json!({ "prov:activity": rid, "prov:agent": format!("ecgfed:member-{}", d.entry.signer) }),
            );
            add_rel(
                "wasAttributedTo",
                json!({ "prov:entity": did, "prov:agent": format!("ecgfed:member-{}", d.entry.signer) }),
            );
        }
        for s in &l.slices {
            let sid = format!("ecgfed:slice-{}", s.entry.index);
            entity.insert(
                sid.clone(),
                json!({ "prov:type": "ecgfed:Slice", "prov:label": s.slice_id, "ecgfed:site": s.site, "ecgfed:rows": s.rows, "ecgfed:sliceRoot": s.slice_root, "ecgfed:ledgerEntry": s.entry.index }),
            );
            let (selid, sel) = activity_of("selection", &s.entry);
            activity.insert(selid.clone(), sel);
            add_agent(&s.entry.signer, "hospital");
            add_rel(
                "wasGeneratedBy",
                json!({ "prov:entity": sid, "prov:activity": selid, "prov:time": s.entry.time }),
            );
            add_rel(
                "wasAssociatedWith",
                json!({ "prov:activity": selid, "prov:agent": format!("ecgfed:member-{}", s.entry.signer) }),
            );
            if let Some(d) = l
                .datasets
                .iter()
                .find(|d| d.dataset_id == s.dataset_id && d.version == s.dataset_version)
            {
                let did = format!("ecgfed:dataset-{}", d.entry.index);
                add_rel(
                    "used",
                    json!({ "prov:activity": selid, "prov:entity": did }),
                );
                add_rel(
                    "wasDerivedFrom",
                    json!({ "prov:generatedEntity": sid, "prov:usedEntity": did }),
                );
            }
            add_rel(
                "wasDerivedFrom",
                json!({ "prov:generatedEntity": cohort_id, "prov:usedEntity": sid }),
            );
            for t in &s.served {
                let (tid, tr) = activity_of("transfer", &t.entry);
                activity.insert(tid.clone(), tr);
                add_agent(&t.requester, "scientist");
                add_rel(
                    "used",
                    json!({ "prov:activity": tid, "prov:entity": sid, "prov:time": t.entry.time }),
                );
                add_rel(
                    "wasAssociatedWith",
                    json!({ "prov:activity": tid, "prov:agent": format!("ecgfed:member-{}", t.entry.signer) }),
                );
                add_rel(
                    "wasAssociatedWith",
                    json!({ "prov:activity": tid, "prov:agent": format!("ecgfed:member-{}", t.requester) }),
                );
                add_rel(
                    "wasInformedBy",
                    json!({ "prov:informed": train_id, "prov:informant": tid }),
                );
            }
        }
    }
    let mut doc = Map::new();
    doc.insert(
        "prefix".into(),
        json!({ "ecgfed": "urn:ecgfed:", "prov": "http://www.w3.org/ns/prov#", "xsd": "http://www.w3.org/2001/XMLSchema#" }),
    );
    doc.insert("entity".into(), Value::Object(entity));
    doc.insert("activity".into(), Value::Object(activity));
    doc.insert("agent".into(), Value::Object(agent));
    for (k, v) in rel {
        doc.insert(k.into(), Value::Object(v));
    }
    Value::Object(doc)
}

/// A UUID (version 8, RFC 9562 custom) derived from SHA-256 of `name`.
pub fn uuid_of(name: &str) -> String {
    let h = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn facet(url: &str, mut body: Value) -> Value {
    if let Value::Object(m) = &mut body {
        m.insert("_producer".into(), json!(PRODUCER));
        m.insert("_schemaURL".into(), json!(url));
    }
    body
}

fn run_event(
    job: &str,
    entry: &EntryRef,
    origin_ns: &str,
    inputs: Vec<Value>,
    outputs: Vec<Value>,
) -> Value {
    json!({
        "eventType": "COMPLETE",
        "eventTime": entry.time,
        "producer": PRODUCER,
        "schemaURL": OPENLINEAGE_SCHEMA_URL,
        "run": {
            "runId": uuid_of(&format!("{origin_ns}/{}", entry.index)),
            "facets": { "ecgfed_ledgerEntry": facet(LEDGER_FACET_URL, json!({ "index": entry.index, "signer": entry.signer })) }
        },
        "job": { "namespace": origin_ns, "name": job, "facets": {} },
        "inputs": inputs,
        "outputs": outputs,
    })
}

/// OpenLineage run events (eventType COMPLETE) for every activity of the lineages, in ledger
/// order: registration of each dataset version, selection of each slice, each transfer, and
/// the training run. Datasets carry demographics and consent facets.
pub fn openlineage(lineages: &[ModelLineage]) -> Vec<Value> {
    let ns = "ecgfed";
    let mut events: BTreeMap<u64, Value> = BTreeMap::new();
    for l in lineages {
        let demographics = |site: &str| {
            let cells: Vec<Value> = l
                .cohort
                .cells
                .iter()
                .filter(|c| c.site == site)
                .map(|c| json!({ "label": c.label, "sex": c.sex, "ageBand": c.age_band, "count": c.count }))
                .collect();
            facet(DEMOGRAPHICS_FACET_URL, json!({ "cells": cells }))
        };
        let consent = |site: &str, erased: u64| {
            facet(
                CONSENT_FACET_URL,
                json!({ "purpose": l.cohort.purpose, "requester": l.cohort.requester, "cohortId": l.cohort.cohort_id, "grantedBySite": site, "erasedSince": erased }),
            )
        };
        let dataset_ds = |d: &crate::lineage::DatasetNode| json!({ "namespace": format!("ecgfed://{}", d.site), "name": format!("{}@v{}", d.dataset_id, d.version), "facets": {} });
        let slice_ds = |s: &crate::lineage::SliceNode| {
            let erased = s.erased_since.iter().map(|e| e.in_slice).sum();
            json!({ "namespace": format!("ecgfed://{}", s.site), "name": s.slice_id, "facets": {
                "ecgfed_demographics": demographics(&s.site), "ecgfed_consent": consent(&s.site, erased) } })
        };
        let cohort_ds =
            json!({ "namespace": "ecgfed://cohorts", "name": l.cohort.cohort_id, "facets": {} });
        for d in &l.datasets {
            events.insert(
                d.entry.index,
                run_event(
                    &format!("registration/{}", d.dataset_id),
                    &d.entry,
                    ns,
                    vec![],
                    vec![dataset_ds(d)],
                ),
            );
        }
        for s in &l.slices {
            let inputs: Vec<Value> = l
                .datasets
                .iter()
                .filter(|d| d.dataset_id == s.dataset_id && d.version == s.dataset_version)
                .map(dataset_ds)
                .collect();
            events.insert(
                s.entry.index,
                run_event(
                    &format!("selection/{}", s.slice_id),
                    &s.entry,
                    ns,
                    inputs,
                    vec![slice_ds(s)],
                ),
            );
            for t in &s.served {
                events.insert(
                    t.entry.index,
                    run_event(
                        &format!("transfer/{}", s.slice_id),
                        &t.entry,
                        ns,
                        vec![slice_ds(s)],
                        vec![],
                    ),
                );
            }
        }
        let mut inputs: Vec<Value> = l.slices.iter().map(slice_ds).collect();
        inputs.push(cohort_ds);
        let model_ds =
            json!({ "namespace": "ecgfed://models", "name": l.model.model_id, "facets": {} });
        events.insert(
            l.model.entry.index,
            run_event(
                &format!("training/{}", l.model.model_id),
                &l.model.entry,
                ns,
                inputs,
                vec![model_ds],
            ),
        );
    }
    events.into_values().collect()
}
