//! DoGet with messages laid out for the wire, both ways (docs/flight.md "Message layout").
//!
//! Serving: tonic encodes each response message into a send buffer of its own: for a record
//! batch that is a copy of every Arrow byte, after the copy arrow-flight's encoder makes into
//! the IPC body. [`DoGetRoute`] wraps a Flight service and answers `DoGet` itself: it reads the
//! `Ticket` request, asks a [`WireDoGet`] for the stream of [`WireMessage`]s, and hands their
//! pieces to HTTP/2 as they are, large Arrow buffers included, then the gRPC status as
//! trailers. Every other Flight method goes to the wrapped service. On the wire the answer is
//! the gRPC DoGet response any Flight client reads.
//!
//! Receiving: [`do_get`] sends a DoGet call on a channel and assembles each response message
//! into a 64-byte aligned buffer of its own, gRPC prefix first, so that the bodies the gateway
//! aligns (wire's `app_metadata` padding) are aligned in memory and decoded in place. tonic's
//! receive path copies the messages too, into one buffer shared by consecutive messages, where
//! bodies land aligned only by chance.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

#[cfg(any(test, feature = "bench-kit"))]
use arrow::array::RecordBatch;
use arrow::buffer::MutableBuffer;
#[cfg(any(test, feature = "bench-kit"))]
use arrow_flight::encode::FlightDataEncoderBuilder;
#[cfg(any(test, feature = "bench-kit"))]
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

use super::Limits;

#[cfg(any(test, feature = "bench-kit"))]
use crate::transport::wire::MessageEncoder;
use crate::transport::wire::{GRPC_PREFIX, WireMessage};

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

/// A Flight service of this crate: DoGet as [`WireDoGet`] messages, GetFlightInfo when it
/// offers it, every other method refused with the service's own reason. [`Flight`] makes it a
/// tonic `FlightService`; [`DoGetRoute`] serves it with DoGet sent from the messages as they are.
#[tonic::async_trait]
pub trait FlightCalls: WireDoGet {
    /// GetFlightInfo (refused unless the service offers it).
    async fn flight_info(&self, _r: Request<FlightDescriptor>) -> Result<FlightInfo, Status> {
        Err(self.refused("GetFlightInfo"))
    }

    /// DoGet through tonic's encoder: by default the messages of
    /// [`WireDoGet::do_get_wire`], each re-read as `FlightData` (one copy).
    async fn do_get_flight(&self, r: Request<Ticket>) -> Result<BoxStream<FlightData>, Status> {
        let messages = self.do_get_wire(r).await?;
        Ok(Box::pin(messages.map(|m| {
            m.and_then(|m| {
                m.to_flight_data()
                    .map_err(|e| Status::internal(format!("re-reading a message: {e}")))
            })
        })))
    }

    /// The status refusing the Flight method named `method` (as in its gRPC path, e.g.
    /// `Handshake`).
    fn refused(&self, method: &str) -> Status;
}

/// The tonic `FlightService` of a [`FlightCalls`].
pub struct Flight<T>(pub Arc<T>);

/// `calls` as a tonic Flight service sending messages of at most `limits.max_message` bytes
/// and decoding requests of at most `limits.max_request` (they are decoded before
/// authentication).
pub fn flight_server<T: FlightCalls>(
    calls: Arc<T>,
    limits: Limits,
) -> FlightServiceServer<Flight<T>> {
    FlightServiceServer::new(Flight(calls))
        .max_decoding_message_size(limits.max_request)
        .max_encoding_message_size(limits.max_message)
}

/// A Flight service whose DoGet calls are answered from its [`WireDoGet`] messages (module
/// doc) and every other call by its tonic service ([`flight_server`]). tonic's settings do not
/// apply to DoGet: requests must be uncompressed, responses are sent uncompressed, and the
/// [`WireDoGet`] keeps its messages within the client's limit.
pub struct DoGetRoute<T> {
    flight: FlightServiceServer<Flight<T>>,
    wire: Arc<T>,
}

impl<T> Clone for DoGetRoute<T> {
    fn clone(&self) -> Self {
        DoGetRoute {
            flight: self.flight.clone(),
            wire: Arc::clone(&self.wire),
        }
    }
}

impl<T: FlightCalls> DoGetRoute<T> {
    /// Serves `calls` within `limits` (DoGet requests are held to [`MAX_TICKET_REQUEST`]).
    pub fn new(calls: Arc<T>, limits: Limits) -> Self {
        DoGetRoute {
            flight: flight_server(Arc::clone(&calls), limits),
            wire: calls,
        }
    }
}

impl<T> NamedService for DoGetRoute<T> {
    const NAME: &'static str = <FlightServiceServer<Flight<T>> as NamedService>::NAME;
}

impl<T: FlightCalls> tonic::codegen::Service<http::Request<Body>> for DoGetRoute<T> {
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
        Box::pin(async move { Ok(answer_do_get(wire.as_ref(), req).await) })
    }
}

/// One DoGet call: the request, then the response's messages and its status.
async fn answer_do_get(wire: &dyn WireDoGet, req: http::Request<Body>) -> http::Response<Body> {
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

/// The response messages of a DoGet call made with [`do_get`], as `FlightData` whose bodies
/// are slices of 64-byte aligned buffers (each buffer: the gRPC prefix, then the message).
pub struct Received {
    body: Body,
    /// Largest message accepted (protobuf bytes).
    max: usize,
    /// Prefix bytes of the next message seen so far.
    prefix: Vec<u8>,
    /// The message being assembled and its length with the prefix.
    message: Option<(MutableBuffer, usize)>,
    /// Data not yet assembled.
    data: Bytes,
    done: bool,
}

/// Sends DoGet `request` on `channel` (a tonic channel to a Flight server) and returns its
/// response messages; a refusal is the status of the call, a failure later in the stream the
/// status of its last item. Messages over `max_message` bytes are refused.
pub async fn do_get<C>(
    channel: &mut C,
    request: Request<Ticket>,
    max_message: usize,
) -> Result<Received, Status>
where
    C: tonic::codegen::Service<http::Request<Body>, Response = http::Response<Body>>,
    C::Error: Into<tonic::codegen::StdError>,
{
    let (metadata, _, ticket) = request.into_parts();
    let framed = crate::transport::wire::grpc_message(&ticket);
    let mut req = http::Request::new(Body::new(http_body_util::Full::new(framed)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static(DO_GET_PATH);
    let headers = req.headers_mut();
    headers.extend(metadata.into_headers());
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    // As tonic does: the status its error chain maps to (connection refused, timeout, HTTP/2
    // reset), with the call named.
    let failed = |e: C::Error| {
        let s = Status::from_error(e.into());
        Status::new(s.code(), format!("DoGet: {}", s.message()))
    };
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(failed)?;
    let res = channel.call(req).await.map_err(failed)?;
    let (parts, body) = res.into_parts();
    // A trailers-only answer carries its status in the headers.
    let status = Status::from_header_map(&parts.headers);
    if let Some(s) = status.as_ref().filter(|s| s.code() != tonic::Code::Ok) {
        return Err(s.clone());
    }
    if parts.status != http::StatusCode::OK {
        // gRPC's mapping of HTTP statuses answered without a grpc-status.
        use tonic::Code;
        let code = match parts.status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        };
        let m = format!("DoGet answered HTTP {}", parts.status);
        return Err(Status::new(code, m));
    }
    let mut r = Received::new(body, max_message);
    r.done = status.is_some();
    Ok(r)
}

impl Received {
    /// The messages of a response body.
    fn new(body: Body, max: usize) -> Self {
        Received {
            body,
            max,
            prefix: Vec::with_capacity(GRPC_PREFIX),
            message: None,
            data: Bytes::new(),
            done: false,
        }
    }

    /// Assembles from `self.data`: a complete message, if one is.
    fn assemble(&mut self) -> Result<Option<FlightData>, Status> {
        while !self.data.is_empty() {
            let Some((buf, len)) = self.message.as_mut() else {
                let n = (GRPC_PREFIX - self.prefix.len()).min(self.data.len());
                self.prefix.extend_from_slice(&self.data.split_to(n));
                if self.prefix.len() == GRPC_PREFIX {
                    let p = std::mem::take(&mut self.prefix);
                    if p[0] != 0 {
                        return Err(Status::internal(
                            "DoGet: compressed messages are not accepted",
                        ));
                    }
                    let n = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
                    if n > self.max {
                        return Err(Status::out_of_range(format!(
                            "DoGet: a message of {n} bytes is over the {}-byte limit",
                            self.max
                        )));
                    }
                    let mut buf = MutableBuffer::with_capacity(GRPC_PREFIX + n);
                    buf.extend_from_slice(&p);
                    self.message = Some((buf, GRPC_PREFIX + n));
                }
                continue;
            };
            let n = (*len - buf.len()).min(self.data.len());
            buf.extend_from_slice(&self.data.split_to(n));
            if buf.len() == *len
                && let Some(m) = self.finish()?
            {
                return Ok(Some(m));
            }
        }
        // A message without bytes after its prefix is complete with the prefix.
        self.finish()
    }

    /// The message assembled, when it is complete.
    fn finish(&mut self) -> Result<Option<FlightData>, Status> {
        match self.message.take() {
            Some((buf, len)) if buf.len() == len => {
                let bytes = Bytes::from_owner(crate::transport::wire::Lent(buf.into()))
                    .slice(GRPC_PREFIX..);
                FlightData::decode(bytes)
                    .map(Some)
                    .map_err(|e| Status::internal(format!("DoGet: a message does not decode: {e}")))
            }
            other => {
                self.message = other;
                Ok(None)
            }
        }
    }
}

impl Received {
    /// Ends the stream with `item`, dropping the response body so that an unfinished HTTP/2
    /// stream is reset at once rather than left to fill its window.
    fn end(
        &mut self,
        item: Option<Result<FlightData, Status>>,
    ) -> Poll<Option<Result<FlightData, Status>>> {
        self.done = true;
        self.body = Body::empty();
        Poll::Ready(item)
    }
}

impl Stream for Received {
    type Item = Result<FlightData, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.assemble() {
                Ok(Some(m)) => return Poll::Ready(Some(Ok(m))),
                Ok(None) => {}
                Err(e) => return this.end(Some(Err(e))),
            }
            let frame = match std::task::ready!(http_body::Body::poll_frame(
                Pin::new(&mut this.body),
                cx
            )) {
                Some(Ok(f)) => f,
                Some(Err(e)) => return this.end(Some(Err(e))),
                None => {
                    let e = Status::internal("DoGet: the stream ended without a status");
                    return this.end(Some(Err(e)));
                }
            };
            match frame.into_data() {
                Ok(d) => this.data = d,
                Err(frame) => {
                    let status = frame.trailers_ref().and_then(Status::from_header_map);
                    let partial = this.message.is_some() || !this.prefix.is_empty();
                    let item = match status {
                        Some(s) if s.code() != tonic::Code::Ok => Some(Err(s)),
                        Some(_) if partial => Some(Err(Status::internal(
                            "DoGet: the stream ended inside a message",
                        ))),
                        Some(_) => None,
                        None => Some(Err(Status::internal("DoGet: trailers without grpc-status"))),
                    };
                    return this.end(item);
                }
            }
        }
    }
}

/// A Flight service holding record batches in memory that streams them to anyone, with no
/// authentication and no verification: the plain reference the gateway bench measures
/// against (compiled with the `bench-kit` feature only). Through tonic ([`flight_server`]) its DoGet goes through arrow-flight's encoder;
/// behind a [`DoGetRoute`] it sends the same batches the way the gateway does.
#[cfg(any(test, feature = "bench-kit"))]
#[derive(Clone)]
pub struct MemoryFlight {
    batches: Arc<Vec<RecordBatch>>,
    max_body: usize,
}

#[cfg(any(test, feature = "bench-kit"))]
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

#[cfg(any(test, feature = "bench-kit"))]
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

#[cfg(any(test, feature = "bench-kit"))]
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

#[cfg(any(test, feature = "bench-kit"))]
#[tonic::async_trait]
impl FlightCalls for MemoryFlight {
    /// DoGet through arrow-flight's encoder and tonic: the bench's plain baseline.
    async fn do_get_flight(&self, _r: Request<Ticket>) -> Result<BoxStream<FlightData>, Status> {
        let (batches, schema) = self.served()?;
        let input = futures::stream::iter((0..batches.len()).map(move |i| Ok(batches[i].clone())));
        let s = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.max_body)
            .build(input)
            .map(|r| r.map_err(|e: FlightError| Status::internal(e.to_string())));
        Ok(Box::pin(s))
    }

    fn refused(&self, _method: &str) -> Status {
        Status::unimplemented("DoGet only")
    }
}

#[tonic::async_trait]
impl<T: FlightCalls> FlightService for Flight<T> {
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
        Err(self.0.refused("Handshake"))
    }
    async fn list_flights(
        &self,
        _r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(self.0.refused("ListFlights"))
    }
    async fn get_flight_info(
        &self,
        r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(self.0.flight_info(r).await?))
    }
    async fn poll_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(self.0.refused("PollFlightInfo"))
    }
    async fn get_schema(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(self.0.refused("GetSchema"))
    }
    async fn do_get(&self, r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        Ok(Response::new(self.0.do_get_flight(r).await?))
    }
    async fn do_put(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(self.0.refused("DoPut"))
    }
    async fn do_exchange(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(self.0.refused("DoExchange"))
    }
    async fn do_action(
        &self,
        _r: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(self.0.refused("DoAction"))
    }
    async fn list_actions(
        &self,
        _r: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(self.0.refused("ListActions"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::wire::tests::batch;

    /// Limits of the tests' services.
    const LIMITS: Limits = Limits {
        max_request: 1 << 20,
        max_message: 64 << 20,
    };
    use arrow_flight::decode::FlightRecordBatchStream;
    use arrow_flight::flight_service_client::FlightServiceClient;
    use futures::TryStreamExt;
    use tonic::transport::Channel;

    /// Serves `svc` on a loopback port; a channel to it.
    async fn serve<S>(svc: S) -> Channel
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
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn client(ch: &Channel) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(ch.clone()).max_decoding_message_size(64 << 20)
    }

    /// A pull through [`do_get`]: the batches, and whether every body was 64-byte aligned.
    async fn pull_aligned(
        ch: &Channel,
        r: Request<Ticket>,
    ) -> Result<(Vec<RecordBatch>, bool), Status> {
        let mut s = do_get(&mut ch.clone(), r, 64 << 20).await?;
        let mut d = crate::transport::wire::BatchDecoder::new();
        let (mut out, mut aligned) = (Vec::new(), true);
        while let Some(m) = s.next().await {
            let m = m?;
            aligned &= m.data_body.is_empty() || (m.data_body.as_ptr() as usize).is_multiple_of(64);
            out.extend(d.decode(&m).map_err(|e| Status::internal(e.to_string()))?);
        }
        Ok((out, aligned))
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

    #[tokio::test]
    async fn a_plain_flight_client_reads_the_route_as_it_reads_tonic() {
        // Batches whose float buffers are lent (over SHARED_FROM), split at 1 MiB, and small.
        let batches = vec![batch(200_000, 0), batch(3, 200_000), batch(90_000, 200_003)];
        let m = MemoryFlight::new(batches.clone(), 1 << 20);
        let m = Arc::new(m);
        let tonic_path = serve(flight_server(Arc::clone(&m), LIMITS)).await;
        let route = serve(DoGetRoute::new(m, LIMITS)).await;
        let want = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        for ch in [&tonic_path, &route] {
            let got = pull(&mut client(ch)).await.unwrap();
            assert!(got.len() > batches.len(), "split into messages of 1 MiB");
            let got = arrow::compute::concat_batches(&want.schema(), &got).unwrap();
            assert_eq!(got, want);
        }
        // Received by do_get: the same batches, every body in place on a 64-byte boundary.
        let (got, aligned) = pull_aligned(&route, Request::new(Ticket::new("t")))
            .await
            .unwrap();
        assert!(aligned);
        assert_eq!(
            arrow::compute::concat_batches(&want.schema(), &got).unwrap(),
            want
        );
        // From tonic's path too (arrow-flight's bodies, not aligned by padding).
        let (got, _) = pull_aligned(&tonic_path, Request::new(Ticket::new("t")))
            .await
            .unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&want.schema(), &got).unwrap(),
            want
        );
        // Other methods go to the wrapped service.
        let e = client(&route)
            .get_flight_info(FlightDescriptor::new_path(vec!["x".into()]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert_eq!(e.message(), "DoGet only");
    }

    /// Refuses calls without `x-key: 1`; otherwise sends the schema, one batch, then fails.
    struct FailsAfterOne;

    #[tonic::async_trait]
    impl FlightCalls for FailsAfterOne {
        fn refused(&self, _method: &str) -> Status {
            Status::unimplemented("DoGet only")
        }
    }

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
        let ch = serve(DoGetRoute::new(Arc::new(FailsAfterOne), LIMITS)).await;
        let mut c = client(&ch);
        // Refused before any message: the call itself fails with the status.
        let e = c.do_get(Ticket::new("t")).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::PermissionDenied, "no key")
        );
        let e = do_get(&mut ch.clone(), Request::new(Ticket::new("t")), 64 << 20)
            .await
            .err()
            .unwrap();
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::PermissionDenied, "no key")
        );
        let keyed = || {
            let mut r = Request::new(Ticket::new("t"));
            r.metadata_mut().insert("x-key", "1".parse().unwrap());
            r
        };
        // Through do_get: the batch arrives, then the status.
        let mut s = do_get(&mut ch.clone(), keyed(), 64 << 20).await.unwrap();
        assert!(s.next().await.unwrap().unwrap().data_body.is_empty());
        assert!(!s.next().await.unwrap().unwrap().data_body.is_empty());
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), tonic::Code::DataLoss);
        assert_eq!(e.message(), "disk gone after the first batch");
        assert!(s.next().await.is_none());
        // A message over the receiver's limit is refused, naming its size.
        let mut s = do_get(&mut ch.clone(), keyed(), 1000).await.unwrap();
        s.next().await.unwrap().unwrap();
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{}", e.message());
        assert!(
            e.message().contains("over the 1000-byte limit"),
            "{}",
            e.message()
        );
        // Failing mid-stream through tonic: the batch arrives, then the status.
        let mut s = c.do_get(keyed()).await.unwrap().into_inner();
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

    #[tokio::test]
    async fn messages_cut_anywhere_are_assembled_aligned() {
        let b = batch(20_000, 0);
        let mut enc = MessageEncoder::new(64 << 10);
        let mut msgs = vec![enc.schema(&b.schema())];
        msgs.extend(enc.batch(&b).unwrap());
        let want: Vec<FlightData> = msgs.iter().map(|m| m.to_flight_data().unwrap()).collect();
        assert!(want.len() > 3, "several batch messages");
        let wire: Vec<u8> = msgs
            .iter()
            .flat_map(|m| m.pieces().iter().flat_map(|p| p.iter()))
            .copied()
            .collect();
        let received = |frames: Vec<Frame<Bytes>>| {
            let frames = frames.into_iter().map(Ok::<_, Status>);
            Received::new(
                Body::new(http_body_util::StreamBody::new(futures::stream::iter(
                    frames,
                ))),
                64 << 20,
            )
        };
        let cut = |at: usize| -> Vec<Frame<Bytes>> {
            wire.chunks(at)
                .map(|c| Frame::data(Bytes::copy_from_slice(c)))
                .collect()
        };
        for at in [1, 3, 5, 64, 1000, 65_537, wire.len()] {
            let mut frames = cut(at);
            frames.push(Frame::trailers(trailers(None)));
            let got: Vec<FlightData> = received(frames).try_collect().await.unwrap();
            assert_eq!(got, want, "cut every {at} bytes");
            for m in got.iter().filter(|m| !m.data_body.is_empty()) {
                assert!(
                    (m.data_body.as_ptr() as usize).is_multiple_of(64),
                    "cut {at}"
                );
            }
        }
        // A stream that ends inside a message, or without a status, is an error.
        let mut frames = cut(1000);
        frames.truncate(frames.len() - 1);
        frames.push(Frame::trailers(trailers(None)));
        let e = received(frames).try_collect::<Vec<_>>().await.unwrap_err();
        assert!(e.message().contains("inside a message"), "{}", e.message());
        let e = received(cut(1000))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(e.message().contains("without a status"), "{}", e.message());
    }

    /// Answers every call with an HTTP status and no gRPC status, as a proxy might.
    struct HttpOnly(u16);

    impl tonic::codegen::Service<http::Request<Body>> for HttpOnly {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _r: http::Request<Body>) -> Self::Future {
            let mut res = http::Response::new(Body::empty());
            *res.status_mut() = http::StatusCode::from_u16(self.0).unwrap();
            std::future::ready(Ok(res))
        }
    }

    #[tokio::test]
    async fn transport_failures_map_to_grpc_codes() {
        for (http, code) in [
            (503, tonic::Code::Unavailable),
            (401, tonic::Code::Unauthenticated),
            (404, tonic::Code::Unimplemented),
            (500, tonic::Code::Unknown),
        ] {
            let e = do_get(&mut HttpOnly(http), Request::new(Ticket::new("t")), 1 << 20)
                .await
                .err()
                .unwrap();
            assert_eq!(e.code(), code, "HTTP {http}");
            assert!(e.message().contains(&http.to_string()), "{}", e.message());
        }
        // Nothing listening: Unavailable, naming the call, as tonic reports it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let mut ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let e = do_get(&mut ch, Request::new(Ticket::new("t")), 1 << 20)
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
        assert!(e.message().starts_with("DoGet: "), "{}", e.message());
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
