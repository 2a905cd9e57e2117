//! The hospital's gateway (`server` feature): [`config`], [`keystore`] (salts, slices, nonces,
//! erasures in RocksDB), [`catalog`] (the store as the gateway indexes it), [`strata`]
//! (k-anonymous counts), [`select`] (seeded slice selection), [`authenticate`] (signed requests,
//! members replayed from the ledger), [`gateway`] (registration, reservation, erasure),
//! [`rows`] (served rows), [`served`] (what leaves with a row: per-slice pseudonyms, salts,
//! leaves, top-coded ages), [`service`] (GatewayService), [`flight`] (Arrow Flight),
//! [`training`] (TrainingService: federated rounds, only masked updates and metrics leave) with
//! [`rounds`] (the attempts open), and here
//! one tonic server on one port for both, with HTTP/2 windows, frames and message limits sized
//! for ECG batches (tonic's 4 MiB default message limit is too small).

mod authenticate;
mod catalog;
mod config;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod flight;
mod gateway;
mod keystore;
mod rounds;
mod rows;
mod select;
mod served;
mod service;
mod strata;
mod training;

/// Stops with an error at the fault point `$name` when a test armed it (`fault-injection`
/// builds only; elsewhere it expands to nothing).
macro_rules! fault {
    ($name:literal) => {
        #[cfg(feature = "fault-injection")]
        if crate::server::faults::hit($name) {
            return Err(crate::server::faults::crashed($name));
        }
    };
}
pub(crate) use fault;

pub use config::{
    AGE_TOP_CODE, AgePolicy, GatewayConfig, LedgerConfig, MAX_SLICE_ROWS, Policy, RecordIds,
    TlsConfig,
};
pub use flight::FLIGHT_LIMITS;
#[cfg(feature = "fault-injection")]
pub use gateway::FAULT_ENV;
pub use gateway::{
    ERASURES_DIR, Erasure, Gateway, LEDGER_TRUST_FILE, Registration, ServePlan, ServedSlice,
    TEST_KIT, WITNESS_FILE,
};
pub use keystore::{KeyStore, patient_key};
pub use rows::{ErasedLeaf, SliceRecord};

use std::sync::Arc;

use crate::transport::http2_server;
use flight::GatewayFlight;
use service::GatewayServer;
use training::TrainingServer;

/// The server TLS configuration from PEM files. The private key file is refused unless it is
/// a regular file of mode 0600 (as the hospital's BLS key).
pub fn tls_config(
    tls: &crate::server::config::TlsConfig,
) -> Result<tonic::transport::ServerTlsConfig, crate::GatewayError> {
    ecgfed_ledger::keys::check_secret_file(&tls.key)?;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| crate::GatewayError::File {
            path: p.to_path_buf(),
            source,
        })
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
    let incoming = ecgfed_ledger::service::incoming(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &gw.cfg.tls {
        builder = builder
            .tls_config(tls_config(tls)?)
            .map_err(crate::GatewayError::Tls)?;
    }
    http2_server(builder)
        .add_service(
            ecgfed_ledger::witness::WitnessServer::new(Arc::clone(&gw.witness)).into_service(),
        )
        .add_service(GatewayServer::new(Arc::clone(&gw)).into_service())
        .add_service(TrainingServer::new(Arc::clone(&gw)).into_service())
        .add_service(GatewayFlight::new(gw).into_service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| crate::GatewayError::Transport {
            peer: "gateway".into(),
            source: e.into(),
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
        let tls = crate::server::config::TlsConfig {
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
