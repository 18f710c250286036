//! The client-certificate signer of a TLS test cluster, standing in for
//! kube-controller-manager's: it signs every approved
//! `certificates.k8s.io/v1` CertificateSigningRequest addressed to
//! `kubernetes.io/kube-apiserver-client` with the cluster's CA, and from then
//! on the certificate authenticates its subject (CN = user, O = groups).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::meta;
use crate::pki::Pki;
use crate::store::Store;

/// The only signer served; requests for any other are left pending, as a
/// cluster without that signer would.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// Validity when a request sets no `expirationSeconds` (kube-controller-manager's
/// default `--cluster-signing-duration`).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Signs pending approved requests after every change to the store, until `shutdown`.
pub async fn run(store: Arc<Store>, pki: Arc<Pki>, mut shutdown: watch::Receiver<bool>) {
    let Some(csr_type) =
        store
            .lock()
            .registry()
            .find("certificates.k8s.io", "v1", "certificatesigningrequests")
    else {
        return;
    };
    let mut changes = store.subscribe();
    loop {
        store.transact(|state| {
            let pending: Vec<Value> = state
                .list(csr_type, None)
                .filter(|csr| awaits_signature(csr))
                .cloned()
                .collect();
            for mut csr in pending {
                match sign(&pki, &csr) {
                    Ok(certificate) => csr["status"]["certificate"] = json!(certificate),
                    Err(message) => {
                        tracing::debug!(csr = meta::name(&csr), %message, "signing refused");
                        add_condition(&mut csr, "Failed", "SignerValidationFailure", &message);
                    }
                }
                state.commit(csr_type, csr);
            }
        });
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

fn has_condition(csr: &Value, wanted: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(wanted)
                    && c.get("status").and_then(Value::as_str) != Some("False")
            })
        })
}

fn awaits_signature(csr: &Value) -> bool {
    csr.pointer("/spec/signerName").and_then(Value::as_str) == Some(CLIENT_SIGNER)
        && has_condition(csr, "Approved")
        && !has_condition(csr, "Denied")
        && !has_condition(csr, "Failed")
        && csr.pointer("/status/certificate").is_none()
        && !meta::is_deleting(csr)
}

/// The base64 PEM certificate for a request, or why it cannot be signed.
fn sign(pki: &Pki, csr: &Value) -> Result<String, String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let request = csr
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .ok_or("spec.request is missing")?;
    let pem = engine
        .decode(request)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or("spec.request is not base64 of a PEM request")?;
    let lifetime = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    let (certificate, user) = pki
        .sign_request(&pem, lifetime)
        .map_err(|e| e.to_string())?;
    tracing::debug!(csr = meta::name(csr), user = %user.name, ?lifetime, "signed a client certificate");
    Ok(engine.encode(certificate))
}

fn add_condition(csr: &mut Value, type_: &str, reason: &str, message: &str) {
    let condition = json!({
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": meta::now(),
        "lastTransitionTime": meta::now(),
    });
    match csr
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        Some(conditions) => conditions.push(condition),
        None => csr["status"]["conditions"] = json!([condition]),
    }
}
