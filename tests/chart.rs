//! The Helm chart (charts/phoenix) stays in step with the code: its crds/ are copies of crds/, and
//! its Deployment passes every operator setting. (Rendering and RBAC run in tests/e2e/rbac.rs.)

use std::path::Path;

use clap::CommandFactory;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{} is readable: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn chart_crds_are_copies_of_crds() {
    let (source, chart) = (root().join("crds"), root().join("charts/phoenix/crds"));
    let names = file_names(&source);
    assert_eq!(
        file_names(&chart),
        names,
        "charts/phoenix/crds/ must hold exactly the files of crds/: run `just crds`"
    );
    for name in names {
        let read = |dir: &Path| std::fs::read(dir.join(&name)).expect("CRD file readable");
        assert!(
            read(&source) == read(&chart),
            "charts/phoenix/crds/{name} differs from crds/{name}: run `just crds`"
        );
    }
}

#[test]
fn the_deployment_sets_every_operator_setting() {
    let template = std::fs::read_to_string(root().join("charts/phoenix/templates/deployment.yaml"))
        .expect("deployment template readable");
    let command = phoenix::settings::Settings::command();
    let missing: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .filter(|env| !template.contains(&format!("- name: {env}\n")))
        .collect();
    assert!(
        missing.is_empty(),
        "charts/phoenix/templates/deployment.yaml does not set {missing:?}: add a value to \
         values.yaml and pass it"
    );
    let without_env: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_env().is_none())
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|long| long != "help" && long != "version")
        .collect();
    assert!(
        without_env.is_empty(),
        "flags {without_env:?} have no env fallback the chart could set"
    );
}
