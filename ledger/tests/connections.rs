//! Who may call the ledger, and how much (docs/ledger.md "Connections"): writes only from
//! members with a valid call token; forged tokens refused, then refused unchecked past a rate
//! (a revoked member's token: tests/submission.rs); open streams bounded per member and per address; a
//! member's entries in flight bounded, a stream waiting for room rather than failing.

mod common;

use std::sync::Arc;

use common::*;
use ecgfed_ledger::access::{self, CallIdentity, CallToken, MEMBER_HEADER, TOKEN_HEADER};
use ecgfed_ledger::gate::{Gate, Limits};
use ecgfed_ledger::keys::KeyPair;
use tonic::Code;

/// A raw client at `addr` with no token.
async fn anonymous(addr: std::net::SocketAddr) -> access::Client {
    access::connect(format!("http://{addr}"), None)
        .await
        .unwrap()
}

/// A submission of `e` carrying `member` and a token signed by `key` at `time_ms`.
fn with_token(
    e: ecgfed_proto::v1::SignedEntry,
    member: &str,
    key: &KeyPair,
    time_ms: i64,
) -> tonic::Request<ecgfed_proto::v1::SignedEntry> {
    let t = CallToken::mint(ORIGIN, member, key, time_ms);
    let mut r = tonic::Request::new(e);
    r.metadata_mut()
        .insert(MEMBER_HEADER, member.parse().unwrap());
    r.metadata_mut()
        .insert(TOKEN_HEADER, t.header_value().parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_taken_only_from_members_with_valid_tokens() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let (addr, _stop) = serve(ledger.clone()).await;
    let before = ledger.head();
    let now = ecgfed_ledger::entry::now_ms();

    // No token: refused, whoever signed the entry.
    let mut anon = anonymous(addr).await;
    let s = anon
        .submit(f.scientist.sign(model("m-anon")))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s}");
    assert!(s.message().contains("no member call token"), "{s}");
    // A token claiming a member, signed with another key; an unknown member; a stale token.
    let stranger = KeyPair::generate();
    let own = f.scientist.key().clone();
    let cases = [
        ("scientist", &stranger, now, "does not verify"),
        ("mallory", &stranger, now, "not a member"),
        (
            "scientist",
            &own,
            now - 20 * 60 * 1000,
            "from the ledger's clock",
        ),
    ];
    for (member, key, time, needle) in cases {
        let r = with_token(f.scientist.sign(model("m-forged")), member, key, time);
        let s = anon.submit(r).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{s}");
        assert!(s.message().contains(needle), "{needle}: {s}");
    }
    assert_eq!(ledger.head(), before, "nothing written");
    // A member's token: accepted, for an entry signed by another member too.
    let key = f.regulator.key().clone();
    let r = with_token(f.scientist.sign(model("m-ok")), "regulator", &key, now);
    anon.submit(r).await.unwrap();
    // Reads need no token.
    anon.latest_checkpoint(ecgfed_proto::v1::LatestCheckpointRequest { at_least: 0 })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_past_a_rate_are_refused_unchecked() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let limits = Limits {
        failed_tokens_per_second: 5,
        ..Limits::default()
    };
    let (addr, _stop) = serve_limited(ledger.clone(), limits).await;
    let mut anon = anonymous(addr).await;
    let stranger = KeyPair::generate();
    let mut codes = Vec::new();
    // Within one second (or two, at a boundary): at most 10 checked, the rest refused unchecked.
    for _ in 0..30 {
        let now = ecgfed_ledger::entry::now_ms();
        let r = with_token(f.scientist.sign(model("x")), "scientist", &stranger, now);
        codes.push(anon.submit(r).await.unwrap_err().code());
    }
    let unchecked = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    let checked = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    assert_eq!(checked + unchecked, 30, "{codes:?}");
    assert!(checked >= 5 && unchecked >= 10, "{codes:?}");
    // A member's token already verified is not held up by the address's failures.
    let mut member = f.raw(addr).await;
    let _ = member.submit(f.scientist.sign(model("ok"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_bounded_per_member_and_per_address() {
    let mut f = Fixture::new();
    let ledger = f.open();
    // Enough entries that an answer does not fit the HTTP/2 windows: a stream nobody reads
    // stays open at the ledger.
    let entries: Vec<_> = (0..6000)
        .map(|i| f.scientist.sign(model(&format!("m{i}"))))
        .collect();
    for r in futures::future::join_all(entries.into_iter().map(|e| ledger.submit(e))).await {
        r.unwrap();
    }
    let limits = Limits {
        streams_per_peer: 3,
        ..Limits::default()
    };
    let (addr, _stop) = serve_limited(ledger.clone(), limits).await;
    let q = ecgfed_testkit::payloads::all_models;
    // Streams stay open until read or dropped.
    let mut member = f.raw(addr).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(member.query_by_subject(q()).await.unwrap().into_inner());
    }
    let s = member.query_by_subject(q()).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s}");
    assert!(s.message().contains("member regulator"), "{s}");
    // Without a token the address has its own slots.
    let mut anon = anonymous(addr).await;
    let a = anon.query_by_subject(q()).await.unwrap().into_inner();
    // A dropped stream gives its slot back.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        match member.query_by_subject(q()).await {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert!(again.is_some(), "the dropped stream's slot came back");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_entries_in_flight_are_bounded_and_a_stream_waits_for_room() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let gate = Gate::new(
        ledger.clone(),
        Limits {
            inflight_per_member: 1,
            ..Limits::default()
        },
    );
    let first = gate.try_inflight("scientist").unwrap();
    let s = gate.try_inflight("scientist").unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s}");
    let _other = gate.try_inflight("regulator").unwrap();
    drop(first);
    let _again = gate.try_inflight("scientist").unwrap();

    // Through the service: a stream of 40 entries with room for 2 in flight is answered whole.
    let limits = Limits {
        inflight_per_member: 2,
        ..Limits::default()
    };
    let (addr, _stop) = serve_limited(ledger.clone(), limits).await;
    let id = Arc::new(CallIdentity::new(
        ORIGIN,
        "scientist",
        f.scientist.key().clone(),
    ));
    let mut c = access::connect(format!("http://{addr}"), Some(id))
        .await
        .unwrap();
    let list: Vec<_> = (0..40)
        .map(|i| f.scientist.sign(model(&format!("s{i}"))))
        .collect();
    let mut answers = c
        .submit_stream(tokio_stream::iter(list))
        .await
        .unwrap()
        .into_inner();
    let mut ok = 0;
    while let Some(r) = tokio_stream::StreamExt::next(&mut answers).await {
        assert_eq!(r.unwrap().code, 0);
        ok += 1;
    }
    assert_eq!(ok, 40);
}
