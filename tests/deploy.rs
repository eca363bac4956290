//! The compose stack and its configuration files: `docker-compose config`,
//! `promtool check config` (with the rules it loads) and `amtool
//! check-config` accept them, and the stack has the services it promises.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn passes(command: &mut Command) {
    let output =
        command.output().unwrap_or_else(|e| panic!("{command:?}: {e} (run scripts/test.sh to install it)"));
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_compose_file_is_valid_and_has_every_service() {
    passes(
        Command::new("docker-compose").args(["-f", "docker-compose.yml", "config", "-q"]).current_dir(repo()),
    );
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "--services"])
        .current_dir(repo())
        .output()
        .expect("docker-compose");
    let services = String::from_utf8_lossy(&output.stdout);
    for service in ["source", "sink", "walpipe", "prometheus", "alertmanager", "grafana"] {
        assert!(services.lines().any(|line| line == service), "the stack has {service}: {services}");
    }
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).expect("compose file");
    for setting in
        ["wal_level=logical", "max_slot_wal_keep_size=", "build: .", "./alerts:/etc/prometheus/alerts"]
    {
        assert!(compose.contains(setting), "docker-compose.yml has {setting}");
    }
    assert!(repo().join("Dockerfile").exists());
}

#[test]
fn prometheus_and_alertmanager_accept_their_configuration() {
    // Prometheus resolves rule_files next to its configuration, as in the container.
    let dir = std::env::temp_dir().join(format!("walpipe-deploy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("alerts")).expect("dir");
    std::fs::copy(repo().join("deploy/prometheus.yml"), dir.join("prometheus.yml")).expect("copy");
    std::fs::copy(repo().join("alerts/walpipe.rules.yml"), dir.join("alerts/walpipe.rules.yml"))
        .expect("copy");
    passes(Command::new("promtool").args(["check", "config"]).arg(dir.join("prometheus.yml")));
    let _ = std::fs::remove_dir_all(&dir);
    passes(Command::new("amtool").args(["check-config", "deploy/alertmanager.yml"]).current_dir(repo()));
}
