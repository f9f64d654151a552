//! The monitoring kit in `contrib/` (docs/production.md "Monitoring"): the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), every PromQL
//! expression of the Grafana dashboard parses (checked by promtool as recording rules), and
//! every `sipward_*` family the rules and the dashboard name is one the real binary serves
//! (scraped with TLS and the durable store on; the token API's families, which need an IdP,
//! are checked against the names in the source). A missing promtool skips loudly, or fails
//! when `CI=true` (tests/run installs it).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(rel)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("promtool {args:?}: exit {:?}\n{said}", out.status.code());
    assert!(out.status.success(), "promtool {args:?}:\n{said}");
    said
}

/// Every PromQL expression of the dashboard, its Grafana variables replaced by values.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(contrib("grafana/sipward-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert_eq!(dash["uid"], "sipward-overview");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut exprs = Vec::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            exprs.push(
                e.replace("$__rate_interval", "5m")
                    .replace("$instance", ".*"),
            );
        }
    }
    exprs
}

/// The `sipward_*` and `process_*` names in `text`, histogram suffixes stripped.
fn family_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if (rest.starts_with("sipward_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !require_tool("promtool", "prometheus") {
        return;
    }
    let dir = contrib("prometheus");
    let said = promtool(&["check", "rules", "sipward-alerts.yml"], &dir);
    assert!(said.contains("SUCCESS: 7 rules found"), "{said}");
    let said = promtool(&["test", "rules", "sipward-alerts.test.yml"], &dir);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_dashboard_query_parses() {
    if !require_tool("promtool", "prometheus") {
        return;
    }
    let exprs = dashboard_exprs();
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, e) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(e).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:q{n}\n        expr: {quoted}\n"
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    let said = promtool(&["check", "rules", "dashboard.yml"], dir.path());
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{said}"
    );
}

#[test]
fn every_family_the_rules_and_dashboard_name_is_served() {
    let server = Server::start_binary(&Options {
        tls: Some("off"),
        registrar: "persistence = \"sqlite\"",
        ..Options::default()
    });
    let served = family_names(&server.metrics());
    // Served only with the token API on (an IdP): named in the source instead.
    let token_api = [
        "sipward_token_exchanges_total",
        "sipward_oidc_issuer_up",
        "sipward_token_exchange_duration_seconds",
    ];
    let source: String = ["src/api/token.rs", "src/oidc/issuer.rs", "src/oidc/mod.rs"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f))
                .unwrap_or_default()
        })
        .collect();
    let rules = std::fs::read_to_string(contrib("prometheus/sipward-alerts.yml")).unwrap();
    let mut named = family_names(&rules);
    for e in dashboard_exprs() {
        named.extend(family_names(&e));
    }
    assert!(named.len() > 20, "{named:?}");
    for name in &named {
        if served.contains(name) {
            continue;
        }
        assert!(
            token_api.contains(&name.as_str()) && (source.contains(name.as_str())),
            "{name} is named by contrib/ but not served:\n{served:?}"
        );
    }
}
