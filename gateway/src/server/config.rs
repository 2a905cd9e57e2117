//! Gateway configuration (TOML, docs/flight.md "Configuration").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::GatewayError;

/// `gateway.toml`. Relative paths are taken from the folder of the file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Site name: must be the site of the hospital member whose key this gateway holds.
    pub site: String,
    /// Member id of that hospital on the ledger.
    pub member: String,
    /// The hospital's BLS key file (0600).
    pub key_file: PathBuf,
    /// The site store (datasets ingest output) served by this gateway.
    pub store: PathBuf,
    /// The gateway's own folder: its RocksDB key store (salts, slices, request nonces).
    pub data: PathBuf,
    /// Dataset id on the ledger (default `<site>/<store folder name>`).
    #[serde(default)]
    pub dataset_id: Option<String>,
    /// Listen address (default 127.0.0.1:7500).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The ledger this gateway records to.
    pub ledger: LedgerConfig,
    /// Minimum distinct patients per finest strata cell (label × sex × age band × source).
    #[serde(default = "default_k")]
    pub k: u64,
    /// Lower edges of the age bands after the first (fixed per gateway: callers cannot choose
    /// bands, which would let them difference two tables).
    #[serde(default = "default_age_edges")]
    pub age_edges: Vec<u8>,
    /// Request policy.
    #[serde(default)]
    pub policy: Policy,
    /// TLS on the gateway's port (rustls). Absent: plain HTTP/2, for loopback or a private
    /// network only.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// TLS key material of a gateway (PEM files).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM); must be mode 0600 (refused when its group or others may read it).
    pub key: PathBuf,
    /// Certificate authority (PEM) with which the hospital's own tools (`ecgfed gateway
    /// erase`) check the running gateway's certificate; default: `cert` itself, which works
    /// for a self-signed certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Name the certificate is issued for, used by those tools instead of the host of the
    /// gateway's address (default: that host).
    #[serde(default)]
    pub domain: Option<String>,
}

/// Where the ledger is and what to trust of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Ledger service address (`host:port`).
    pub address: String,
    /// Trust file of the ledger (origin, key, a checkpoint), as `ecgfed ledger init` writes it.
    pub trust: PathBuf,
}

/// Request policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Largest accepted difference between a request's timestamp and the gateway's clock, ms.
    #[serde(default = "default_skew")]
    pub max_request_age_ms: u64,
    /// Most rows one slice may hold.
    #[serde(default = "default_max_rows")]
    pub max_slice_rows: u64,
    /// Rows per Arrow record batch on DoGet.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Memory for served slices kept ready for repeated pulls (MB; 0 = none). A slice larger
    /// than this is read from the store on every DoGet.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Most DoGets reading and sending at once; further ones wait their turn. With the cache
    /// budget it bounds the gateway's memory whatever the number of clients.
    #[serde(default = "default_max_transfers")]
    pub max_transfers: usize,
    /// Per scientist: most slices reserved at this gateway within `quota_period_days`
    /// (0: no limit).
    #[serde(default = "default_quota_cohorts")]
    pub quota_cohorts: u64,
    /// Per scientist: most rows reserved at this gateway within `quota_period_days`
    /// (0: no limit).
    #[serde(default = "default_quota_rows")]
    pub quota_rows: u64,
    /// The quota window, days.
    #[serde(default = "default_quota_days")]
    pub quota_period_days: u64,
    /// Reserve a slice only for a cohort this hospital approved (`ecgfed gateway approve`,
    /// a `CohortApproved` entry on the ledger).
    #[serde(default)]
    pub require_approval: bool,
    /// What a served row carries as `record_id` (and inside `segment_id`): `pseudonymous`
    /// (default: a keyed hash, per cohort) or `original`, for public research databases whose
    /// record names identify no one (docs/flight.md "Served columns").
    #[serde(default)]
    pub record_ids: RecordIds,
    /// Whether a patient's and a record's pseudonyms are the same in every cohort this gateway
    /// serves (default false: per cohort, so that two cohorts cannot be linked).
    #[serde(default)]
    pub link_cohorts: bool,
    /// How ages leave: `top-coded` (default: exact up to 89, 90 for 90 and over, as HIPAA's
    /// Safe Harbor asks) or `banded` (the lower edge of the gateway's age band, top-coded too).
    #[serde(default)]
    pub ages: AgePolicy,
    /// Serve cohorts in pull mode: slices whose rows a scientist pulls (default true). With
    /// false, reservations of pull cohorts and every DoGet are refused.
    #[serde(default = "yes")]
    pub allow_pull: bool,
    /// Serve cohorts in federated mode: rounds trained here, only masked updates leave
    /// (default true). With false, reservations of federated cohorts and every round are
    /// refused.
    #[serde(default = "yes")]
    pub allow_federated: bool,
    /// Federated rounds train here only with differential privacy of at least this noise
    /// multiplier σ (the spec's `[federated.dp]`); 0 (default): DP is the spec's choice.
    #[serde(default)]
    pub min_noise_multiplier: f64,
    /// This site's privacy budget per cohort: a federated round trains here only with
    /// differential privacy and only while the site's ε over every round it trained for the
    /// cohort, this one included, stays at most this (at `epsilon_delta`); 0 (default): no
    /// budget.
    #[serde(default)]
    pub max_epsilon: f64,
    /// The δ at which the budget's ε is computed (default 1e-5): the hospital's, not the
    /// spec's, so that a spec cannot buy a smaller ε with a larger δ.
    #[serde(default = "default_epsilon_delta")]
    pub epsilon_delta: f64,
}

fn default_epsilon_delta() -> f64 {
    1e-5
}

fn yes() -> bool {
    true
}

/// What a served row carries as its record id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordIds {
    /// A keyed hash of the record id (32 lowercase hex digits).
    #[default]
    Pseudonymous,
    /// The record id as stored.
    Original,
}

/// How a served row carries the patient's age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgePolicy {
    /// Exact age up to 89; 90 for every age of 90 and over.
    #[default]
    TopCoded,
    /// The lower edge of the age band (`age_edges`), then top-coded.
    Banded,
}

/// Ages of 90 and over all leave as this one value (HIPAA Safe Harbor).
pub const AGE_TOP_CODE: u8 = 90;

impl AgePolicy {
    /// The age a row carries when it leaves, for `edges` (the gateway's `age_edges`).
    pub fn served(self, age: Option<u8>, edges: &[u8]) -> Option<u8> {
        let a = age?;
        let a = match self {
            AgePolicy::TopCoded => a,
            AgePolicy::Banded => edges.iter().copied().filter(|&e| e <= a).max().unwrap_or(0),
        };
        Some(a.min(AGE_TOP_CODE))
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_request_age_ms: default_skew(),
            max_slice_rows: default_max_rows(),
            batch_rows: default_batch_rows(),
            cache_mb: default_cache_mb(),
            max_transfers: default_max_transfers(),
            quota_cohorts: default_quota_cohorts(),
            quota_rows: default_quota_rows(),
            quota_period_days: default_quota_days(),
            require_approval: false,
            record_ids: RecordIds::default(),
            link_cohorts: false,
            ages: AgePolicy::default(),
            allow_pull: true,
            allow_federated: true,
            min_noise_multiplier: 0.0,
            max_epsilon: 0.0,
            epsilon_delta: default_epsilon_delta(),
        }
    }
}

fn default_quota_cohorts() -> u64 {
    100
}
fn default_quota_rows() -> u64 {
    2_000_000
}
fn default_quota_days() -> u64 {
    30
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7500))
}
fn default_k() -> u64 {
    10
}
fn default_age_edges() -> Vec<u8> {
    vec![20, 40, 60, 80]
}
fn default_skew() -> u64 {
    60_000
}
fn default_max_rows() -> u64 {
    MAX_SLICE_ROWS
}

/// Largest slice a gateway may commit: its `CohortSliceCommitted` entry lists every row's
/// 32-byte commitment and must fit the ledger's 4 MiB entry body.
pub const MAX_SLICE_ROWS: u64 = 100_000;
fn default_batch_rows() -> usize {
    256
}
fn default_cache_mb() -> u64 {
    1024
}
fn default_max_transfers() -> usize {
    4
}

impl GatewayConfig {
    /// Reads and checks a configuration file; relative paths become relative to its folder.
    pub fn read(path: &Path) -> Result<GatewayConfig, GatewayError> {
        let bad = |m: String| GatewayError::Config(format!("{}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|source| GatewayError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c: GatewayConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut paths = vec![
            &mut c.key_file,
            &mut c.store,
            &mut c.data,
            &mut c.ledger.trust,
        ];
        if let Some(t) = c.tls.as_mut() {
            paths.push(&mut t.cert);
            paths.push(&mut t.key);
            if let Some(ca) = t.ca.as_mut() {
                paths.push(ca);
            }
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        c.check().map_err(|e| match e {
            GatewayError::Config(m) => bad(m),
            other => other,
        })?;
        Ok(c)
    }

    /// Checks values: site and member set, k ≥ 2, age edges strictly increasing and above 0,
    /// positive batch size.
    pub fn check(&self) -> Result<(), GatewayError> {
        let bad = |m: String| Err(GatewayError::Config(m));
        if self.site.is_empty() || self.member.is_empty() {
            return bad("site and member must be set".into());
        }
        if self.k < 2 {
            return bad(format!("k = {} is too small (at least 2)", self.k));
        }
        if self.age_edges.first() == Some(&0) || self.age_edges.windows(2).any(|w| w[0] >= w[1]) {
            return bad("age_edges must be strictly increasing and above 0".into());
        }
        if self.policy.batch_rows == 0
            || self.policy.max_slice_rows == 0
            || self.policy.max_transfers == 0
        {
            return bad(
                "policy.batch_rows, policy.max_slice_rows and policy.max_transfers must be positive"
                    .into(),
            );
        }
        let p = &self.policy;
        let non_negative = |v: f64| v >= 0.0 && v.is_finite();
        if !(non_negative(p.min_noise_multiplier)
            && non_negative(p.max_epsilon)
            && p.epsilon_delta > 0.0
            && p.epsilon_delta < 1.0)
        {
            return bad(format!(
                "policy.min_noise_multiplier {} and policy.max_epsilon {} must be ≥ 0, policy.epsilon_delta {} within (0, 1)",
                p.min_noise_multiplier, p.max_epsilon, p.epsilon_delta
            ));
        }
        if self.policy.max_slice_rows > MAX_SLICE_ROWS {
            return bad(format!(
                "policy.max_slice_rows = {} is above {MAX_SLICE_ROWS} (a slice entry lists every row commitment and must fit the ledger's 4 MiB entry limit)",
                self.policy.max_slice_rows
            ));
        }
        Ok(())
    }

    /// The dataset id: configured, or `<site>/<store folder name>`.
    pub fn dataset_id(&self) -> String {
        self.dataset_id.clone().unwrap_or_else(|| {
            let name = self
                .store
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "store".into());
            format!("{}/{name}", self.site)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_defaults_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.toml");
        std::fs::write(
            &p,
            "site = \"a\"\nmember = \"hosp-a\"\nkey_file = \"a.key\"\nstore = \"store-a\"\ndata = \"gw\"\n[ledger]\naddress = \"127.0.0.1:7400\"\ntrust = \"trust.json\"\n",
        )
        .unwrap();
        let c = GatewayConfig::read(&p).unwrap();
        assert_eq!(c.k, 10);
        assert_eq!(c.age_edges, vec![20, 40, 60, 80]);
        assert_eq!(c.key_file, dir.path().join("a.key"));
        assert_eq!(c.dataset_id(), "a/store-a");
        assert_eq!(c.policy.max_request_age_ms, 60_000);
        std::fs::write(&p, "site = \"a\"\nbogus = 1\n").unwrap();
        let e = GatewayConfig::read(&p).unwrap_err().to_string();
        assert!(e.contains("gw.toml") && e.contains("bogus"), "{e}");
        assert_eq!(
            (c.policy.record_ids, c.policy.link_cohorts, c.policy.ages),
            (RecordIds::Pseudonymous, false, AgePolicy::TopCoded)
        );
    }

    #[test]
    fn ages_above_89_leave_as_90_and_bands_as_their_lower_edge() {
        let edges = [20, 40, 60, 80];
        let t = AgePolicy::TopCoded;
        assert_eq!(t.served(Some(89), &edges), Some(89));
        assert_eq!(t.served(Some(90), &edges), Some(90));
        assert_eq!(t.served(Some(104), &edges), Some(90));
        assert_eq!(t.served(None, &edges), None);
        let b = AgePolicy::Banded;
        assert_eq!(b.served(Some(19), &edges), Some(0));
        assert_eq!(b.served(Some(40), &edges), Some(40));
        assert_eq!(b.served(Some(59), &edges), Some(40));
        assert_eq!(b.served(Some(97), &edges), Some(80));
        assert_eq!(
            b.served(Some(97), &[95]),
            Some(90),
            "top-coded after banding"
        );
    }
}
