//! Fault-injection points for the crash tests: a test arms a point by name, and the gateway
//! stops there with an error the next time it reaches it, leaving its folders and the ledger
//! as a crash at that point would. Compiled with the `fault-injection` feature only; without
//! it every point is the constant `false` ([`crate::server::fault`]).

use std::sync::Mutex;

static ARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Arms the point `name` once.
pub fn arm(name: &str) {
    ARMED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(name.to_string());
}

/// True, once, when `name` is armed (disarming it).
pub fn hit(name: &str) -> bool {
    let mut a = ARMED.lock().unwrap_or_else(|p| p.into_inner());
    match a.iter().position(|n| n == name) {
        Some(i) => {
            a.swap_remove(i);
            true
        }
        None => false,
    }
}

/// The error a fault point returns.
pub fn crashed(name: &str) -> crate::GatewayError {
    crate::GatewayError::Config(format!("fault injected at {name}"))
}
