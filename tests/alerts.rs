//! The alert rules: `promtool check rules` and `promtool test rules` pass;
//! every alert has a severity, a summary, a description with the measured
//! value and a runbook_url whose section exists in drills/RUNBOOK.md; every
//! alert has a scenario of its own and is checked silent in the healthy one.

use std::path::Path;
use std::process::Command;

const RULES: &str = "alerts/walpipe.rules.yml";
const TESTS: &str = "alerts/walpipe.rules.test.yml";

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("promtool (apt-get install -y prometheus) runs");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `(name, the rule's text up to the next rule)` for every alert.
fn alerts() -> Vec<(String, String)> {
    let rules = read(RULES);
    let mut found = Vec::new();
    let starts: Vec<usize> = rules.match_indices("- alert: ").map(|(at, _)| at).collect();
    for (i, start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(rules.len());
        let text = &rules[*start..end];
        let name = text["- alert: ".len()..].lines().next().expect("name").trim().to_string();
        found.push((name, text.to_string()));
    }
    found
}

#[test]
fn the_rules_pass_promtool_check_and_unit_tests() {
    promtool(&["check", "rules", RULES]);
    promtool(&["test", "rules", TESTS]);
}

#[test]
fn every_alert_is_documented_and_has_a_runbook_section() {
    let runbook = read("drills/RUNBOOK.md");
    let alerts = alerts();
    assert!(alerts.len() >= 15, "the issue's alerts are all there");
    for (name, text) in &alerts {
        for field in ["severity: ", "summary: ", "description: ", "runbook_url: "] {
            assert!(text.contains(field), "{name} has no {field}");
        }
        let description =
            text.split("description: ").nth(1).and_then(|d| d.lines().next()).expect("description");
        let measures = description.contains("$value");
        let names_state =
            ["JobFailed", "SlotLost", "SlotInactive", "MonitorDown"].iter().any(|s| name.contains(s));
        assert!(measures || names_state, "{name}'s description shows the measured value");
        let anchor = format!("drills/RUNBOOK.md#{}", name.to_lowercase());
        assert!(text.contains(&anchor), "{name} points at {anchor}");
        assert!(runbook.contains(&format!("\n## {name}\n")), "RUNBOOK.md has a section for {name}");
    }
}

#[test]
fn every_alert_fires_in_a_scenario_and_is_silent_when_healthy() {
    let tests = read(TESTS);
    let scenarios: Vec<&str> = tests.split("\n  # ").skip(1).collect();
    let healthy = scenarios.iter().find(|s| s.starts_with("Healthy")).expect("a healthy scenario");
    for (name, _) in alerts() {
        let silent = format!("alertname: {name}\n        exp_alerts: []");
        assert!(healthy.contains(&silent), "{name} is checked silent in the healthy scenario");
        let fires = format!("alertname: {name}\n        exp_alerts:\n          - exp_labels:");
        assert!(scenarios.iter().any(|s| s.contains(&fires)), "{name} fires in a scenario");
    }
    let long = scenarios
        .iter()
        .find(|s| s.starts_with("A long transaction"))
        .expect("the long-transaction scenario");
    let firing = long.matches("exp_alerts:\n          - exp_labels:").count();
    assert_eq!(firing, 1, "only the pinned alert fires in the long-transaction scenario");
    assert!(
        long.contains("alertname: WalpipeRestartLsnPinned\n        exp_alerts:\n          - exp_labels:")
    );
}
