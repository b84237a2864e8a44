//! The Grafana dashboard shipped in `deploy/grafana/`: every metric its queries name is one
//! the server exports, and every exported series has a panel.

use std::collections::BTreeSet;

use dict_server::metrics;

/// The series the server exports ([`metrics`]'s names).
const EXPORTED: &[&str] = &[
    metrics::OPERATIONS,
    metrics::OPERATION_ERRORS,
    metrics::OPERATION_SECONDS,
    metrics::SLOW_OPERATIONS,
    metrics::OPERATIONS_IN_FLIGHT,
    metrics::CONNECTIONS_OPEN,
    metrics::CONNECTIONS,
    metrics::CONNECTIONS_CLOSED,
    metrics::RELOADS,
];

fn dashboard() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/dict-rs.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `dict_…` names in a PromQL expression, a histogram's `_bucket/_sum/_count` series
/// given by the histogram's name.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("dict_"))
        .map(|word| {
            let histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .filter(|base| *base == metrics::OPERATION_SECONDS);
            histogram.unwrap_or(word).to_string()
        })
        .collect()
}

/// Every query string of the dashboard: panel targets and template variables.
fn queries(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for t in targets {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in d["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            out.push(var["query"].as_str().expect("query").to_string());
        }
    }
    out
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let d = dashboard();
    let mut used = BTreeSet::new();
    for expr in queries(&d) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "no dict_ metric in {expr}");
        for name in names {
            assert!(
                EXPORTED.contains(&name.as_str()),
                "{name} (in {expr}) is not a metric the server exports"
            );
            used.insert(name);
        }
    }
    // Connections accepted only feed the instance picker; everything else has a panel.
    let unused: Vec<_> = EXPORTED.iter().filter(|m| !used.contains(**m)).collect();
    assert!(unused.is_empty(), "no query uses {unused:?}");
}

#[test]
fn the_dashboard_has_the_documented_panels() {
    let d = dashboard();
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Requests/s by operation",
            "Errors/s by kind",
            "Latency p50 / p99",
            "In flight",
            "Open connections",
            "Connections closed by reason",
            "Slow operations/s",
            "Config reloads",
        ]
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("## Metrics and dashboard")
        .nth(1)
        .expect("README section \"Metrics and dashboard\"");
    for title in titles {
        assert!(
            section.contains(&format!("**{title}**")),
            "README lacks panel {title}"
        );
    }
}

#[test]
fn a_misspelt_metric_is_caught() {
    assert_eq!(
        metric_names("rate(dict_operation_duration_seconds_bucket{x=\"y\"}[5m]) + dict_opps"),
        ["dict_operation_duration_seconds", "dict_opps"]
    );
    assert!(!EXPORTED.contains(&"dict_opps"));
}
