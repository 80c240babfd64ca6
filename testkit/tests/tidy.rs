//! Tidy checks on the tree itself (as rust-analyzer's `tidy.rs`): the docs a newcomer
//! reads first must stay true.
//! - every crate's doc (`lib.rs`) names each of its modules, and every module it names
//!   exists;
//! - ARCHITECTURE.md names every workspace crate, and states the one exception to "only
//!   `stock` builds Redis commands" (the gateway pipe's transport commands);
//! - the broker the project moved away from is named nowhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The workspace's member crates, from the root Cargo.toml.
fn members() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line");
    let members: Vec<String> = line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(
        members.len() >= 7,
        "members read from one line of Cargo.toml: {members:?}"
    );
    members
}

/// Names in `[`name`]` links of the crate doc (`//!` lines).
fn doc_links(lib: &str) -> BTreeSet<String> {
    let doc: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    doc.split("[`")
        .skip(1)
        .filter_map(|s| s.split_once("`]").map(|(n, _)| n.to_string()))
        .collect()
}

/// Modules declared at the top of `lib.rs` (`mod x;` / `pub mod x;`).
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

/// Names a `lib.rs` re-exports (`pub use a::{b, c};`).
fn reexports(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter(|l| l.starts_with("pub use "))
        .flat_map(|l| {
            l.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_crate_doc_names_its_modules_and_only_modules_that_exist() {
    let mut problems = Vec::new();
    for crate_dir in members() {
        let src = root().join(&crate_dir).join("src");
        let Ok(lib) = std::fs::read_to_string(src.join("lib.rs")) else {
            continue;
        };
        let links = doc_links(&lib);
        let modules = declared_modules(&lib);
        for m in &modules {
            if !links.contains(m) {
                problems.push(format!(
                    "{crate_dir}: module `{m}` missing from the crate doc"
                ));
            }
        }
        for l in links.iter().filter(|l| !l.contains("::")) {
            let is_module =
                src.join(format!("{l}.rs")).exists() || src.join(l).join("mod.rs").exists();
            let is_item = ["fn", "struct", "enum", "trait", "type", "use"]
                .iter()
                .any(|k| lib.contains(&format!("{k} {l}")) || lib.contains(&format!("::{l}")))
                || reexports(&lib).contains(l);
            if is_module && !modules.contains(l) {
                problems.push(format!("{crate_dir}: `{l}` has a file but is not declared"));
            }
            if !is_module && !is_item {
                problems.push(format!(
                    "{crate_dir}: the crate doc names `{l}`, which does not exist"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn architecture_names_every_crate_and_the_one_exception_to_the_redis_rule() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for m in members() {
        assert!(
            arch.contains(&format!("`{m}/`")),
            "ARCHITECTURE.md does not name the crate `{m}/`"
        );
    }
    let rule = arch
        .lines()
        .skip_while(|l| !l.contains("Only `stock` builds Redis commands"))
        .take(4)
        .collect::<Vec<_>>()
        .join(" ");
    for c in [
        "AUTH",
        "SELECT",
        "CLUSTER SLOTS",
        "ASKING",
        "WAIT",
        "SCRIPT LOAD",
    ] {
        assert!(
            rule.contains(c),
            "the Redis-commands invariant does not name {c}: {rule}"
        );
    }
}

#[test]
fn the_removed_broker_is_named_nowhere() {
    let gone = ["tan", "su"].concat();
    let mut hits = Vec::new();
    let mut stack = vec![root()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "vendor" {
                    stack.push(p);
                }
            } else if [".rs", ".md", ".sh", ".toml", ".yml", ".json"]
                .iter()
                .any(|x| name.ends_with(x))
            {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if text.to_lowercase().contains(&gone) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    assert!(hits.is_empty(), "still named in {hits:?}");
}
