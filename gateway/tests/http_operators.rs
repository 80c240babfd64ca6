//! Named operators: each has a token of their own (`admin_tokens_file`), and the audit
//! log and stream record the operator the token proves, never what a header claims.

mod harness;

use harness::{unique, Gateway, Options};

const ALICE: &str = "alice-token-0123456789abcdef0123456789";
const BOB: &str = "bob-token-0123456789abcdef0123456789abcd";

#[test]
fn the_audit_names_the_operator_whose_token_made_the_change() {
    let dir = std::env::temp_dir().join(unique("ops"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("operators");
    std::fs::write(
        &file,
        format!("# operators of this gateway\nalice {ALICE}\nbob {BOB}\n"),
    )
    .unwrap();
    let gw = Gateway::start_with(Options {
        env: vec![("SECKILL_ADMIN_TOKENS_FILE", file.display().to_string())],
        ..Default::default()
    });
    let sale = unique("opsale");
    let body = format!(
        r#"{{"sale":"{sale}","stock":3,"start_ms":0,"end_ms":{}}}"#,
        harness::now_ms() + 60_000
    );
    // Bob creates a sale, claiming to be someone else.
    let r = gw.internal().request_with(
        "POST",
        "/admin/sales",
        &[
            ("Authorization", &format!("Bearer {BOB}")),
            ("X-Actor", "mallory@laptop"),
        ],
        Some(&body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // Alice pauses it; the shared token (the operator `admin`) still works.
    let r = gw.internal().post(
        &format!("/admin/sales/{sale}/pause"),
        Some(&format!("Bearer {ALICE}")),
        Some(r#"{"paused":true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let audit = gw
        .internal()
        .get("/admin/audit", Some(&Gateway::admin_auth()));
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    let by = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["detail"].as_str().unwrap_or("").contains(&sale))
            .unwrap_or_else(|| panic!("no {action} entry: {entries:?}"))
            .clone()
    };
    let created = by("create_sale");
    assert_eq!(created["actor"], "bob", "{created}");
    assert!(
        created["detail"]
            .as_str()
            .unwrap()
            .contains("mallory@laptop"),
        "the claim is kept apart: {created}"
    );
    assert_eq!(by("pause_sale")["actor"], "alice");
    // The local audit log says the same.
    let local = std::fs::read_to_string(&gw.audit).unwrap();
    let line = local
        .lines()
        .find(|l| l.contains("create_sale") && l.contains(&sale))
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["actor"], "bob", "{line}");
    // A token nobody holds is refused.
    let r = gw.internal().get(
        "/admin/switches",
        Some("Bearer carol-token-0123456789abcdef0123456789"),
    );
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
}
