//! The Grafana dashboards of the chart (charts/phoenix/files/dashboards): valid JSON, a
//! `datasource` variable, and no Prometheus datasource hard-coded anywhere. (Every panel's query
//! returning data from a real Prometheus is tested in tests/e2e/observability.rs.)

use std::path::{Path, PathBuf};

use serde_json::Value;

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/phoenix/files/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dashboards dir readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("dashboard readable");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p, json)
        })
        .collect()
}

/// Every `datasource` value anywhere in `v`, with its JSON path.
fn datasources<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}.{k}");
                if k == "datasource" {
                    out.push((here.clone(), child));
                }
                datasources(child, here, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                datasources(child, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_three_dashboards_exist_with_their_variables() {
    let all = dashboards();
    let titles: Vec<&str> = all
        .iter()
        .filter_map(|(_, d)| d["title"].as_str())
        .collect();
    assert_eq!(
        titles,
        [
            "Phoenix / Experiment detail",
            "Phoenix / Experiments",
            "Phoenix / Operator"
        ]
    );
    for (path, d) in &all {
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .expect("templating.list")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(vars.first(), Some(&"datasource"), "{}", path.display());
        assert_eq!(d["templating"]["list"][0]["type"], "datasource");
        assert_eq!(d["templating"]["list"][0]["query"], "prometheus");
        if d["title"] == "Phoenix / Experiment detail" {
            assert!(vars.contains(&"experiment"), "{vars:?}");
        }
        let panels = d["panels"].as_array().expect("panels");
        assert!(!panels.is_empty());
        for p in panels {
            let exprs: Vec<&str> = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .collect();
            assert!(!exprs.is_empty(), "panel {} has no query", p["title"]);
        }
    }
}

#[test]
fn no_datasource_is_hard_coded() {
    for (path, d) in dashboards() {
        let mut found = Vec::new();
        datasources(&d, String::new(), &mut found);
        assert!(
            found.len() > 3,
            "{}: datasources on panels and targets",
            path.display()
        );
        for (at, ds) in found {
            let builtin = ds["uid"] == "-- Grafana --" && ds["type"] == "grafana";
            let variable = ds["uid"] == "${datasource}" && ds["type"] == "prometheus";
            assert!(
                builtin || variable,
                "{}{at} = {ds}: use the datasource variable (uid \"${{datasource}}\")",
                path.display()
            );
        }
    }
}
