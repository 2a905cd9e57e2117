//! Malicious server test: a real gRPC server that lies (forged inclusion proof, forged
//! consistency proof, rolled-back checkpoint, forked checkpoint, forged entry) is caught by
//! the verifying client every time.

mod common;

use std::sync::Arc;

use common::*;
use ecgfed_ledger::checkpoint::Checkpoint;
use ecgfed_ledger::client::{ClientError, LedgerClient};
use ecgfed_ledger::keys::KeyPair;
use ecgfed_ledger::service::LedgerServer;
use ecgfed_proto::v1::ledger_service_server::{LedgerService, LedgerServiceServer};
use ecgfed_proto::v1::*;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Lie {
    Honest,
    InclusionProof,
    ConsistencyProof,
    Rollback,
    Fork,
    Entry,
    /// Subject answers with forged attached inclusion proofs.
    AttachedProof,
    /// Subject answers with their attached proofs stripped.
    NoAttachedProof,
}

#[derive(Clone)]
struct Liar {
    real: LedgerServer,
    lie: Arc<std::sync::Mutex<Lie>>,
    /// The ledger key: a compromised operator can sign whatever it likes.
    key: KeyPair,
    old_note: String,
}

impl Liar {
    fn lie(&self) -> Lie {
        *self.lie.lock().unwrap()
    }
}

fn flip(hashes: &mut [Vec<u8>]) {
    if let Some(h) = hashes.first_mut() {
        h[0] ^= 1;
    }
}

#[tonic::async_trait]
impl LedgerService for Liar {
    async fn submit(&self, r: Request<SignedEntry>) -> Result<Response<SubmitResponse>, Status> {
        self.real.submit(r).await
    }
    type SubmitStreamStream = <LedgerServer as LedgerService>::SubmitStreamStream;
    async fn submit_stream(
        &self,
        r: Request<Streaming<SignedEntry>>,
    ) -> Result<Response<Self::SubmitStreamStream>, Status> {
        self.real.submit_stream(r).await
    }
    async fn get_entry(
        &self,
        r: Request<GetEntryRequest>,
    ) -> Result<Response<GetEntryResponse>, Status> {
        let mut resp = self.real.get_entry(r).await?;
        if self.lie() == Lie::Entry {
            let n = resp.get_ref().stored.len();
            resp.get_mut().stored[n / 2] ^= 1;
        }
        Ok(resp)
    }
    async fn get_block(&self, r: Request<GetBlockRequest>) -> Result<Response<Block>, Status> {
        self.real.get_block(r).await
    }
    async fn get_checkpoint(
        &self,
        r: Request<GetCheckpointRequest>,
    ) -> Result<Response<Checkpoint_>, Status> {
        self.real.get_checkpoint(r).await
    }
    async fn latest_checkpoint(
        &self,
        r: Request<LatestCheckpointRequest>,
    ) -> Result<Response<Checkpoint_>, Status> {
        let real = self.real.latest_checkpoint(r).await?;
        match self.lie() {
            Lie::Rollback => Ok(Response::new(Checkpoint_ {
                note: self.old_note.clone(),
            })),
            Lie::Fork => {
                // Same size, another root, validly signed by the (compromised) ledger key.
                let mut lines: Vec<String> =
                    real.get_ref().note.lines().map(String::from).collect();
                let size: u64 = lines[1].parse().unwrap();
                let cp = Checkpoint {
                    origin: lines.remove(0),
                    size,
                    root: [0x42; 32],
                    timestamp_ms: 1,
                };
                Ok(Response::new(Checkpoint_ {
                    note: cp.sign(&self.key),
                }))
            }
            _ => Ok(real),
        }
    }
    async fn prove_inclusion(
        &self,
        r: Request<ProveInclusionRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        let mut p = self.real.prove_inclusion(r).await?;
        if self.lie() == Lie::InclusionProof {
            flip(&mut p.get_mut().hashes);
        }
        Ok(p)
    }
    async fn prove_consistency(
        &self,
        r: Request<ProveConsistencyRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        let mut p = self.real.prove_consistency(r).await?;
        if self.lie() == Lie::ConsistencyProof {
            flip(&mut p.get_mut().hashes);
        }
        Ok(p)
    }
    type QueryBySubjectStream = <LedgerServer as LedgerService>::QueryBySubjectStream;
    async fn query_by_subject(
        &self,
        r: Request<QueryBySubjectRequest>,
    ) -> Result<Response<Self::QueryBySubjectStream>, Status> {
        let lie = self.lie();
        let answers = self.real.query_by_subject(r).await?.into_inner();
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            answers,
            move |a| {
                a.map(|mut e| {
                    match lie {
                        Lie::AttachedProof => flip(&mut e.inclusion),
                        Lie::NoAttachedProof => e.inclusion.clear(),
                        _ => {}
                    }
                    e
                })
            },
        ))))
    }
    type WatchBlocksStream = <LedgerServer as LedgerService>::WatchBlocksStream;
    async fn watch_blocks(
        &self,
        r: Request<WatchBlocksRequest>,
    ) -> Result<Response<Self::WatchBlocksStream>, Status> {
        self.real.watch_blocks(r).await
    }
}

use ecgfed_proto::v1::Checkpoint as Checkpoint_;

fn refused(r: Result<impl std::fmt::Debug, ClientError>, needle: &str) {
    match r {
        Err(e) if e.is_verification() => {
            let m = e.to_string();
            assert!(m.contains(needle), "{m:?} should mention {needle:?}");
            // The checkpoint lies come with their evidence, as typed variants.
            match (needle, &e) {
                ("not consistent", ClientError::Inconsistent { old, new, .. }) => {
                    assert!(new.size > old.size, "{e:?}")
                }
                ("rolled-back", ClientError::RolledBack { trusted, presented }) => {
                    assert!(presented.size < trusted.size, "{e:?}")
                }
                ("forked", ClientError::Forked { trusted, presented }) => {
                    assert_eq!(presented.size, trusted.size, "{e:?}");
                    assert_ne!(presented.root, trusted.root, "{e:?}");
                }
                ("not consistent" | "rolled-back" | "forked", _) => {
                    panic!("{needle:?} should be its own variant, got {e:?}")
                }
                _ => {}
            }
        }
        other => panic!("expected a verification failure mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_server_is_caught_every_time() {
    let mut f = Fixture::new();
    let ledger = f.open();
    let old_note = ledger.checkpoint();
    let lie = Arc::new(std::sync::Mutex::new(Lie::Honest));
    let liar = Liar {
        real: LedgerServer::new(ledger.clone()),
        lie: lie.clone(),
        key: f.ledger_key.clone(),
        old_note,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LedgerServiceServer::new(liar))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (origin, key) = ledger.identity();
    let set = |l: Lie| *lie.lock().unwrap() = l;

    let mut c = LedgerClient::connect(&addr.to_string(), &origin, key, None)
        .await
        .unwrap();
    c.act_as("scientist", f.scientist.key().clone());
    for i in 0..5 {
        c.submit(f.scientist.sign(model(&format!("m{i}"))))
            .await
            .unwrap();
    }
    let trusted = c.update_checkpoint().await.unwrap();
    assert_eq!(trusted.size, 6);
    for i in 5..9 {
        ledger
            .submit(f.scientist.sign(model(&format!("m{i}"))))
            .await
            .unwrap();
    }

    // Forged consistency proof: the trusted checkpoint cannot move forward.
    set(Lie::ConsistencyProof);
    refused(c.update_checkpoint().await, "not consistent");
    assert_eq!(
        c.trusted(),
        Some(&trusted),
        "a refused checkpoint is not trusted"
    );
    // Forged inclusion proof.
    set(Lie::InclusionProof);
    refused(c.entry(3).await, "not in the signed tree");
    // A forged entry with an honest proof.
    set(Lie::Entry);
    refused(c.entry(2).await, "not in the signed tree");
    // Subject answers: a forged attached proof is refused; without attached proofs the client
    // proves each answer itself and gets the same entries.
    let m1 = Subject {
        kind: SubjectKind::Model as i32,
        id: "m1".into(),
    };
    set(Lie::AttachedProof);
    refused(
        c.query_subject(m1.clone(), 0, 0).await,
        "not in the signed tree",
    );
    set(Lie::Honest);
    let honest = c.query_subject(m1.clone(), 0, 0).await.unwrap();
    assert_eq!(honest.len(), 1);
    set(Lie::NoAttachedProof);
    let stripped = c.query_subject(m1, 0, 0).await.unwrap();
    assert_eq!(
        stripped
            .iter()
            .map(|e| (e.index, &e.stored))
            .collect::<Vec<_>>(),
        honest
            .iter()
            .map(|e| (e.index, &e.stored))
            .collect::<Vec<_>>()
    );
    // Rolled back to the genesis checkpoint (validly signed, but older).
    set(Lie::Rollback);
    refused(c.update_checkpoint().await, "rolled-back");
    // Forked: a validly signed different root at the trusted size.
    let mut same = LedgerClient::connect(&addr.to_string(), &origin, key, None)
        .await
        .unwrap();
    set(Lie::Honest);
    let now = same.update_checkpoint().await.unwrap();
    set(Lie::Fork);
    refused(same.update_checkpoint().await, "forked");
    // A client that trusted the fork (size 10 root 0x42..) cannot be moved onto the real log.
    set(Lie::Honest);
    let forked = Checkpoint {
        root: [0x42; 32],
        ..now.clone()
    };
    let mut victim = LedgerClient::connect(&addr.to_string(), &origin, key, Some(forked))
        .await
        .unwrap();
    refused(victim.update_checkpoint().await, "forked");
    // A checkpoint signed by another key is refused outright.
    let mut wrong_key = LedgerClient::connect(
        &addr.to_string(),
        &origin,
        KeyPair::generate().public(),
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        wrong_key.update_checkpoint().await,
        Err(ClientError::Verification(_))
    ));

    // Honest again: everything verifies, the trusted checkpoint advances consistently.
    let next = c.update_checkpoint().await.unwrap();
    assert_eq!(next.size, 10);
    for i in 0..10 {
        c.entry(i).await.unwrap();
    }
}
