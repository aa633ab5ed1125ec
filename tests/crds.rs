//! crds/ is generated from the Rust types: this test fails when the committed YAML drifts.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for crd in phoenix::crd::all() {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        let expected = phoenix::crd::render_crd_yaml(&crd).expect("CRD serializes");
        let path = dir.join(format!("{name}.yaml"));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}): run `just crds`", path.display()));
        assert!(
            committed == expected,
            "{} is out of date with src/crd/: run `just crds` and commit the result",
            path.display()
        );
    }
    let files = std::fs::read_dir(&dir).expect("crds/ exists").count();
    assert_eq!(
        files,
        phoenix::crd::all().len(),
        "crds/ holds a file that no type generates"
    );
}
