//! Who changed what: every admin action goes to this instance's local audit log
//! (JSON lines, always) and to the cluster's central stream (`stock::control`, when
//! the store answers).

use crate::app::App;
use crate::request::Incoming;
use seckill_common::now_ms;
use serde_json::json;
use std::io::Write;

/// An audit entry that can move to the control thread.
pub(crate) struct OwnedAudit {
    ts_ms: i64,
    actor: String,
    peer: String,
    instance: String,
    action: String,
    detail: String,
}

impl OwnedAudit {
    pub(crate) fn as_entry(&self) -> stock::control::AuditEntry<'_> {
        stock::control::AuditEntry {
            ts_ms: self.ts_ms,
            actor: &self.actor,
            peer: &self.peer,
            instance: &self.instance,
            action: &self.action,
            detail: &self.detail,
        }
    }
}

impl App {
    /// This cluster's name and the audit entry of `action` by the caller of `req`.
    pub(crate) fn audit_entry(
        &self,
        req: &Incoming,
        action: &str,
        detail: &serde_json::Value,
    ) -> (String, OwnedAudit) {
        (
            self.cfg.cluster.clone(),
            OwnedAudit {
                ts_ms: now_ms(),
                actor: self.actor(req).to_string(),
                peer: req.peer.map(|p| p.to_string()).unwrap_or_default(),
                instance: self.cfg.listen.clone(),
                action: action.to_string(),
                detail: Self::with_claim(req, detail.clone()).to_string(),
            },
        )
    }

    /// Who `req` is by: the operator its bearer token proves, the payment provider for a
    /// signed callback, else `unknown`. Never a header's say-so.
    fn actor<'r>(&'r self, req: &Incoming) -> &'r str {
        match self.operator(req) {
            Some(name) => name,
            None if req.signature.is_some() => "payment-provider",
            None => "unknown",
        }
    }

    /// `detail` with what the client claims about itself (`X-Actor`, the CLI's
    /// `user@host`), kept apart from the actor.
    fn with_claim(req: &Incoming, mut detail: serde_json::Value) -> serde_json::Value {
        if let (Some(claim), Some(obj)) = (req.actor, detail.as_object_mut()) {
            obj.insert("claimed_actor".into(), json!(claim));
        }
        detail
    }

    /// Audit an admin action: the local file always, the central stream when reachable.
    pub(crate) fn audit(&self, req: &Incoming, action: &str, detail: serde_json::Value) {
        let (cluster, entry) = self.audit_entry(req, action, &detail);
        if let Err(e) = self.control(move |c| stock::control::audit(c, &cluster, &entry.as_entry()))
        {
            tracing::warn!(error = %e, action, "audit entry not written to the central stream (kept in the local audit log)");
        }
        self.audit_file(req, action, detail);
    }

    pub(crate) fn audit_file(&self, req: &Incoming, action: &str, detail: serde_json::Value) {
        let detail = Self::with_claim(req, detail);
        let line = json!({"ts_ms": now_ms(), "actor": self.actor(req), "peer": req.peer.map(|p| p.to_string()), "action": action, "detail": detail});
        tracing::info!(target: "audit", %line);
        if let Some(f) = self
            .audit_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
                tracing::error!(error = %e, "audit log write failed");
            }
        }
    }
}
