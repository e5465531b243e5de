//! `docs/api.md` is exactly `mqtt-operator docs api` (generated from the CRD schemas).

use std::path::Path;

#[test]
fn docs_api_md_matches_the_crd_schemas() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == operator::apidoc::markdown(),
        "docs/api.md drifted from the CRD types; run: cargo run -p operator -- docs api > docs/api.md"
    );
}
