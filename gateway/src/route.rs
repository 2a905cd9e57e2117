//! DoGet answered with messages laid out for the wire (docs/flight.md "Message layout").
//!
//! tonic encodes each response message into a send buffer of its own: for a record batch that
//! is a copy of every Arrow byte, after the copy arrow-flight's encoder makes into the IPC
//! body. [`DoGetRoute`] wraps a Flight service and answers `DoGet` itself: it reads the
//! `Ticket` request, asks a [`WireDoGet`] for the stream of [`WireMessage`]s, and hands their
//! pieces to HTTP/2 as they are, large Arrow buffers included, then the gRPC status as
//! trailers. Every other Flight method goes to the wrapped service. On the wire the answer is
//! the gRPC DoGet response any Flight client reads.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use crate::wire::{GRPC_PREFIX, MessageEncoder, WireMessage};

/// gRPC path of DoGet.
pub const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// Largest DoGet request accepted (a ticket is a few dozen bytes).
pub const MAX_TICKET_REQUEST: usize = 64 << 10;

/// A DoGet response as messages laid out for the wire.
pub type MessageStream = Pin<Box<dyn Stream<Item = Result<WireMessage, Status>> + Send>>;

/// Answers DoGet with [`WireMessage`]s: the schema message, then the record batch messages.
/// An error ends the stream with that status.
#[tonic::async_trait]
pub trait WireDoGet: Send + Sync + 'static {
    /// The response to the DoGet `request`, or the status that refuses it.
    async fn do_get_wire(&self, request: Request<Ticket>) -> Result<MessageStream, Status>;
}

/// A Flight service whose DoGet calls are answered by a [`WireDoGet`] (module doc). The
/// wrapped service's settings (message size limits, compression) do not apply to DoGet:
/// requests must be uncompressed, responses are sent uncompressed, and the [`WireDoGet`] keeps
/// its messages within the client's limit.
pub struct DoGetRoute<S> {
    flight: FlightServiceServer<S>,
    wire: Arc<dyn WireDoGet>,
}

impl<S> Clone for DoGetRoute<S> {
    fn clone(&self) -> Self {
        DoGetRoute {
            flight: self.flight.clone(),
            wire: Arc::clone(&self.wire),
        }
    }
}

impl<S: FlightService> DoGetRoute<S> {
    /// Routes DoGet to `wire` and every other call to `flight`.
    pub fn new(flight: FlightServiceServer<S>, wire: Arc<dyn WireDoGet>) -> Self {
        DoGetRoute { flight, wire }
    }
}

impl<S> NamedService for DoGetRoute<S> {
    const NAME: &'static str = <FlightServiceServer<S> as NamedService>::NAME;
}

impl<S: FlightService> tonic::codegen::Service<http::Request<Body>> for DoGetRoute<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tonic::codegen::Service::<http::Request<Body>>::poll_ready(&mut self.flight, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != DO_GET_PATH {
            return self.flight.call(req);
        }
        let wire = Arc::clone(&self.wire);
        Box::pin(async move { Ok(do_get(wire.as_ref(), req).await) })
    }
}

/// One DoGet call: the request, then the response's messages and its status.
async fn do_get(wire: &dyn WireDoGet, req: http::Request<Body>) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let ticket = match read_ticket(body).await {
        Ok(t) => t,
        Err(s) => return s.into_http(),
    };
    let messages = match wire
        .do_get_wire(Request::from_http(http::Request::from_parts(parts, ticket)))
        .await
    {
        Ok(m) => m,
        Err(s) => return s.into_http(),
    };
    let mut res = http::Response::new(Body::new(WireBody {
        messages: Some(messages),
        pieces: Vec::new().into_iter(),
    }));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    res
}

/// The request message of a DoGet call: one uncompressed gRPC message holding a `Ticket`.
async fn read_ticket(mut body: Body) -> Result<Ticket, Status> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > MAX_TICKET_REQUEST {
                return Err(Status::invalid_argument(format!(
                    "DoGet request over {MAX_TICKET_REQUEST} bytes"
                )));
            }
        }
    }
    if buf.len() < GRPC_PREFIX {
        return Err(Status::invalid_argument("DoGet request without a message"));
    }
    if buf[0] != 0 {
        return Err(Status::unimplemented(
            "compressed DoGet requests are not accepted",
        ));
    }
    let n = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() != GRPC_PREFIX + n {
        return Err(Status::invalid_argument(format!(
            "DoGet request of {} bytes is not one message of {n} bytes",
            buf.len() - GRPC_PREFIX
        )));
    }
    Ticket::decode(buf.freeze().slice(GRPC_PREFIX..))
        .map_err(|e| Status::invalid_argument(format!("DoGet request: {e}")))
}

/// The response body: each message's pieces as DATA, then the status as trailers.
struct WireBody {
    messages: Option<MessageStream>,
    pieces: std::vec::IntoIter<Bytes>,
}

/// Trailers carrying `status` (`grpc-status` 0 when `None`).
fn trailers(status: Option<&Status>) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    let ok = http::HeaderValue::from_static("0");
    match status {
        None => {
            h.insert("grpc-status", ok);
        }
        Some(s) => {
            if s.add_header(&mut h).is_err() {
                h.insert("grpc-status", http::HeaderValue::from(s.code() as i32));
            }
        }
    }
    h
}

impl http_body::Body for WireBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(p) = this.pieces.next() {
                return Poll::Ready(Some(Ok(Frame::data(p))));
            }
            let Some(messages) = this.messages.as_mut() else {
                return Poll::Ready(None);
            };
            let end = match std::task::ready!(messages.as_mut().poll_next(cx)) {
                Some(Ok(m)) => {
                    this.pieces = m.into_pieces().into_iter();
                    continue;
                }
                Some(Err(s)) => trailers(Some(&s)),
                None => trailers(None),
            };
            this.messages = None;
            return Poll::Ready(Some(Ok(Frame::trailers(end))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.messages.is_none() && self.pieces.len() == 0
    }
}

/// A Flight service holding record batches in memory that streams them to anyone, with no
/// authentication and no verification: the plain reference the gateway bench measures
/// against. Its `DoGet` goes through arrow-flight's encoder and tonic; as a [`WireDoGet`]
/// (behind a [`DoGetRoute`]) it sends the same batches the way the gateway does.
#[derive(Clone)]
pub struct MemoryFlight {
    batches: Arc<Vec<RecordBatch>>,
    max_body: usize,
}

impl MemoryFlight {
    /// Serves `batches` (at least one, all of one schema), split into messages of at most
    /// `max_body` bytes of buffers.
    pub fn new(batches: Vec<RecordBatch>, max_body: usize) -> Self {
        MemoryFlight {
            batches: Arc::new(batches),
            max_body,
        }
    }
}

impl MemoryFlight {
    /// The batches and their schema.
    fn served(&self) -> Result<(Arc<Vec<RecordBatch>>, arrow::datatypes::SchemaRef), Status> {
        let schema = self
            .batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| Status::not_found("no batches"))?;
        Ok((Arc::clone(&self.batches), schema))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl WireDoGet for MemoryFlight {
    async fn do_get_wire(&self, _r: Request<Ticket>) -> Result<MessageStream, Status> {
        let (batches, schema) = self.served()?;
        let mut enc = MessageEncoder::new(self.max_body);
        let first = futures::stream::iter([Ok(enc.schema(&schema))]);
        let rest = futures::stream::iter(0..batches.len()).flat_map(move |i| {
            let messages: Vec<Result<WireMessage, Status>> = match enc.batch(&batches[i]) {
                Ok(m) => m.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(Status::internal(e.to_string()))],
            };
            futures::stream::iter(messages)
        });
        Ok(Box::pin(first.chain(rest)))
    }
}

#[tonic::async_trait]
impl FlightService for MemoryFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _r: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
    async fn list_flights(
        &self,
        _r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
    async fn get_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
    async fn poll_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
    async fn get_schema(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
    async fn do_get(&self, _r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let (batches, schema) = self.served()?;
        let input = futures::stream::iter((0..batches.len()).map(move |i| Ok(batches[i].clone())));
        let s = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.max_body)
            .build(input)
            .map(|r| r.map_err(|e: FlightError| Status::internal(e.to_string())));
        Ok(Response::new(Box::pin(s)))
    }
    async fn do_put(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
    async fn do_exchange(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
    async fn do_action(
        &self,
        _r: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
    async fn list_actions(
        &self,
        _r: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("DoGet only"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow_flight::decode::FlightRecordBatchStream;
    use arrow_flight::flight_service_client::FlightServiceClient;
    use futures::TryStreamExt;
    use tonic::transport::Channel;

    fn batch(rows: usize, from: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float32, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + rows as i64)),
                // Some nulls, so that the validity bitmap travels too.
                Arc::new(Float32Array::from_iter(
                    (0..rows).map(|i| (i % 7 != 3).then_some(i as f32 / 3.0)),
                )),
            ],
        )
        .unwrap()
    }

    /// Serves `svc` on a loopback port; a client of it.
    async fn serve<S>(svc: S) -> FlightServiceClient<Channel>
    where
        S: tonic::codegen::Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        FlightServiceClient::new(ch).max_decoding_message_size(64 << 20)
    }

    async fn pull(c: &mut FlightServiceClient<Channel>) -> Result<Vec<RecordBatch>, FlightError> {
        let s = c
            .do_get(Ticket::new("t"))
            .await
            .map_err(|e| FlightError::Tonic(Box::new(e)))?
            .into_inner()
            .map_err(|e| FlightError::Tonic(Box::new(e)));
        FlightRecordBatchStream::new_from_flight_data(s)
            .try_collect()
            .await
    }

    fn flight(m: &MemoryFlight) -> FlightServiceServer<MemoryFlight> {
        FlightServiceServer::new(m.clone()).max_decoding_message_size(64 << 20)
    }

    #[tokio::test]
    async fn a_plain_flight_client_reads_the_route_as_it_reads_tonic() {
        // Batches whose float buffers are lent (over SHARED_FROM), split at 1 MiB, and small.
        let batches = vec![batch(200_000, 0), batch(3, 200_000), batch(90_000, 200_003)];
        let m = MemoryFlight::new(batches.clone(), 1 << 20);
        let mut tonic_path = serve(flight(&m)).await;
        let mut route = serve(DoGetRoute::new(flight(&m), Arc::new(m.clone()))).await;
        let want = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        for c in [&mut tonic_path, &mut route] {
            let got = pull(c).await.unwrap();
            assert!(got.len() > batches.len(), "split into messages of 1 MiB");
            let got = arrow::compute::concat_batches(&want.schema(), &got).unwrap();
            assert_eq!(got, want);
        }
        // Other methods go to the wrapped service.
        let e = route
            .get_flight_info(FlightDescriptor::new_path(vec!["x".into()]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert_eq!(e.message(), "DoGet only");
    }

    /// Refuses calls without `x-key: 1`; otherwise sends the schema, one batch, then fails.
    struct FailsAfterOne;

    #[tonic::async_trait]
    impl WireDoGet for FailsAfterOne {
        async fn do_get_wire(&self, r: Request<Ticket>) -> Result<MessageStream, Status> {
            if r.metadata().get("x-key").is_none_or(|v| v != "1") {
                return Err(Status::permission_denied("no key"));
            }
            assert_eq!(&r.get_ref().ticket[..], b"t");
            let b = batch(100_000, 0);
            let mut enc = MessageEncoder::new(64 << 20);
            let mut out: Vec<Result<WireMessage, Status>> = vec![Ok(enc.schema(&b.schema()))];
            out.extend(enc.batch(&b).unwrap().into_iter().map(Ok));
            out.push(Err(Status::data_loss("disk gone after the first batch")));
            Ok(Box::pin(futures::stream::iter(out)))
        }
    }

    #[tokio::test]
    async fn refusals_and_failures_reach_the_client_as_their_status() {
        let m = MemoryFlight::new(vec![batch(1, 0)], 1 << 20);
        let mut c = serve(DoGetRoute::new(flight(&m), Arc::new(FailsAfterOne))).await;
        // Refused before any message: the call itself fails with the status.
        let e = c.do_get(Ticket::new("t")).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::PermissionDenied, "no key")
        );
        // Failing mid-stream: the batch arrives, then the status.
        let mut r = Request::new(Ticket::new("t"));
        r.metadata_mut().insert("x-key", "1".parse().unwrap());
        let mut s = c.do_get(r).await.unwrap().into_inner();
        let mut messages = 0;
        let e = loop {
            match s.message().await {
                Ok(Some(_)) => messages += 1,
                Ok(None) => panic!("stream ended without its error"),
                Err(e) => break e,
            }
        };
        assert_eq!(messages, 2, "schema and batch before the error");
        assert_eq!(e.code(), tonic::Code::DataLoss);
        assert_eq!(e.message(), "disk gone after the first batch");
    }

    fn request(bytes: &[u8]) -> Body {
        Body::new(http_body_util::Full::new(Bytes::copy_from_slice(bytes)))
    }

    #[tokio::test]
    async fn the_request_must_be_one_uncompressed_ticket() {
        let t = Ticket::new("ecgfed-slice:abc").encode_to_vec();
        let framed = |flag: u8, n: usize, m: &[u8]| {
            let mut v = vec![flag];
            v.extend((n as u32).to_be_bytes());
            v.extend(m);
            v
        };
        let ok = read_ticket(request(&framed(0, t.len(), &t))).await.unwrap();
        assert_eq!(&ok.ticket[..], b"ecgfed-slice:abc");
        for (bytes, code, says) in [
            (
                framed(1, t.len(), &t),
                tonic::Code::Unimplemented,
                "compressed",
            ),
            (
                framed(0, t.len() + 1, &t),
                tonic::Code::InvalidArgument,
                "not one message",
            ),
            (
                vec![0, 0],
                tonic::Code::InvalidArgument,
                "without a message",
            ),
            (
                framed(0, 3, &[0x0a, 0x05, 0x61]),
                tonic::Code::InvalidArgument,
                "DoGet request",
            ),
            (
                vec![0; MAX_TICKET_REQUEST + 1],
                tonic::Code::InvalidArgument,
                "over 65536 bytes",
            ),
        ] {
            let e = read_ticket(request(&bytes)).await.unwrap_err();
            assert_eq!(e.code(), code, "{}", e.message());
            assert!(e.message().contains(says), "{}", e.message());
        }
    }
}
