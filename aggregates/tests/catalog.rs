//! The event catalogue in `docs/` is generated from the Rust types and must match them.
//!
//! This test regenerates `docs/EVENT-CATALOG.md`, `docs/schemas/envelope.json` and every
//! `docs/schemas/<aggregate>/<EventType>.v<major>.json` in memory and compares them with
//! the files checked in. After changing an event, run
//!
//! ```sh
//! UPDATE_CATALOG=1 cargo test -p aggregates --test catalog
//! ```
//!
//! which rewrites them (and removes schema files no event has any more).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aggregates::catalog;

const UPDATE: &str = "UPDATE_CATALOG=1 cargo test -p aggregates --test catalog";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every `.json` file under `dir`, as paths relative to `root` with `/` separators.
fn json_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let path = entry.path();
        if path.is_dir() {
            json_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            if let Ok(rel) = path.strip_prefix(root) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.insert(parts.join("/"));
            }
        }
    }
}

#[test]
fn the_catalogue_has_an_entry_for_every_variant_of_every_event_enum() {
    let problems = catalog::problems();
    assert!(
        problems.is_empty(),
        "the event catalogue (aggregates/src/catalog.rs) is incomplete:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_generated_documents_in_docs_match_the_rust_types() {
    let root = workspace_root();
    let files = catalog::render_files();
    let mut on_disk = BTreeSet::new();
    json_files(&root, &root.join(catalog::SCHEMAS_DIR), &mut on_disk);
    let stale: Vec<&String> = on_disk.iter().filter(|p| !files.contains_key(*p)).collect();

    if std::env::var("UPDATE_CATALOG").is_ok_and(|v| !v.is_empty() && v != "0") {
        for stale in &stale {
            std::fs::remove_file(root.join(stale)).expect("remove a stale schema");
        }
        for (path, contents) in &files {
            let path = root.join(path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("create the directory");
            }
            if std::fs::read_to_string(&path).ok().as_deref() != Some(contents.as_str()) {
                std::fs::write(&path, contents).expect("write a generated document");
            }
        }
        return;
    }

    let mut differences = vec![];
    for (path, contents) in &files {
        match std::fs::read_to_string(root.join(path)) {
            Ok(found) if found == *contents => {}
            Ok(_) => differences.push(format!("{path} differs")),
            Err(_) => differences.push(format!("{path} is missing")),
        }
    }
    for stale in stale {
        differences.push(format!("{stale} belongs to no event any more"));
    }
    assert!(
        differences.is_empty(),
        "the event catalogue in docs/ does not match the Rust event types:\n  {}\n\
         Run `{UPDATE}` to regenerate it, and commit the result.",
        differences.join("\n  ")
    );
}

#[test]
fn every_event_has_a_schema_file_and_a_section_in_the_catalogue() {
    let files = catalog::render_files();
    let md = &files[catalog::CATALOG_PATH];
    for e in catalog::entries() {
        assert!(files.contains_key(&e.schema_path()), "{}", e.event_type);
        assert!(
            md.contains(&format!("\n### {}\n", e.event_type)),
            "{}",
            e.event_type
        );
        assert!(
            md.contains(&format!(
                "`chronicle.events.{}.{}`",
                e.aggregate_type, e.event_type
            )),
            "{}",
            e.event_type
        );
    }
    assert!(files.contains_key("docs/schemas/user/LoginFailed.v1.json"));
    assert!(files.contains_key("docs/schemas/user/LoginFailed.v2.json"));
    assert!(files.contains_key(catalog::ENVELOPE_SCHEMA_PATH));
}
