//! Submissions through the real gRPC service: accepted entries are durable, indexed and
//! provable; every kind of bad input is refused with its status and writes nothing.

mod common;

use common::*;
use ecgfed_ledger::client::LedgerClient;
use ecgfed_ledger::entry::{self, EntrySigner};
use ecgfed_ledger::keys::{KeyPair, Signature};
use ecgfed_ledger::log::{MemoryLog, leaf_hash, verify_inclusion};
use ecgfed_ledger::state::ADMIT_TAG;
use ecgfed_proto::v1::{
    Member, MemberAdmitted, QueryBySubjectRequest, Role, SignedEntry, Subject, SubjectKind,
    WatchBlocksRequest, entry_body::Payload,
};
use ecgfed_testkit::payloads::model;
use prost::Message;
use tonic::Code;

async fn expect(c: &mut ecgfed_ledger::access::Client, e: SignedEntry, code: Code, needle: &str) {
    let err = c.submit(e).await.expect_err("must be refused");
    assert_eq!(err.code(), code, "{}", err.message());
    assert!(
        err.message().contains(needle),
        "message {:?} should mention {needle:?}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_with_precise_statuses_and_write_nothing() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let (addr, _stop) = serve(ledger.clone()).await;
    let mut c = f.raw(addr).await;
    let before = ledger.head();

    // Unsigned.
    let mut e = f.hospitals[0].sign(dataset("site-0", "d0"));
    let good_sig = std::mem::take(&mut e.signature);
    expect(&mut c, e.clone(), Code::Unauthenticated, "not signed").await;
    // Wrongly signed: another member's key over the same body.
    let mut wrong = e.clone();
    wrong.signature = KeyPair::generate()
        .sign(&entry::signing_bytes(&e.body))
        .to_bytes();
    expect(&mut c, wrong, Code::Unauthenticated, "does not verify").await;
    // Signed without the domain-separation tag.
    let mut no_dst = e.clone();
    no_dst.signature = f.hospitals[0].key().sign(&e.body).to_bytes();
    expect(&mut c, no_dst, Code::Unauthenticated, "does not verify").await;
    // Garbage signature bytes.
    let mut garbage = e.clone();
    garbage.signature = vec![0xAB; 96];
    expect(&mut c, garbage, Code::Unauthenticated, "signature").await;
    // Stale: ten minutes old, correctly signed.
    let mut body = f.hospitals[0].body(dataset("site-0", "d-stale"));
    body.timestamp_ms -= 600_000;
    expect(
        &mut c,
        f.hospitals[0].sign_body(&body),
        Code::Unauthenticated,
        "window",
    )
    .await;
    // Unknown member.
    let mut stranger = EntrySigner::new("mallory", KeyPair::generate());
    expect(
        &mut c,
        stranger.sign(model("m")),
        Code::Unauthenticated,
        "not a member",
    )
    .await;
    // Wrong role: a scientist registering a dataset; a regulator writing anything; a hospital
    // registering another hospital's dataset.
    expect(
        &mut c,
        f.scientist.sign(dataset("site-0", "d1")),
        Code::PermissionDenied,
        "role scientist",
    )
    .await;
    expect(
        &mut c,
        f.regulator.sign(model("m1")),
        Code::PermissionDenied,
        "role regulator",
    )
    .await;
    expect(
        &mut c,
        f.hospitals[1].sign(dataset("site-0", "d2")),
        Code::PermissionDenied,
        "speaks for site site-1",
    )
    .await;
    // A scientist creating a cohort on someone else's behalf.
    expect(
        &mut c,
        f.scientist.sign(cohort("hospital-0", "c9")),
        Code::PermissionDenied,
        "may not create",
    )
    .await;
    // Malformed: not a protobuf, no payload, bad hash length, subjects not matching.
    let junk = SignedEntry {
        body: vec![0xFF, 0xFF, 0xFF],
        signature: good_sig.clone(),
    };
    expect(&mut c, junk, Code::InvalidArgument, "not an EntryBody").await;
    let mut empty = f.scientist.body(model("m2"));
    empty.payload = None;
    expect(
        &mut c,
        f.scientist.sign_body(&empty),
        Code::InvalidArgument,
        "no payload",
    )
    .await;
    let mut short = f.scientist.body(model("m3"));
    if let Some(Payload::ModelTrained(m)) = short.payload.as_mut() {
        m.weights_sha256 = vec![1; 31];
    }
    expect(
        &mut c,
        f.scientist.sign_body(&short),
        Code::InvalidArgument,
        "weights_sha256 is 31 bytes",
    )
    .await;
    let mut subj = f.scientist.body(model("m4"));
    subj.subjects.pop();
    expect(
        &mut c,
        f.scientist.sign_body(&subj),
        Code::InvalidArgument,
        "subjects do not match",
    )
    .await;
    let mut ctl = f.scientist.body(model("bad\u{0}id"));
    ctl.subjects = entry::derived_subjects("scientist", ctl.payload.as_ref().unwrap());
    expect(
        &mut c,
        f.scientist.sign_body(&ctl),
        Code::InvalidArgument,
        "control characters",
    )
    .await;

    // Nothing was written.
    assert_eq!(ledger.head(), before);

    // The original entry, now signed, is accepted; replaying it is refused.
    e.signature = good_sig;
    let r = c.submit(e.clone()).await.unwrap().into_inner();
    assert_eq!(r.index, before.tree_size);
    assert_eq!(
        r.leaf_hash,
        ecgfed_ledger::log::leaf_hash(&entry::encode_stored(&e.body, &e.signature))
    );
    expect(&mut c, e.clone(), Code::AlreadyExists, "replay").await;
    // Same nonce, different body: still a replay.
    let mut again = entry::decode_body(&e.body).unwrap();
    again.payload = Some(dataset("site-0", "d-other"));
    again.subjects = entry::derived_subjects("hospital-0", again.payload.as_ref().unwrap());
    expect(
        &mut c,
        f.hospitals[0].sign_body(&again),
        Code::AlreadyExists,
        "replay",
    )
    .await;
    assert_eq!(ledger.head().tree_size, before.tree_size + 1);
}

fn admission(
    f: &Fixture,
    new: &KeyPair,
    id: &str,
    role: Role,
    approvers: &[usize],
) -> MemberAdmitted {
    let member = Member {
        id: id.into(),
        role: role as i32,
        public_key: new.public().to_bytes(),
        proof_of_possession: new.prove_possession().to_bytes(),
        site: if role == Role::Hospital {
            format!("site-{id}")
        } else {
            String::new()
        },
    };
    let member_bytes = member.encode_to_vec();
    let mut msg = ADMIT_TAG.to_vec();
    msg.extend_from_slice(&member_bytes);
    let sigs: Vec<Signature> = approvers
        .iter()
        .map(|&i| f.hospitals[i].key().sign(&msg))
        .collect();
    MemberAdmitted {
        member: Some(member),
        approvers: approvers.iter().map(|i| format!("hospital-{i}")).collect(),
        approval_signature: Signature::aggregate(&sigs).unwrap().to_bytes(),
        member_bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_admitted_only_by_a_hospital_majority_with_proof_of_possession() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let (addr, _stop) = serve(ledger.clone()).await;
    let mut c = f.raw(addr).await;
    let newk = KeyPair::generate();

    // One approver of three is not a majority.
    let a = admission(&f, &newk, "bob", Role::Scientist, &[0]);
    expect(
        &mut c,
        f.hospitals[0].sign(Payload::MemberAdmitted(a)),
        Code::PermissionDenied,
        "majority",
    )
    .await;
    // Two approvers, but the aggregate signature is one hospital's only.
    let mut a = admission(&f, &newk, "bob", Role::Scientist, &[0, 1]);
    a.approval_signature = admission(&f, &newk, "bob", Role::Scientist, &[0]).approval_signature;
    expect(
        &mut c,
        f.hospitals[0].sign(Payload::MemberAdmitted(a)),
        Code::Unauthenticated,
        "aggregate",
    )
    .await;
    // A rogue key without a valid proof of possession.
    let mut a = admission(&f, &newk, "bob", Role::Scientist, &[0, 1]);
    if let Some(m) = a.member.as_mut() {
        m.proof_of_possession = KeyPair::generate().prove_possession().to_bytes();
        a.member_bytes = m.encode_to_vec();
    }
    expect(
        &mut c,
        f.hospitals[0].sign(Payload::MemberAdmitted(a)),
        Code::InvalidArgument,
        "proof of possession",
    )
    .await;
    // A scientist cannot admit anyone.
    let a = admission(&f, &newk, "bob", Role::Scientist, &[0, 1]);
    expect(
        &mut c,
        f.scientist.sign(Payload::MemberAdmitted(a.clone())),
        Code::PermissionDenied,
        "MemberAdmitted",
    )
    .await;

    // Majority with a valid aggregate: admitted; bob can then write.
    c.submit(f.hospitals[2].sign(Payload::MemberAdmitted(a.clone())))
        .await
        .unwrap();
    let mut bob = EntrySigner::new("bob", newk.clone());
    c.submit(bob.sign(model("bob-model"))).await.unwrap();
    // Admitting bob again: AlreadyExists.
    expect(
        &mut c,
        f.hospitals[1].sign(Payload::MemberAdmitted(a)),
        Code::AlreadyExists,
        "already exists",
    )
    .await;

    // The state survives a restart (replayed from the store): bob is still a member.
    drop(c);
    drop(_stop);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    ledger.shutdown();
    drop(ledger);
    let ledger = f.open();
    let (addr, _stop) = serve(ledger.clone()).await;
    let mut c = f.raw(addr).await;
    c.submit(bob.sign(model("bob-model-2"))).await.unwrap();
}

/// Models the scientist submits in the subject-query test (one is refused).
const MODELS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_reads_subject_queries_streams_and_block_watch() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let (addr, _stop) = serve(ledger.clone()).await;
    let (origin, key) = ledger.identity();
    let mut client = LedgerClient::connect(&addr.to_string(), &origin, key, None)
        .await
        .unwrap();
    client.act_as("regulator", f.regulator.key().clone());
    let first = client.update_checkpoint().await.unwrap();
    assert_eq!(first.size, 1, "genesis only");

    let mut watch = client
        .raw()
        .watch_blocks(WatchBlocksRequest { from_height: 0 })
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        let r = client
            .submit(f.hospitals[i].sign(dataset(&format!("site-{i}"), &format!("ds-{i}"))))
            .await
            .unwrap();
        assert_eq!(r.index, 1 + i as u64);
    }
    // SubmitStream: many in flight, answers in order, a bad one reported in-band.
    let mut batch: Vec<SignedEntry> = (0..MODELS)
        .map(|i| f.scientist.sign(model(&format!("m{i}"))))
        .collect();
    batch[10].signature = vec![0; 96];
    let mut answers = client
        .raw()
        .submit_stream(tokio_stream::iter(batch))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
        if got.len() == MODELS {
            break;
        }
    }
    assert_eq!(got.iter().filter(|a| a.code == 0).count(), MODELS - 1);
    assert_eq!(got[10].code, Code::Unauthenticated as i32);
    let idx: Vec<u64> = got
        .iter()
        .filter(|a| a.code == 0)
        .map(|a| a.index)
        .collect();
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "answers in request order"
    );

    // Every entry readable and proven; blocks chained and proven.
    let head = ledger.head();
    assert_eq!(head.tree_size as usize, 1 + 3 + MODELS - 1);
    let mut block_of = Vec::new();
    for i in 0..head.tree_size {
        block_of.push(client.entry_with_block(i).await.unwrap().1);
    }
    for a in got.iter().filter(|a| a.code == 0) {
        assert_eq!(
            block_of[a.index as usize], a.block_height,
            "entry {}",
            a.index
        );
    }
    let mut prev = [0u8; 32];
    for h in 0..head.blocks {
        let b = client.block(h).await.unwrap();
        assert_eq!(b.previous_hash, prev);
        prev = b.hash();
        // Each entry's block is the one whose range holds it.
        for i in b.first_index..b.tree_size {
            assert_eq!(block_of[i as usize], h, "entry {i}");
        }
    }
    for h in 0..head.blocks {
        let b = watch.message().await.unwrap().unwrap();
        assert_eq!(b.height, h, "watch replays every block in order");
    }

    // Subject queries: site-1 names genesis and its dataset; the scientist names MODELS - 1
    // models plus genesis (more than the server answers inline, so the rest is streamed).
    let site1 = client
        .query_subject(
            Subject {
                kind: SubjectKind::Site as i32,
                id: "site-1".into(),
            },
            0,
            0,
        )
        .await
        .unwrap();
    assert_eq!(
        site1.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![0, 2]
    );
    let sci = client
        .query_subject(
            Subject {
                kind: SubjectKind::Member as i32,
                id: "scientist".into(),
            },
            0,
            0,
        )
        .await
        .unwrap();
    assert_eq!(sci.len(), MODELS);
    let all: Vec<u64> = sci.iter().map(|e| e.index).collect();
    let mut expected = vec![0];
    expected.extend(idx.iter().copied());
    assert_eq!(all, expected, "every scientist entry once, in index order");
    // Pages from inside the list, short and long (crossing the inline part), and pages that
    // run past its end.
    for (from, limit) in [
        (10, 5),
        (10, 100),
        (all[64], 64),
        (all[63], 0),
        (all[100], 200),
    ] {
        let mut s = client
            .raw()
            .query_by_subject(scientist_query(from, limit, 0))
            .await
            .unwrap()
            .into_inner();
        let mut page = Vec::new();
        while let Some(e) = s.message().await.unwrap() {
            page.push(e.index);
        }
        let want: Vec<u64> = all
            .iter()
            .copied()
            .filter(|&i| i >= from)
            .take(if limit == 0 {
                usize::MAX
            } else {
                limit as usize
            })
            .collect();
        assert_eq!(page, want, "from {from}, limit {limit}");
    }

    // Proofs attached to the answers: each one checks against the root of the tree of the
    // asked size, recomputed here from the entries themselves; answers beyond it carry none.
    let at = 30;
    let mut log = MemoryLog::new();
    for i in 0..at {
        log.append(&client.entry(i).await.unwrap().stored);
    }
    let root_at = ecgfed_ledger::log::root(&log, at).unwrap();
    let mut proven = client
        .raw()
        .query_by_subject(scientist_query(0, 0, at))
        .await
        .unwrap()
        .into_inner();
    let (mut with, mut without) = (0, 0);
    while let Some(e) = proven.message().await.unwrap() {
        if e.index < at {
            let path: Vec<[u8; 32]> = e
                .inclusion
                .iter()
                .map(|h| h.as_slice().try_into().unwrap())
                .collect();
            verify_inclusion(e.index, at, &leaf_hash(&e.stored), &path, &root_at).unwrap();
            with += 1;
        } else {
            assert!(e.inclusion.is_empty(), "entry {} beyond the size", e.index);
            without += 1;
        }
    }
    assert_eq!(with + without, MODELS);
    assert!(with > 0 && without > 0, "{with} proven, {without} beyond");
    let beyond = client
        .raw()
        .query_by_subject(scientist_query(0, 0, head.tree_size + 1))
        .await
        .expect_err("a size beyond the committed tree is refused");
    assert_eq!(beyond.code(), Code::InvalidArgument);

    // Remote audit against the first checkpoint passes.
    let mut auditor = LedgerClient::connect(&addr.to_string(), &origin, key, Some(first))
        .await
        .unwrap();
    let report = ecgfed_ledger::verify::verify_remote(&mut auditor, |_| {})
        .await
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.entries, head.tree_size);
}

/// A QueryBySubject request for the scientist member's entries.
fn scientist_query(from_index: u64, limit: u64, prove_at_size: u64) -> QueryBySubjectRequest {
    QueryBySubjectRequest {
        subject: Some(Subject {
            kind: SubjectKind::Member as i32,
            id: "scientist".into(),
        }),
        from_index,
        limit,
        prove_at_size,
    }
}

/// A slice of `cohort` at `site` committing `rows` made-up commitments, for `requester`.
fn slice(cohort: &str, slice_id: &str, site: &str, rows: u8, requester: &str) -> Payload {
    let commitments: Vec<Vec<u8>> = (0..rows).map(|i| vec![i + 1; 32]).collect();
    let mut log = MemoryLog::new();
    for c in &commitments {
        log.append(c);
    }
    let root = ecgfed_ledger::log::root(&log, rows as u64).unwrap();
    Payload::CohortSliceCommitted(ecgfed_proto::v1::CohortSliceCommitted {
        slice_id: slice_id.into(),
        cohort_id: cohort.into(),
        site: site.into(),
        dataset_id: format!("{site}/store"),
        requester: requester.into(),
        row_count: rows as u64,
        slice_root: root.to_vec(),
        seed: 7,
        commitments,
    })
}

/// Issue 23, item 3: a slice id is `<cohort>/<site of its hospital>`, for a cohort that
/// allocates exactly its rows to that site, committed once; a cohort id is created once. The
/// rules hold across blocks, within one block and across a restart, and the offline verifier
/// finds an entry that breaks them in a log whose host let it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_are_bound_to_their_site_and_cohort_and_committed_once() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let (addr, stop) = serve(ledger.clone()).await;
    let mut c = f.raw(addr).await;
    let cell = |site: &str, count: u64| ecgfed_proto::v1::AllocationCell {
        site: site.into(),
        label: "N".into(),
        sex: "F".into(),
        age_band: "40-59".into(),
        count,
    };
    let mut cohort_c1 = cohort("scientist", "c1");
    if let Payload::CohortCreated(cc) = &mut cohort_c1 {
        cc.allocation = vec![cell("site-0", 1), cell("site-0", 1), cell("site-1", 1)];
    }
    c.submit(f.scientist.sign(cohort_c1.clone())).await.unwrap();
    expect(
        &mut c,
        f.scientist.sign(cohort_c1),
        Code::AlreadyExists,
        "cohort c1 already exists",
    )
    .await;
    let before = ledger.head();
    // (hospital, cohort, slice id, site, rows, requester) refused with (status, message).
    let refused = [
        // Hospital 1 front-running site 0's slice id, under its own site or site 0's.
        (
            (1, "c1", "c1/site-0", "site-1", 1, "scientist"),
            Code::InvalidArgument,
            "is not <cohort>/<site>",
        ),
        (
            (1, "c1", "c1/site-0", "site-0", 2, "scientist"),
            Code::PermissionDenied,
            "speaks for site site-1",
        ),
        // A site the cohort allocates nothing to; a cohort that does not exist.
        (
            (2, "c1", "c1/site-2", "site-2", 1, "scientist"),
            Code::FailedPrecondition,
            "allocates nothing to site site-2",
        ),
        (
            (0, "c9", "c9/site-0", "site-0", 2, "scientist"),
            Code::FailedPrecondition,
            "no CohortCreated",
        ),
        // Not the allocated number of rows; not the cohort's requester.
        (
            (0, "c1", "c1/site-0", "site-0", 3, "scientist"),
            Code::InvalidArgument,
            "allocates 2 to site site-0",
        ),
        (
            (0, "c1", "c1/site-0", "site-0", 2, "regulator"),
            Code::InvalidArgument,
            "requester",
        ),
    ];
    for ((h, cohort, id, site, rows, requester), code, needle) in refused {
        let e = f.hospitals[h].sign(slice(cohort, id, site, rows, requester));
        expect(&mut c, e, code, needle).await;
    }
    // Leaves out of ascending order (an order that could follow the allocation cells), with
    // their true root.
    let mut unordered = slice("c1", "c1/site-0", "site-0", 2, "scientist");
    if let Payload::CohortSliceCommitted(s) = &mut unordered {
        s.commitments.reverse();
        let mut log = MemoryLog::new();
        for x in &s.commitments {
            log.append(x);
        }
        s.slice_root = ecgfed_ledger::log::root(&log, 2).unwrap().to_vec();
    }
    expect(
        &mut c,
        f.hospitals[0].sign(unordered),
        Code::InvalidArgument,
        "strictly ascending",
    )
    .await;
    // Erased-leaf tokens: a count that is not a padded one, or out of order.
    let erasure = |tokens: Vec<Vec<u8>>| {
        Payload::RecordsErased(ecgfed_proto::v1::RecordsErased {
            site: "site-0".into(),
            dataset_id: "site-0/store".into(),
            commitments: vec![vec![1; 32]],
            reason: "test".into(),
            erased_leaves: tokens,
        })
    };
    let tokens = |n: u8| (0..n).map(|i| vec![i + 1; 32]).collect::<Vec<_>>();
    expect(
        &mut c,
        f.hospitals[0].sign(erasure(tokens(5))),
        Code::InvalidArgument,
        "power of two",
    )
    .await;
    let mut backwards = tokens(8);
    backwards.reverse();
    expect(
        &mut c,
        f.hospitals[0].sign(erasure(backwards)),
        Code::InvalidArgument,
        "ascending",
    )
    .await;
    assert_eq!(ledger.head(), before, "nothing written");
    c.submit(f.hospitals[0].sign(erasure(tokens(16))))
        .await
        .unwrap();
    // The real one, once.
    c.submit(f.hospitals[0].sign(slice("c1", "c1/site-0", "site-0", 2, "scientist")))
        .await
        .unwrap();
    expect(
        &mut c,
        f.hospitals[0].sign(slice("c1", "c1/site-0", "site-0", 2, "scientist")),
        Code::AlreadyExists,
        "already committed",
    )
    .await;
    // Two commits of one id in flight together (one block, most likely): one is accepted.
    let (a, b) = (
        f.hospitals[1].sign(slice("c1", "c1/site-1", "site-1", 1, "scientist")),
        f.hospitals[1].sign(slice("c1", "c1/site-1", "site-1", 1, "scientist")),
    );
    let (mut c2, mut c3) = (c.clone(), c.clone());
    let (ra, rb) = tokio::join!(c2.submit(a), c3.submit(b));
    assert_eq!(
        [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{ra:?} {rb:?}"
    );
    let refused = ra.err().or(rb.err()).unwrap();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused}");

    // A restart replays the cohorts and slices.
    let _ = stop.send(());
    drop(c);
    drop(ledger);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ledger = f.open();
    let (addr, _stop) = serve(ledger.clone()).await;
    let mut c = f.raw(addr).await;
    expect(
        &mut c,
        f.hospitals[0].sign(slice("c1", "c1/site-0", "site-0", 2, "scientist")),
        Code::AlreadyExists,
        "already committed",
    )
    .await;

    // A host that appends past the rules: the offline verifier names the entry.
    let forged = ledger
        .append_unchecked(f.hospitals[1].sign(slice("c1", "c1/site-0", "site-1", 1, "scientist")))
        .await
        .unwrap();
    let report = ecgfed_ledger::verify::verify_store(ledger.store()).unwrap();
    assert!(!report.ok);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.at == forged.index.to_string() && p.reason.contains("<cohort>/<site>")),
        "{:?}",
        report.problems
    );
}

/// A MemberRevoked entry approved by `approvers` (hospital indexes) for `member_id`.
fn revocation(f: &Fixture, member_id: &str, approvers: &[usize], signed_for: &str) -> Payload {
    let msg = ecgfed_ledger::state::revocation_message(ORIGIN, signed_for);
    let sigs: Vec<Signature> = approvers
        .iter()
        .map(|&i| f.hospitals[i].key().sign(&msg))
        .collect();
    Payload::MemberRevoked(ecgfed_proto::v1::MemberRevoked {
        member_id: member_id.into(),
        approvers: approvers.iter().map(|i| format!("hospital-{i}")).collect(),
        approval_signature: Signature::aggregate(&sigs).unwrap().to_bytes(),
        reason: "test".into(),
    })
}

/// Revocation (issue 25): only by a hospital majority, never of the ledger member; the revoked
/// member is refused from then on, also after a restart; its id cannot be admitted again; a
/// verifying client's replayed members no longer include it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_revoked_only_by_a_hospital_majority_and_stay_revoked() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let (addr, stop) = serve(ledger.clone()).await;
    let mut c = f.raw(addr).await;
    let before = ledger.head();
    let r = revocation(&f, "scientist", &[0], "scientist");
    expect(
        &mut c,
        f.hospitals[0].sign(r),
        Code::PermissionDenied,
        "majority",
    )
    .await;
    let r = revocation(&f, "scientist", &[0, 1], "regulator");
    expect(
        &mut c,
        f.hospitals[0].sign(r),
        Code::Unauthenticated,
        "aggregate",
    )
    .await;
    let r = revocation(&f, "ledger", &[0, 1, 2], "ledger");
    expect(
        &mut c,
        f.hospitals[0].sign(r),
        Code::PermissionDenied,
        "ledger member",
    )
    .await;
    let r = revocation(&f, "nobody", &[0, 1], "nobody");
    expect(
        &mut c,
        f.hospitals[0].sign(r),
        Code::FailedPrecondition,
        "does not exist",
    )
    .await;
    let r = revocation(&f, "scientist", &[0, 1], "scientist");
    expect(
        &mut c,
        f.scientist.sign(r),
        Code::PermissionDenied,
        "may not write",
    )
    .await;
    assert_eq!(
        ledger.head(),
        before,
        "a refused revocation wrote something"
    );

    // The scientist writes, then is revoked by two of three hospitals.
    c.submit(f.scientist.sign(model("before"))).await.unwrap();
    let r = revocation(&f, "scientist", &[1, 2], "scientist");
    c.submit(f.hospitals[0].sign(r)).await.unwrap();
    expect(
        &mut c,
        f.scientist.sign(model("after")),
        Code::Unauthenticated,
        "not a member",
    )
    .await;
    let r = revocation(&f, "scientist", &[1, 2], "scientist");
    expect(
        &mut c,
        f.hospitals[1].sign(r),
        Code::AlreadyExists,
        "already revoked",
    )
    .await;
    // Its id cannot come back.
    let newk = KeyPair::generate();
    let a = admission(&f, &newk, "scientist", Role::Scientist, &[0, 1]);
    expect(
        &mut c,
        f.hospitals[0].sign(Payload::MemberAdmitted(a)),
        Code::AlreadyExists,
        "already exists",
    )
    .await;
    // A verifying client replays the revocation.
    let mut client = LedgerClient::connect(&addr.to_string(), ORIGIN, f.ledger_key.public(), None)
        .await
        .unwrap();
    let replayed = client.sync_members().await.unwrap();
    assert!(replayed.member("scientist").is_none());
    assert!(replayed.member("regulator").is_some());
    assert!(replayed.refused().is_empty());

    // After a restart, still revoked.
    let _ = stop.send(());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    ledger.shutdown();
    drop(ledger);
    let ledger = f.open();
    let (addr, _stop) = serve(ledger.clone()).await;
    let mut c = f.raw(addr).await;
    expect(
        &mut c,
        f.scientist.sign(model("after-restart")),
        Code::Unauthenticated,
        "not a member",
    )
    .await;
    // The revoked member's own call token is refused too, whatever it carries.
    let id =
        ecgfed_ledger::access::CallIdentity::new(ORIGIN, "scientist", f.scientist.key().clone());
    let mut own =
        ecgfed_ledger::access::connect(format!("http://{addr}"), Some(std::sync::Arc::new(id)))
            .await
            .unwrap();
    expect(
        &mut own,
        f.hospitals[0].sign(dataset("site-0", "d-after")),
        Code::Unauthenticated,
        "revoked",
    )
    .await;
    let store = ledger.store();
    let report = ecgfed_ledger::verify::verify_store(store).unwrap();
    assert!(report.ok, "{:?}", report.problems.first());
}

/// A `LocalRoundTrained` of `slice` (of `cohort` at `site`) with the given fields.
#[allow(clippy::too_many_arguments)]
fn round(
    cohort: &str,
    site: &str,
    round: u32,
    attempt: u32,
    participants: &[&str],
    root: &[u8],
    rows: u64,
    requester: &str,
) -> Payload {
    Payload::LocalRoundTrained(ecgfed_proto::v1::LocalRoundTrained {
        cohort_id: cohort.into(),
        slice_id: format!("{cohort}/{site}"),
        site: site.into(),
        round,
        attempt,
        slice_root: root.to_vec(),
        rows_used: rows,
        model_sha256: vec![5; 32],
        update_sha256: vec![6; 32],
        participants: participants.iter().map(|p| p.to_string()).collect(),
        round_key: ecgfed_ledger::keys::AgreementKey::generate()
            .public()
            .to_vec(),
        requester: requester.into(),
        training_json: "{\"local_epochs\":1}".into(),
        self_mask_sha256: vec![8; 32],
    })
}

/// Issue 26: a federated round is recorded only by the hospital of its site, for a committed
/// slice of a federated cohort, with that slice's root, no more rows than it holds, the
/// cohort's requester, at least two participants in order with the site among them; once per
/// slice, round and attempt. A pull cohort has no rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_rounds_are_bound_to_committed_slices_of_federated_cohorts() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let (addr, _stop) = serve(ledger.clone()).await;
    let mut c = f.raw(addr).await;
    let cell = |site: &str, count: u64| ecgfed_proto::v1::AllocationCell {
        site: site.into(),
        label: "N".into(),
        sex: "F".into(),
        age_band: "40-59".into(),
        count,
    };
    for (id, mode) in [("f1", "federated"), ("p1", "")] {
        let mut p = cohort("scientist", id);
        if let Payload::CohortCreated(cc) = &mut p {
            cc.allocation = vec![cell("site-0", 2), cell("site-1", 1)];
            cc.mode = mode.into();
        }
        c.submit(f.scientist.sign(p)).await.unwrap();
    }
    let mut odd = cohort("scientist", "x1");
    if let Payload::CohortCreated(cc) = &mut odd {
        cc.mode = "mixed".into();
    }
    expect(
        &mut c,
        f.scientist.sign(odd),
        Code::InvalidArgument,
        "neither",
    )
    .await;
    for id in ["f1", "p1"] {
        c.submit(f.hospitals[0].sign(slice(id, &format!("{id}/site-0"), "site-0", 2, "scientist")))
            .await
            .unwrap();
    }
    let Payload::CohortSliceCommitted(s) = slice("f1", "f1/site-0", "site-0", 2, "scientist")
    else {
        unreachable!()
    };
    let root = s.slice_root.clone();
    let both = ["site-0", "site-1"];
    let before = ledger.head();
    let refused: Vec<(usize, Payload, Code, &str)> = vec![
        (
            0,
            round("p1", "site-0", 1, 1, &both, &root, 2, "scientist"),
            Code::FailedPrecondition,
            "not federated",
        ),
        (
            1,
            round("f1", "site-1", 1, 1, &both, &root, 1, "scientist"),
            Code::FailedPrecondition,
            "not committed",
        ),
        (
            1,
            round("f1", "site-0", 1, 1, &both, &root, 2, "scientist"),
            Code::PermissionDenied,
            "speaks for site site-1",
        ),
        (
            0,
            round("f1", "site-0", 1, 1, &both, &[9; 32], 2, "scientist"),
            Code::InvalidArgument,
            "not the committed root",
        ),
        (
            0,
            round("f1", "site-0", 1, 1, &both, &root, 3, "scientist"),
            Code::InvalidArgument,
            "the slice holds 2",
        ),
        (
            0,
            round("f1", "site-0", 1, 1, &both, &root, 2, "regulator"),
            Code::InvalidArgument,
            "requester",
        ),
        (
            0,
            round("f1", "site-0", 1, 1, &["site-0"], &root, 2, "scientist"),
            Code::InvalidArgument,
            "at least two",
        ),
        (
            0,
            round(
                "f1",
                "site-0",
                1,
                1,
                &["site-1", "site-0"],
                &root,
                2,
                "scientist",
            ),
            Code::InvalidArgument,
            "strictly ascending",
        ),
        (
            0,
            round(
                "f1",
                "site-0",
                1,
                1,
                &["site-1", "site-2"],
                &root,
                2,
                "scientist",
            ),
            Code::InvalidArgument,
            "not among",
        ),
        (
            0,
            round(
                "f1",
                "site-0",
                1,
                1,
                &["site-0", "site-2"],
                &root,
                2,
                "scientist",
            ),
            Code::InvalidArgument,
            "not a site of the cohort",
        ),
        (
            0,
            round("f1", "site-0", 0, 1, &both, &root, 2, "scientist"),
            Code::InvalidArgument,
            "count from 1",
        ),
    ];
    for (h, p, code, needle) in refused {
        expect(&mut c, f.hospitals[h].sign(p), code, needle).await;
    }
    let mut short_key = round("f1", "site-0", 1, 1, &both, &root, 2, "scientist");
    if let Payload::LocalRoundTrained(r) = &mut short_key {
        r.round_key.pop();
    }
    expect(
        &mut c,
        f.hospitals[0].sign(short_key),
        Code::InvalidArgument,
        "48",
    )
    .await;
    let mut not_a_point = round("f1", "site-0", 1, 1, &both, &root, 2, "scientist");
    if let Payload::LocalRoundTrained(r) = &mut not_a_point {
        r.round_key = vec![7; 48];
    }
    expect(
        &mut c,
        f.hospitals[0].sign(not_a_point),
        Code::InvalidArgument,
        "not a compressed G1 point",
    )
    .await;
    // A scientist may not record a site's round.
    expect(
        &mut c,
        f.scientist
            .sign(round("f1", "site-0", 1, 1, &both, &root, 2, "scientist")),
        Code::PermissionDenied,
        "may not write LocalRoundTrained",
    )
    .await;
    assert_eq!(ledger.head(), before, "nothing written");
    // The real one, once per round and attempt.
    let ok = round("f1", "site-0", 1, 1, &both, &root, 2, "scientist");
    c.submit(f.hospitals[0].sign(ok.clone())).await.unwrap();
    expect(
        &mut c,
        f.hospitals[0].sign(ok),
        Code::AlreadyExists,
        "already trained round 1 attempt 1",
    )
    .await;
    c.submit(f.hospitals[0].sign(round("f1", "site-0", 1, 2, &both, &root, 1, "scientist")))
        .await
        .unwrap();
    // The whole log still verifies offline with the same rules.
    let report = ecgfed_ledger::verify::verify_store(ledger.store()).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}
