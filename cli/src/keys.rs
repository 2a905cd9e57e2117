//! `ecgfed keys ...` subcommands.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use ecgfed_ledger::keys::KeyPair;

/// Key subcommands.
#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate a BLS12-381 member key pair into a new file (permissions 0600).
    Generate {
        /// Key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Print JSON (`public_key`, `proof_of_possession`, `file`).
        #[arg(long)]
        json: bool,
    },
    /// Show the public key and proof of possession of a key file.
    Show {
        /// Key file.
        key: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a keys subcommand.
pub(crate) fn run(cmd: KeysCommand) -> Result<()> {
    let (kp, file, json) = match cmd {
        KeysCommand::Generate { out, json } => {
            let kp = KeyPair::generate();
            kp.write_file(&out)?;
            (kp, out, json)
        }
        KeysCommand::Show { key, json } => (KeyPair::read_file(&key)?, key, json),
    };
    let pk = kp.public().to_hex();
    let pop = hex::encode(kp.prove_possession().to_bytes());
    if json {
        let v = serde_json::json!({"file": file.display().to_string(), "public_key": pk, "proof_of_possession": pop});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("key file:            {} (0600)", file.display());
        println!("public key:          {pk}");
        println!("proof of possession: {pop}");
    }
    Ok(())
}
