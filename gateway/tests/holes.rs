//! Issue 23, the gateway's side: each test plays one adversary or one crash against real
//! RocksDB stores and real tonic servers on loopback (tests/common).
//!
//! - a hospital front-running another site's slice id, on a ledger that lets it through;
//! - a compromised ledger host admitting a scientist of its own;
//! - erasures interrupted at each step, queued behind one another, racing a running DoGet,
//!   and the salt's bytes left in the key store's files;
//! - a reservation recorded on the ledger before a crash;
//! - replayed requests: concurrent copies, another gateway, unknown member ids in bulk;
//! - unauthenticated requests sized to exhaust memory, and the cache budget under load.

mod common;

use std::sync::Arc;

use arrow::array::AsArray;
use common::{Fed, SITES, contains};
use ecgfed_gateway::client::add_headers;
use ecgfed_gateway::protocol::SERVICE_PATH;
use ecgfed_gateway::server::Policy;
use ecgfed_gateway::server::patient_key;
use ecgfed_ledger::keys::{KeyPair, Signature};
use ecgfed_ledger::state::ADMIT_TAG;
use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::gateway_service_client::GatewayServiceClient;
use ecgfed_proto::v1::{
    CohortSliceCommitted, ListDatasetsRequest, Member, MemberAdmitted, ReserveSliceRequest, Role,
    StrataRequest, Subject, SubjectKind,
};
use futures::StreamExt;
use prost::Message;
use tonic::Code;

fn reserve(cohort: &str) -> ReserveSliceRequest {
    ReserveSliceRequest {
        cohort_id: cohort.into(),
        ..Default::default()
    }
}

fn code(e: ecgfed_gateway::GatewayError) -> Code {
    match e {
        ecgfed_gateway::GatewayError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Item 3. Hospital B, reading the public CohortCreated, writes `c1/site-a` before site A
/// does: the ledger refuses it; on a ledger whose host lets it through anyway, site A still
/// commits its own slice and the scientist's pull takes that one, not B's.
/// Fault points are armed process-wide (`faults::arm`) and erasures hit them: the tests that
/// arm a point or erase run one at a time, so that one test's armed point never fires in
/// another's erasure.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_id_belongs_to_its_site_whatever_the_ledger_accepts() {
    let fed = Fed::start(Policy::default()).await;
    let allocation = fed.cohort("sci", "c1", &[0, 1], 2, 2).await;
    let mut ledger = fed.ledger_client().await;
    // B's entry is right in every respect but its id: site B's rows of the cohort, made-up
    // commitments with their true root, the cohort's requester and seed.
    let rows_b: u64 = allocation
        .iter()
        .filter(|a| a.site == "site-b")
        .map(|a| a.count)
        .sum();
    let commitments: Vec<Vec<u8>> = (0..rows_b).map(|i| vec![i as u8 + 1; 32]).collect();
    let mut tree = ecgfed_ledger::log::MemoryLog::new();
    for c in &commitments {
        tree.append(c);
    }
    let root = ecgfed_ledger::log::root(&tree, rows_b).unwrap();
    let forged = |site: &str| CohortSliceCommitted {
        slice_id: "c1/site-a".into(),
        cohort_id: "c1".into(),
        site: site.into(),
        dataset_id: "site-b/x".into(),
        requester: "sci".into(),
        row_count: rows_b,
        slice_root: root.to_vec(),
        seed: 42,
        commitments: commitments.clone(),
    };
    let mut hosp_b = fed.entry_signer("hosp-b");
    // The ledger's rules: B may not commit under its own site a slice id of site A, nor write
    // for site A.
    for (site, want) in [
        ("site-b", Code::InvalidArgument),
        ("site-a", Code::PermissionDenied),
    ] {
        let e = hosp_b.sign(Payload::CohortSliceCommitted(forged(site)));
        match ledger.submit(e).await.unwrap_err() {
            ecgfed_ledger::client::ClientError::Refused(s) => assert_eq!(s.code(), want, "{s}"),
            other => panic!("{other}"),
        }
    }
    // A compromised ledger host appends B's entry all the same.
    let e = hosp_b.sign(Payload::CohortSliceCommitted(forged("site-b")));
    fed.ledger.append_unchecked(e).await.unwrap();
    // Site A reserves its slice (B's entry is not A's) and the pull verifies A's rows.
    let mut a = fed.client(0, "sci").await;
    let r = a.reserve(reserve("c1")).await.unwrap();
    assert_eq!(r.slice_id, "c1/site-a");
    assert!(r.rows > 0);
    ledger.update_checkpoint().await.unwrap();
    let report = a.pull(&r.slice_id, &mut ledger, |_| {}).await.unwrap();
    assert_eq!(report.rows, r.rows);
    assert_eq!(report.root.to_vec(), r.slice_root);
    // Before site A commits: B's entry alone is no slice, and the client says why.
    fed.cohort("sci", "c3", &[0, 1], 2, 2).await;
    let e = hosp_b.sign(Payload::CohortSliceCommitted(CohortSliceCommitted {
        slice_id: "c3/site-a".into(),
        cohort_id: "c3".into(),
        ..forged("site-b")
    }));
    fed.ledger.append_unchecked(e).await.unwrap();
    ledger.update_checkpoint().await.unwrap();
    let err = ledger.slice("c3/site-a").await.unwrap_err().to_string();
    assert!(
        err.contains("no valid CohortSliceCommitted") && err.contains("its id is not c3/site-b"),
        "{err}"
    );
}

/// A member record and its encoding.
fn member(id: &str, role: Role, key: &KeyPair) -> (Member, Vec<u8>) {
    let m = Member {
        id: id.into(),
        role: role as i32,
        public_key: key.public().to_bytes(),
        proof_of_possession: key.prove_possession().to_bytes(),
        site: String::new(),
    };
    let bytes = m.encode_to_vec();
    (m, bytes)
}

/// Item 4. The ledger's host admits a scientist of its own (no hospital approval) by writing
/// the admission past its rules: gateways replay members with the rules and refuse that
/// scientist, while a member the hospitals approved is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_the_hospitals_did_not_approve_is_refused() {
    let fed = Fed::start(Policy::default()).await;
    let rogue = KeyPair::generate();
    let (m, bytes) = member("rogue", Role::Scientist, &rogue);
    let admit = fed
        .entry_signer("ledger")
        .sign(Payload::MemberAdmitted(MemberAdmitted {
            member: Some(m),
            member_bytes: bytes,
            approvers: vec![],
            approval_signature: vec![],
        }));
    fed.ledger.append_unchecked(admit).await.unwrap();
    let signer = Arc::new(ecgfed_gateway::client::RequestSigner::new("rogue", rogue));
    let mut c = ecgfed_gateway::client::GatewayClient::connect(&fed.addr(0), SITES[0], signer)
        .await
        .unwrap();
    let e = c.list_datasets().await.unwrap_err();
    assert_eq!(code(e), Code::Unauthenticated);
    // The client-side replay names the refused admission.
    let mut ledger = fed.ledger_client().await;
    let replay = ledger.sync_members().await.unwrap();
    assert!(replay.member("rogue").is_none());
    assert_eq!(replay.refused().len(), 1, "{:?}", replay.refused());

    // Approved by both hospitals (the majority of two): admitted, and served.
    let sci3 = KeyPair::generate();
    let (m, bytes) = member("sci3", Role::Scientist, &sci3);
    let mut msg = ADMIT_TAG.to_vec();
    msg.extend_from_slice(&bytes);
    let sigs = [
        fed.members.key("hosp-a").sign(&msg),
        fed.members.key("hosp-b").sign(&msg),
    ];
    let admit = fed
        .entry_signer("hosp-a")
        .sign(Payload::MemberAdmitted(MemberAdmitted {
            member: Some(m),
            member_bytes: bytes,
            approvers: vec!["hosp-a".into(), "hosp-b".into()],
            approval_signature: Signature::aggregate(&sigs).unwrap().to_bytes(),
        }));
    ledger.submit(admit).await.unwrap();
    let signer = Arc::new(ecgfed_gateway::client::RequestSigner::new("sci3", sci3));
    let mut c = ecgfed_gateway::client::GatewayClient::connect(&fed.addr(0), SITES[0], signer)
        .await
        .unwrap();
    // The gateway refreshes its members at most every MEMBER_REFRESH_INTERVAL.
    let mut served = false;
    for _ in 0..40 {
        if c.list_datasets().await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(served, "an approved member was never served");
}

/// Items 5a and 5c at the gateway. An erasure stopped after each of its steps (as a crash
/// there would stop it) completes at the next start with one RecordsErased entry; a second
/// erasure requested while one is pending queues behind it instead of replacing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_erasures_complete_and_queue_in_order() {
    let _faults = FAULTS.lock().await;
    let mut fed = Fed::start(Policy::default()).await;
    let patients: Vec<String> = {
        let c = fed.gw(0).catalog();
        let mut v: Vec<String> = c
            .rows
            .iter()
            .map(|r| format!("{}/{}", r.source, r.record_id))
            .collect();
        v.dedup();
        v
    };
    let mut ledger = fed.ledger_client().await;
    let erased_entries = |ledger: &mut ecgfed_ledger::client::LedgerClient, c: [u8; 32]| {
        let subject = Subject {
            kind: SubjectKind::Commitment as i32,
            id: hex::encode(c),
        };
        let mut l = ledger.clone();
        async move {
            l.update_checkpoint().await.unwrap();
            l.query_subject(subject, 0, 0).await.unwrap().len()
        }
    };
    for (n, point) in [
        "erase:after-ledger",
        "erase:after-salt",
        "erase:after-store",
    ]
    .iter()
    .enumerate()
    {
        let patient = &patients[n];
        let (_, rows) = fed
            .gw(0)
            .catalog()
            .patient_rows(patient)
            .map(|(k, r)| (k, r.iter().map(|r| r.commitment).collect::<Vec<_>>()))
            .unwrap();
        ecgfed_gateway::server::faults::arm(point);
        let err = fed.gw(0).erase(patient, "test").await.unwrap_err();
        assert!(err.to_string().contains(point), "{err}");
        fed.stop_gateway(0).await;
        fed.start_gateway(0).await.unwrap();
        let e = fed.gw(0).catalog().patient_rows(patient).unwrap_err();
        assert!(e.to_string().contains("no records"), "{point}: {e}");
        assert_eq!(
            erased_entries(&mut ledger, rows[0]).await,
            1,
            "{point}: one RecordsErased entry"
        );
        assert!(fed.gw(0).keys.queued_erasures().unwrap().is_empty());
    }
    // A pending erasure (the ledger was unreachable, say) and a second one: both complete.
    let (p1, p2) = (&patients[3], &patients[4]);
    ecgfed_gateway::server::faults::arm("erase:after-ledger");
    assert!(fed.gw(0).erase(p1, "first").await.is_err());
    fed.gw(0).erase(p2, "second").await.unwrap();
    for p in [p1, p2] {
        assert!(
            fed.gw(0).catalog().patient_rows(p).is_err(),
            "{p} not erased"
        );
    }
    assert!(fed.gw(0).keys.queued_erasures().unwrap().is_empty());
}

/// Item 5b. After an erasure the patient's salt is in no file under the gateway's folders
/// (key store and site store): not in the write-ahead log, not in a table file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_salt_is_in_no_file() {
    let _faults = FAULTS.lock().await;
    let mut fed = Fed::start(Policy::default()).await;
    // Restart once so that the salts also sit in table files, not only in the log.
    fed.stop_gateway(0).await;
    fed.start_gateway(0).await.unwrap();
    let (patient, salt) = {
        let c = fed.gw(0).catalog();
        let r = &c.rows[0];
        (format!("{}/{}", r.source, r.record_id), r.salt)
    };
    let key = patient_key(
        &fed.gw(0).catalog().rows[0].source,
        &fed.gw(0).catalog().rows[0].record_id,
    );
    assert_eq!(fed.gw(0).keys.salts(&[key]).unwrap()[0], Some(salt));
    let folders = [fed.cfgs[0].data.clone(), fed.cfgs[0].store.clone()];
    let found = |folders: &[std::path::PathBuf]| {
        folders
            .iter()
            .flat_map(|d| Fed::files(d))
            .filter(|f| contains(&std::fs::read(f).unwrap_or_default(), &salt))
            .collect::<Vec<_>>()
    };
    assert!(!found(&folders).is_empty(), "the salt is on disk before");
    fed.gw(0).erase(&patient, "test").await.unwrap();
    assert_eq!(found(&folders), Vec::<std::path::PathBuf>::new());
    // Still true once the gateway stopped (nothing flushed at close brings it back).
    fed.stop_gateway(0).await;
    assert_eq!(found(&folders), Vec::<std::path::PathBuf>::new());
}

/// Item 5d. A DoGet streaming when an erasure begins stops before its next message: no row
/// of the erased patient is received after the erasure began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_do_get_stops_when_an_erasure_begins() {
    let _faults = FAULTS.lock().await;
    let policy = Policy {
        batch_rows: 1,
        cache_mb: 0,
        ..Default::default()
    };
    let fed = Fed::start(policy).await;
    fed.cohort("sci", "c1", &[0], 4, 2).await;
    let mut sci = fed.client(0, "sci").await;
    let r = sci.reserve(reserve("c1")).await.unwrap();
    assert!(r.rows >= 4);
    // A channel with 16 KiB HTTP/2 windows (a row of the sample is about 12 KB): the gateway
    // can send only about one row more than the client reads, so the erasure below always
    // meets rows still to send (with the default 64 KiB windows, a small slice could fit in
    // the windows whole before the erasure began).
    let mut ch = tonic::transport::Channel::from_shared(format!("http://{}", fed.addr(0)))
        .unwrap()
        .initial_stream_window_size(16 << 10)
        .initial_connection_window_size(16 << 10)
        .connect()
        .await
        .unwrap();
    let t = arrow_flight::Ticket::new(ecgfed_gateway::protocol::ticket(&r.slice_id));
    let req = fed.signer("sci").request(
        SITES[0],
        &format!("{}DoGet", ecgfed_gateway::protocol::FLIGHT_PATH),
        t,
    );
    let mut stream = ecgfed_gateway::transport::route::do_get(&mut ch, req, 64 << 20)
        .await
        .unwrap();
    let mut decoder = ecgfed_gateway::transport::wire::BatchDecoder::new();
    let mut first = None;
    while first.is_none() {
        let m = stream.next().await.unwrap().unwrap();
        if let Some(b) = decoder.decode(&m).unwrap() {
            // Served rows name no patient: the row is found in the catalog by its samples.
            let sig = b
                .column_by_name("signal")
                .unwrap()
                .as_list::<i32>()
                .value(0);
            let d = ecgfed_datasets::segment::signal_digest(
                sig.as_primitive::<arrow::datatypes::Float32Type>().values(),
            );
            let c = fed.gw(0).catalog();
            let row = c.rows.iter().find(|r| r.signal_digest == d).unwrap();
            first = Some(format!(
                "{}/{}",
                row.source,
                std::str::from_utf8(&row.patient_key[row.source.len() + 1..]).unwrap()
            ));
        }
    }
    let patient = first.unwrap();
    fed.gw(0)
        .erase(&patient, "during a transfer")
        .await
        .unwrap();
    let mut after = 0;
    let mut ended = None;
    while let Some(m) = stream.next().await {
        match m {
            Ok(m) => {
                if decoder.decode(&m).unwrap().is_some() {
                    after += 1;
                }
            }
            Err(s) => {
                ended = Some(s);
                break;
            }
        }
    }
    let s = ended.expect("the transfer ran to its end after an erasure began");
    assert_eq!(s.code(), Code::Aborted, "{s}");
    assert!(s.message().contains("erasure"), "{s}");
    // Only what was in flight before the erasure (the default windows hold a few rows).
    assert!(
        (after as u64) < r.rows - 1,
        "{after} rows after the erasure"
    );
}

/// Item 6. The gateway stops between writing its slice entry to the ledger and storing the
/// reservation; a patient of the slice is erased; the reservation retried is the one on the
/// ledger (same entry, same root) and the pull verifies, the erased rows announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_on_the_ledger_survives_a_crash_and_an_erasure() {
    let _faults = FAULTS.lock().await;
    let mut fed = Fed::start(Policy::default()).await;
    fed.cohort("sci", "c1", &[0], 2, 2).await;
    ecgfed_gateway::server::faults::arm("reserve:after-ledger");
    let mut sci = fed.client(0, "sci").await;
    assert!(sci.reserve(reserve("c1")).await.is_err());
    fed.stop_gateway(0).await;
    fed.start_gateway(0).await.unwrap();
    // The slice's first row, found through its commitment on the ledger.
    let mut ledger = fed.ledger_client().await;
    let (index, entry) = ledger.slice("c1/site-a").await.unwrap();
    let patient = {
        let c = fed.gw(0).catalog();
        let r = c
            .rows
            .iter()
            .find(|r| {
                fed.gw(0)
                    .leaf("c1/site-a", &r.segment_id)
                    .unwrap()
                    .is_some_and(|l| l[..] == entry.commitments[0][..])
            })
            .unwrap();
        format!("{}/{}", r.source, r.record_id)
    };
    fed.gw(0).erase(&patient, "test").await.unwrap();
    let mut sci = fed.client(0, "sci").await;
    let r = sci.reserve(reserve("c1")).await.unwrap();
    assert_eq!((r.ledger_index, &r.slice_root), (index, &entry.slice_root));
    ledger.update_checkpoint().await.unwrap();
    let report = sci.pull(&r.slice_id, &mut ledger, |_| {}).await.unwrap();
    assert!(report.erased >= 1);
    assert_eq!(report.rows + report.erased, entry.row_count);
}

/// Item 7. Sixteen concurrent copies of one signed request: exactly one is served. A request
/// signed for site A is refused by site B. Requests naming unknown members in bulk cost the
/// ledger at most one member refresh per interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_is_served_once_and_at_one_gateway() {
    let fed = Fed::start(Policy::default()).await;
    let sci = fed.signer("sci");
    let q = StrataRequest::default();
    let method = format!("{SERVICE_PATH}Strata");
    let headers = sci.headers(SITES[0], &method, &q.encode_to_vec());
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", fed.addr(0)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let calls = (0..16).map(|_| {
        let mut c = GatewayServiceClient::new(ch.clone());
        let mut r = tonic::Request::new(q.clone());
        add_headers(r.metadata_mut(), &headers);
        async move { c.strata(r).await.map(|_| ()).map_err(|s| s.code()) }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || *r == Err(Code::AlreadyExists))
    );

    // Signed for site A, sent to site B.
    let headers = sci.headers(SITES[0], &method, &q.encode_to_vec());
    let mut b = GatewayServiceClient::connect(format!("http://{}", fed.addr(1)))
        .await
        .unwrap();
    let mut r = tonic::Request::new(q.clone());
    add_headers(r.metadata_mut(), &headers);
    let s = b.strata(r).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s}");

    // Unknown members in bulk.
    let before = fed.gw(0).members.refreshes();
    let mut a = GatewayServiceClient::new(ch.clone());
    for i in 0..50 {
        let stranger = ecgfed_gateway::client::RequestSigner::new(
            &format!("stranger-{i}"),
            KeyPair::generate(),
        );
        let m = format!("{SERVICE_PATH}ListDatasets");
        let mut r = tonic::Request::new(ListDatasetsRequest {});
        add_headers(
            r.metadata_mut(),
            &stranger.headers(SITES[0], &m, &ListDatasetsRequest {}.encode_to_vec()),
        );
        let s = a.list_datasets(r).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    let refreshes = fed.gw(0).members.refreshes() - before;
    assert!(
        refreshes <= 2,
        "{refreshes} member refreshes for 50 unknown ids"
    );
}

/// Item 8. An unsigned request larger than the request limit is refused before it is
/// decoded; a DoGet never holds more for the cache than the cache budget, however many run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_cached_slices_are_bounded() {
    let policy = Policy {
        cache_mb: 1,
        batch_rows: 16,
        ..Default::default()
    };
    let fed = Fed::start(policy).await;
    let mut raw = GatewayServiceClient::connect(format!("http://{}", fed.addr(0)))
        .await
        .unwrap()
        .max_encoding_message_size(8 << 20);
    let big = StrataRequest {
        dataset_id: "x".repeat(2 << 20),
        by: vec![],
    };
    let s = raw.strata(big).await.unwrap_err();
    assert_ne!(
        s.code(),
        Code::Unauthenticated,
        "decoded before it was refused: {s}"
    );
    assert!(s.message().contains("too large"), "{s}");

    // A slice larger than the 1 MiB budget, pulled by eight clients at once.
    fed.cohort("sci", "big", &[0], 1000, 0).await;
    let mut sci = fed.client(0, "sci").await;
    let r = sci.reserve(reserve("big")).await.unwrap();
    let pulls = (0..8).map(|_| {
        let fed = &fed;
        let id = r.slice_id.clone();
        async move {
            let mut c = fed.client(0, "sci").await;
            let mut l = fed.ledger_client().await;
            let mut bytes = 0u64;
            let rep = c
                .pull(&id, &mut l, |b| bytes += b.get_array_memory_size() as u64)
                .await
                .unwrap();
            (rep.rows, bytes)
        }
    });
    let done = futures::future::join_all(pulls).await;
    assert!(done.iter().all(|(rows, _)| *rows == r.rows));
    assert!(done[0].1 > 1 << 20, "the slice must exceed the budget");
    assert!(fed.gw(0).cache_bytes() <= 1 << 20);
    assert!(fed.gw(0).cached(&r.slice_id).is_none());
}

/// A gateway whose configuration does not match its member on the ledger refuses to start,
/// and says how in a typed error an operator's tooling can match: another member's key, a
/// member not on the ledger, another site's hospital, a member that is no hospital.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_identity_is_not_the_ledgers_refuses_to_start() {
    use ecgfed_gateway::error::{GatewayError, IdentityProblem};
    let mut fed = Fed::start(Policy::default()).await;
    fed.stop_gateway(0).await;
    let dir = fed.tmp.path().to_path_buf();
    let sci_key = fed.members.write_key("sci", &dir).unwrap();
    let good = fed.cfgs[0].clone();
    let cases = [
        ("hosp-a", sci_key.clone(), "other key"),
        ("nobody", good.key_file.clone(), "not on the ledger"),
        ("hosp-b", fed.cfgs[1].key_file.clone(), "other site"),
        ("sci", sci_key, "not a hospital"),
    ];
    for (member, key_file, case) in cases {
        let mut cfg = good.clone();
        cfg.member = member.into();
        cfg.key_file = key_file;
        let Err(e) = ecgfed_gateway::Gateway::start(cfg).await else {
            panic!("{case}: the gateway started");
        };
        let GatewayError::Identity { problem, .. } = &e else {
            panic!("{case}: {e}");
        };
        let ok = match case {
            "other key" => matches!(problem, IdentityProblem::OtherKey { .. }),
            "not on the ledger" => matches!(problem, IdentityProblem::NotOnLedger),
            "other site" => {
                matches!(problem, IdentityProblem::OtherSite { ledger, .. } if ledger == "site-b")
            }
            _ => matches!(problem, IdentityProblem::NotAHospital(_)),
        };
        assert!(ok, "{case}: {e}");
    }
    // The right configuration still starts.
    fed.start_gateway(0).await.unwrap();
}
