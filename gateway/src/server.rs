//! One tonic server, one port: GatewayService and Arrow Flight, with HTTP/2 windows, frames
//! and message limits sized for ECG batches (tonic's 4 MiB default message limit is too small).

use std::sync::Arc;

use crate::flight::GatewayFlight;
use crate::gateway::Gateway;
use crate::service::GatewayServer;

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

/// The server TLS configuration from PEM files. The private key file is refused unless it is
/// a regular file of mode 0600 (as the hospital's BLS key).
pub fn tls_config(
    tls: &crate::config::TlsConfig,
) -> Result<tonic::transport::ServerTlsConfig, crate::GatewayError> {
    ecgfed_ledger::keys::check_secret_file(&tls.key)?;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| crate::GatewayError::Config(format!("{}: {e}", p.display())))
    };
    let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

/// Serves `gw` on `listener` until `shutdown` resolves; running calls are allowed to finish.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), crate::GatewayError> {
    // The builder's tcp_nodelay only applies to sockets tonic accepts itself: set it on ours,
    // or small answers wait for delayed ACKs (about 40 ms each on Linux).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            if let Ok(s) = &s {
                let _ = s.set_nodelay(true);
            }
            s
        },
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &gw.cfg.tls {
        builder = builder
            .tls_config(tls_config(tls)?)
            .map_err(|e| crate::GatewayError::Config(format!("tls: {e}")))?;
    }
    http2_server(builder)
        .add_service(GatewayServer::new(Arc::clone(&gw)).into_service())
        .add_service(GatewayFlight::new(gw).into_service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| crate::GatewayError::Transport {
            peer: "gateway".into(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 23, item 10: a TLS private key that group or others may read is refused (as a BLS
    /// key is), naming the file; at 0600 it is accepted.
    #[test]
    fn a_tls_key_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, "not checked here").unwrap();
        std::fs::write(&key, "not checked here").unwrap();
        let tls = crate::config::TlsConfig {
            cert,
            key: key.clone(),
            ca: None,
            domain: None,
        };
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = match tls_config(&tls) {
                Ok(_) => panic!("a key of mode {mode:o} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains("key.pem") && e.contains("too open"),
                "{mode:o}: {e}"
            );
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(tls_config(&tls).is_ok());
    }
}
