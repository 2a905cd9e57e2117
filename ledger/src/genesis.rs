//! The genesis file (TOML) listing the founding members, and its entry.
//!
//! ```toml
//! origin = "ecgfed.example/ledger"   # checkpoint origin line
//! max_clock_skew_ms = 300000         # optional, default 5 minutes
//! witnesses = ["hospital-a", "hospital-b", "hospital-c"]   # optional: cosigners of checkpoints
//! witness_quorum = 2                  # cosignatures a checkpoint needs (> half the witnesses)
//!
//! [[members]]
//! id = "ledger"
//! role = "ledger"                     # hospital | scientist | regulator | ledger
//! public_key = "<96 hex chars>"
//! proof_of_possession = "<192 hex chars>"
//!
//! [[members]]
//! id = "hospital-a"
//! role = "hospital"
//! site = "site-a"                     # hospitals only
//! public_key = "..."
//! proof_of_possession = "..."
//! ```

use std::path::Path;

use ecgfed_proto::v1::{EntryBody, Genesis, Member, Role, entry_body::Payload};
use serde::{Deserialize, Serialize};

use crate::entry;
use crate::keys::KeyPair;

/// A founding member as written in the genesis file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisMember {
    /// Member id.
    pub id: String,
    /// `hospital`, `scientist`, `regulator` or `ledger`.
    pub role: String,
    /// The hospital's site.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub site: String,
    /// Hex of the 48-byte public key.
    pub public_key: String,
    /// Hex of the 96-byte proof of possession.
    pub proof_of_possession: String,
}

/// The genesis file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// The log's name (checkpoint origin).
    pub origin: String,
    /// Accepted clock skew, ms (0 or absent: 5 minutes).
    #[serde(default)]
    pub max_clock_skew_ms: u64,
    /// Member ids of the witnesses that cosign checkpoints, in signer-bitmap order (empty: an
    /// unwitnessed ledger).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<String>,
    /// Cosignatures a checkpoint needs (more than half of `witnesses`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub witness_quorum: u32,
    /// Founding members.
    pub members: Vec<GenesisMember>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The default quorum of `n` witnesses: a strict majority.
pub fn majority(n: usize) -> u32 {
    (n / 2 + 1) as u32
}

/// Parses a role name.
pub fn parse_role(s: &str) -> Option<Role> {
    match s {
        "hospital" => Some(Role::Hospital),
        "scientist" => Some(Role::Scientist),
        "regulator" => Some(Role::Regulator),
        "ledger" => Some(Role::Ledger),
        _ => None,
    }
}

impl GenesisMember {
    /// The member record for `key` (its proof of possession computed here).
    pub fn for_key(id: &str, role: &str, site: &str, key: &KeyPair) -> GenesisMember {
        GenesisMember {
            id: id.into(),
            role: role.into(),
            site: site.into(),
            public_key: key.public().to_hex(),
            proof_of_possession: hex::encode(key.prove_possession().to_bytes()),
        }
    }

    /// The protobuf member; errors name the member and field.
    pub fn to_proto(&self) -> Result<Member, GenesisError> {
        let role = parse_role(&self.role).ok_or_else(|| GenesisError::Role {
            member: self.id.clone(),
            role: self.role.clone(),
        })?;
        let hexf = |field: &'static str, v: &str| {
            hex::decode(v).map_err(|source| GenesisError::Hex {
                member: self.id.clone(),
                field,
                source,
            })
        };
        Ok(Member {
            id: self.id.clone(),
            role: role as i32,
            public_key: hexf("public_key", &self.public_key)?,
            proof_of_possession: hexf("proof_of_possession", &self.proof_of_possession)?,
            site: self.site.clone(),
        })
    }
}

impl GenesisFile {
    /// Reads and parses a genesis file.
    pub fn read(path: &Path) -> Result<GenesisFile, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| GenesisError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The genesis entry body, signed by the ledger member `ledger_id`.
    pub fn body(&self) -> Result<EntryBody, GenesisError> {
        let members = self
            .members
            .iter()
            .map(GenesisMember::to_proto)
            .collect::<Result<Vec<_>, _>>()?;
        let ledger = self
            .members
            .iter()
            .find(|m| m.role == "ledger")
            .ok_or(GenesisError::NoLedgerMember)?;
        let payload = Payload::Genesis(Genesis {
            origin: self.origin.clone(),
            members,
            max_clock_skew_ms: self.max_clock_skew_ms,
            witnesses: self.witnesses.clone(),
            witness_quorum: self.witness_quorum,
        });
        Ok(EntryBody {
            signer: ledger.id.clone(),
            nonce: 0,
            timestamp_ms: entry::now_ms(),
            subjects: entry::derived_subjects(&ledger.id, &payload),
            payload: Some(payload),
        })
    }
}

/// Why a genesis file cannot be used; each names the file or member.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a genesis file.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// The TOML error.
        #[source]
        source: toml::de::Error,
    },
    /// A member's role is not one of the four.
    #[error("member {member}: role {role:?} is not one of hospital, scientist, regulator, ledger")]
    Role {
        /// The member id.
        member: String,
        /// The role given.
        role: String,
    },
    /// A member's key or proof of possession is not hex.
    #[error("member {member}: {field}: {source}")]
    Hex {
        /// The member id.
        member: String,
        /// The field.
        field: &'static str,
        /// The decoding error.
        #[source]
        source: hex::FromHexError,
    },
    /// No member has role `ledger`.
    #[error("the genesis file has no member with role \"ledger\"")]
    NoLedgerMember,
}
