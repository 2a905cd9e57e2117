//! The LedgerService gRPC server (tonic) over an open [`Ledger`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use ecgfed_proto::v1::ledger_service_server::{LedgerService, LedgerServiceServer};
use ecgfed_proto::v1::{
    Block as PbBlock, Checkpoint as PbCheckpoint, ConsistencyProof, GetBlockRequest,
    GetCheckpointRequest, GetEntryRequest, GetEntryResponse, InclusionProof,
    LatestCheckpointRequest, ProveConsistencyRequest, ProveInclusionRequest, QueryBySubjectRequest,
    SignedEntry, SubmitResponse, WatchBlocksRequest,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::entry::subject_key;
use crate::gate::{Gate, Limits, StreamSlot};
use crate::protocol::{MAX_MESSAGE_BYTES, STREAM_WINDOW};
use crate::sequencer::{Ledger, Receipt};
use crate::state::{Code, Rejection};

/// Subject answers read inline in the request handler before the rest is streamed from a
/// blocking task.
const INLINE_ANSWERS: u64 = 64;

/// How long a streamed answer waits for its caller to read on before it is dropped.
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The gRPC status of a rejection.
pub fn status(r: Rejection) -> Status {
    let code = match r.code {
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::Unauthenticated => tonic::Code::Unauthenticated,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::Unavailable => tonic::Code::Unavailable,
    };
    Status::new(code, r.message)
}

fn response(r: Receipt) -> SubmitResponse {
    SubmitResponse {
        index: r.index,
        block_height: r.block_height,
        leaf_hash: r.leaf_hash.to_vec(),
        code: 0,
        message: String::new(),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// The service implementation.
#[derive(Debug, Clone)]
pub struct LedgerServer {
    ledger: Arc<Ledger>,
    gate: Arc<Gate>,
}

impl LedgerServer {
    /// A service over `ledger` with the default per-peer limits.
    pub fn new(ledger: Arc<Ledger>) -> Self {
        LedgerServer::with_limits(ledger, Limits::default())
    }

    /// A service over `ledger` with `limits`.
    pub fn with_limits(ledger: Arc<Ledger>, limits: Limits) -> Self {
        let gate = Arc::new(Gate::new(Arc::clone(&ledger), limits));
        LedgerServer { ledger, gate }
    }

    /// The member a write call comes from (a mirror refuses writes itself, later).
    fn writer<T>(&self, req: &Request<T>) -> Result<Option<String>, Status> {
        if self.ledger.is_mirror() {
            return Ok(None);
        }
        self.gate.writer(req).map(Some)
    }

    /// The tonic service with our message limits.
    pub fn into_service(self) -> LedgerServiceServer<LedgerServer> {
        LedgerServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn entry_response(&self, index: u64) -> Result<GetEntryResponse, Status> {
        let head = self.ledger.head();
        let stored = self
            .ledger
            .store()
            .entry(index)
            .map_err(internal)?
            .filter(|_| index < head.tree_size)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "entry {index} does not exist (tree size {})",
                    head.tree_size
                ))
            })?;
        let block_height = self
            .ledger
            .store()
            .block_of_entry(index, head)
            .map_err(internal)?
            .unwrap_or(0);
        Ok(GetEntryResponse {
            index,
            stored,
            block_height,
            inclusion: Vec::new(),
        })
    }

    /// Up to `limit` entries naming the subject `prefix` from index `from` on, each with its
    /// inclusion proof in the tree of `size` entries when it lies inside that tree (proofs of
    /// one chunk share their node reads).
    fn subject_chunk(
        &self,
        prefix: &[u8],
        from: u64,
        limit: u64,
        size: u64,
    ) -> Result<Vec<GetEntryResponse>, Status> {
        let idx = self
            .ledger
            .store()
            .subject_entries(prefix, from, limit)
            .map_err(internal)?;
        let inside: Vec<u64> = idx.iter().copied().filter(|&i| i < size).collect();
        let mut proofs = self
            .ledger
            .prove_inclusions(&inside, size)
            .map_err(status)?
            .into_iter();
        idx.into_iter()
            .map(|i| {
                let mut e = self.entry_response(i)?;
                if i < size {
                    e.inclusion = hashes(proofs.next().unwrap_or_default());
                }
                Ok(e)
            })
            .collect()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn hashes(v: Vec<[u8; 32]>) -> Vec<Vec<u8>> {
    v.into_iter().map(|h| h.to_vec()).collect()
}

#[tonic::async_trait]
impl LedgerService for LedgerServer {
    async fn submit(&self, req: Request<SignedEntry>) -> Result<Response<SubmitResponse>, Status> {
        let room = match self.writer(&req)? {
            Some(m) => Some(self.gate.try_inflight(&m)?),
            None => None,
        };
        let r = self.ledger.submit(req.into_inner()).await.map_err(status)?;
        drop(room);
        Ok(Response::new(response(r)))
    }

    type SubmitStreamStream = BoxStream<SubmitResponse>;

    async fn submit_stream(
        &self,
        req: Request<Streaming<SignedEntry>>,
    ) -> Result<Response<Self::SubmitStreamStream>, Status> {
        let member = self.writer(&req)?;
        let mut input = req.into_inner();
        let (pending_tx, mut pending_rx) = mpsc::channel(STREAM_WINDOW);
        let (out_tx, out_rx) = mpsc::channel(STREAM_WINDOW);
        let (ledger, gate) = (Arc::clone(&self.ledger), Arc::clone(&self.gate));
        tokio::spawn(async move {
            while let Some(item) = input.next().await {
                let Ok(entry) = item else { break };
                // Room in the member's share of the queue first: a flood waits here, on its
                // own stream, and holds no more than its share.
                let room = match &member {
                    Some(m) => match gate.inflight(m).await {
                        Ok(p) => Some(p),
                        Err(_) => break,
                    },
                    None => None,
                };
                let rx = ledger.enqueue(entry).await;
                if pending_tx.send((rx, room)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some((rx, _room)) = pending_rx.recv().await {
                let answer = match rx {
                    Ok(rx) => rx.await.unwrap_or_else(|_| {
                        Err(Rejection::new(Code::Unavailable, "the ledger stopped"))
                    }),
                    Err(r) => Err(r),
                };
                let msg = match answer {
                    Ok(r) => response(r),
                    Err(r) => {
                        let s = status(r);
                        SubmitResponse {
                            code: s.code() as i32,
                            message: s.message().to_string(),
                            ..Default::default()
                        }
                    }
                };
                if out_tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn get_entry(
        &self,
        req: Request<GetEntryRequest>,
    ) -> Result<Response<GetEntryResponse>, Status> {
        Ok(Response::new(self.entry_response(req.into_inner().index)?))
    }

    async fn get_block(&self, req: Request<GetBlockRequest>) -> Result<Response<PbBlock>, Status> {
        let h = req.into_inner().height;
        let head = self.ledger.head();
        let b = self
            .ledger
            .store()
            .block(h)
            .map_err(internal)?
            .filter(|_| h < head.blocks)
            .ok_or_else(|| {
                Status::not_found(format!("block {h} does not exist ({} blocks)", head.blocks))
            })?;
        Ok(Response::new(b.to_proto()))
    }

    async fn latest_checkpoint(
        &self,
        req: Request<LatestCheckpointRequest>,
    ) -> Result<Response<PbCheckpoint>, Status> {
        // A wait for a checkpoint not witnessed yet holds a stream slot while it waits.
        let _slot = if req.get_ref().at_least > self.ledger.witnessed().size {
            Some(self.gate.open_stream(self.gate.peer(&req)?)?)
        } else {
            None
        };
        let at_least = req.into_inner().at_least;
        Ok(Response::new(PbCheckpoint {
            note: self.ledger.witnessed_at_least(at_least).await.note,
        }))
    }

    async fn get_checkpoint(
        &self,
        req: Request<GetCheckpointRequest>,
    ) -> Result<Response<PbCheckpoint>, Status> {
        let size = req.into_inner().size;
        let note = self
            .ledger
            .checkpoint_at(size)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no block ended at tree size {size}")))?;
        Ok(Response::new(PbCheckpoint { note }))
    }

    async fn prove_inclusion(
        &self,
        req: Request<ProveInclusionRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        let r = req.into_inner();
        let p = self
            .ledger
            .prove_inclusion(r.index, r.tree_size)
            .map_err(status)?;
        Ok(Response::new(InclusionProof {
            index: r.index,
            tree_size: r.tree_size,
            hashes: hashes(p),
        }))
    }

    async fn prove_consistency(
        &self,
        req: Request<ProveConsistencyRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        let r = req.into_inner();
        let p = self
            .ledger
            .prove_consistency(r.from_size, r.to_size)
            .map_err(status)?;
        Ok(Response::new(ConsistencyProof {
            from_size: r.from_size,
            to_size: r.to_size,
            hashes: hashes(p),
        }))
    }

    type QueryBySubjectStream = BoxStream<GetEntryResponse>;

    async fn query_by_subject(
        &self,
        req: Request<QueryBySubjectRequest>,
    ) -> Result<Response<Self::QueryBySubjectStream>, Status> {
        let slot = self.gate.open_stream(self.gate.peer(&req)?)?;
        let r = req.into_inner();
        let s = r
            .subject
            .ok_or_else(|| Status::invalid_argument("QueryBySubject needs a subject"))?;
        crate::state::check_id("subject id", &s.id).map_err(status)?;
        self.ledger.check_size(r.prove_at_size).map_err(status)?;
        let prefix = subject_key(s.kind, &s.id);
        let limit = if r.limit == 0 { u64::MAX } else { r.limit };
        let size = r.prove_at_size;
        // The first few answers are read right here and sent in one go: most lookups (a
        // model, a cohort, a dataset's history) end there, and a hop to a blocking thread
        // costs more than the reads. Longer answers go on from a blocking task.
        let first = self.subject_chunk(&prefix, r.from_index, limit.min(INLINE_ANSWERS), size)?;
        let n = first.len() as u64;
        let first_next = first.last().map_or(r.from_index, |e| e.index + 1);
        let head = tokio_stream::iter(first.into_iter().map(Ok));
        if n < INLINE_ANSWERS.min(limit) || n == limit {
            return Ok(Response::new(Box::pin(holding(slot, head))));
        }
        // Here n ≥ 1: the first chunk was full and the limit not reached.
        let mut from = first_next;
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        // Chunks are read on a blocking thread, one at a time, and sent from an async task: a
        // stream its caller stops reading holds no thread, and is dropped after STREAM_IDLE.
        tokio::spawn(async move {
            let mut left = limit - n;
            loop {
                let chunk = left.min(1024);
                let (t, p) = (this.clone(), prefix.clone());
                let read =
                    tokio::task::spawn_blocking(move || t.subject_chunk(&p, from, chunk, size))
                        .await;
                let items = match read {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(_) => return,
                };
                let got = items.len() as u64;
                for item in items {
                    from = item.index + 1;
                    if !sent(&tx, Ok(item)).await {
                        return;
                    }
                }
                left -= got;
                if got < chunk || left == 0 {
                    return;
                }
            }
        });
        // The slot is given back when the stream is dropped (read to its end, or its caller
        // gone), not when the answers are all queued.
        Ok(Response::new(Box::pin(holding(
            slot,
            head.chain(ReceiverStream::new(rx)),
        ))))
    }

    type WatchBlocksStream = BoxStream<PbBlock>;

    async fn watch_blocks(
        &self,
        req: Request<WatchBlocksRequest>,
    ) -> Result<Response<Self::WatchBlocksStream>, Status> {
        let slot = self.gate.open_stream(self.gate.peer(&req)?)?;
        let mut next = req.into_inner().from_height;
        let mut live = self.ledger.watch();
        let mut stop = self.ledger.stopping.subscribe();
        let ledger = Arc::clone(&self.ledger);
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                // Replay what is committed from `next` on, then wait for live blocks.
                while next < ledger.head().blocks {
                    let b = match ledger.store().block(next) {
                        Ok(Some(b)) => Ok(b.to_proto()),
                        Ok(None) => Err(Status::internal(format!("block {next} is missing"))),
                        Err(e) => Err(internal(e)),
                    };
                    let stop = b.is_err();
                    if !sent(&tx, b).await || stop {
                        return;
                    }
                    next += 1;
                }
                let got = tokio::select! {
                    got = live.recv() => got,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match got {
                    Ok(b) if b.height == next => {
                        if !sent(&tx, Ok(b.to_proto())).await {
                            return;
                        }
                        next += 1;
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(holding(
            slot,
            ReceiverStream::new(rx),
        ))))
    }
}

/// `s`, holding `slot` for as long as it is not dropped.
fn holding<S: Stream + Send + 'static>(slot: StreamSlot, s: S) -> impl Stream<Item = S::Item> {
    s.map(move |x| {
        let _held = &slot;
        x
    })
}

/// Sends one streamed answer; false when the caller is gone or has not read for
/// [`STREAM_IDLE`] (the stream is then dropped).
async fn sent<T>(tx: &mpsc::Sender<Result<T, Status>>, item: Result<T, Status>) -> bool {
    matches!(
        tokio::time::timeout(STREAM_IDLE, tx.send(item)).await,
        Ok(Ok(()))
    )
}

/// Serves `ledger` on `listener` until `shutdown` resolves, then stops accepting calls,
/// lets running calls finish and commits what is queued.
pub async fn serve(
    ledger: Arc<Ledger>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with(ledger, listener, Limits::default(), shutdown).await
}

/// [`serve`] with per-peer `limits` of its own.
pub async fn serve_with(
    ledger: Arc<Ledger>,
    listener: tokio::net::TcpListener,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_tls(ledger, listener, limits, None, shutdown).await
}

/// TLS of the ledger's port.
pub type ServerTls = tonic::transport::ServerTlsConfig;

/// The TLS settings of a certificate chain and its private key (PEM files; the key must be a
/// regular file of mode 0600, as member keys).
pub fn server_tls(cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<ServerTls> {
    crate::keys::check_secret_file(key).map_err(std::io::Error::other)?;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let id = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    Ok(ServerTls::new().identity(id))
}

/// [`serve_with`], over TLS only when `tls` is given.
pub async fn serve_tls(
    ledger: Arc<Ledger>,
    listener: tokio::net::TcpListener,
    limits: Limits,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = incoming(listener);
    let svc = LedgerServer::with_limits(Arc::clone(&ledger), limits).into_service();
    // Once asked to stop, endless streams (WatchBlocks of mirrors, waits for a witnessed
    // checkpoint) end, so that the graceful shutdown does not wait for them forever.
    let stopping = Arc::clone(&ledger);
    let shutdown = async move {
        shutdown.await;
        stopping.begin_shutdown();
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        builder = builder.tls_config(t)?;
    }
    let r = builder
        .tcp_nodelay(true)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let l = Arc::clone(&ledger);
    let _ = tokio::task::spawn_blocking(move || l.shutdown()).await;
    r
}

/// The accepted connections of `listener` with TCP_NODELAY set: the builder's `tcp_nodelay`
/// only applies to sockets tonic accepts itself, and without it small answers wait for delayed
/// ACKs (about 40 ms each on Linux). Every server of the workspace uses it.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            if let Ok(s) = &s {
                let _ = s.set_nodelay(true);
            }
            s
        },
    )
}

/// Binds `addr` (port 0 picks a free one) and returns the listener and its actual address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
