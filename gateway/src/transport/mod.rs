//! The zero-copy Arrow Flight transport (docs/flight.md "Message layout"): [`wire`] lays record
//! batches out as gRPC messages whose Arrow bodies are sent where they lie and received
//! 64-byte aligned, [`route`] serves and pulls DoGet with them. Generic over what is served:
//! the limits come as parameters ([`Limits`]), and nothing here knows of ECG or of gateways.

pub mod route;
pub mod wire;

/// Message limits of a Flight service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request message decoded (requests are decoded before authentication).
    pub max_request: usize,
    /// Largest message sent.
    pub max_message: usize,
}

/// HTTP/2 stream window (per call).
pub const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 connection window.
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// Largest HTTP/2 frame each side accepts (SETTINGS_MAX_FRAME_SIZE). The protocol's default,
/// 16 KiB, cuts a 7.5 MB batch into about 460 DATA frames; at 1 MiB a plain Flight pull of
/// MIT-BIH needs half the CPU time (bench/README.md, "Gateway").
pub const MAX_FRAME: u32 = 1 << 20;

/// The transport settings of a server that streams ECG batches: TCP_NODELAY, the HTTP/2
/// windows and frame size above. Used by the gateway and by the bench's plain Flight baseline,
/// so that both pulls ride the same transport.
pub fn http2_server<L>(builder: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
    builder
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

/// The client side of [`http2_server`]: the same settings on an endpoint.
pub fn http2_endpoint(ep: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    ep.tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}
