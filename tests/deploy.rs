//! The compose stack and its configuration files: `docker-compose config`,
//! `promtool check config` (with the rules it loads) and `amtool
//! check-config` accept them, and the stack has the services it promises.
//! The Kubernetes manifests: `kubernetes-validate --strict` accepts them,
//! and the ones copied from the repository's files are not stale.

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

/// `deploy/kubernetes/`: the PrometheusRule and the dashboard ConfigMap are
/// what `scripts/kubernetes.py` makes of `alerts/` and `dashboards/` now;
/// every core resource passes `kubernetes-validate --strict` (no cluster:
/// its schemas ship with it); the Prometheus Operator's kinds, whose schemas
/// it does not have, have what the operator reads.
#[test]
fn the_kubernetes_manifests_validate_and_the_generated_ones_are_fresh() {
    passes(Command::new("python3").args(["scripts/kubernetes.py", "--check"]).current_dir(repo()));
    let validator = std::env::var("TEST_KUBERNETES_VALIDATE")
        .unwrap_or_else(|_| repo().join(".venv/bin/kubernetes-validate").display().to_string());
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "yaml") && !path.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    let output = Command::new(&validator)
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("{validator}: {e} (scripts/test.sh installs it into .venv)"));
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{printed}");
    for resource in [
        "deployment/orders-app",
        "deployment/walpipe-workers",
        "service/walpipe-workers",
        "secret/walpipe",
        "configmap/walpipe-dashboard",
    ] {
        assert!(
            printed.contains(&format!("passed for resource {resource}")),
            "{resource} validated: {printed}"
        );
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    for name in ["sidecar.yaml", "workers.yaml"] {
        let manifest = read(name);
        for needed in ["path: /healthz", "path: /readyz", "memory: 192Mi", "mountPath: /tmp", "name: walpipe"]
        {
            assert!(manifest.contains(needed), "{name} has {needed}");
        }
    }
    assert!(read("workers.yaml").contains("replicas: 2") && read("workers.yaml").contains("secretKeyRef"));
    assert!(read("sidecar.yaml").contains("secretRef:"), "the sidecar takes its URLs from the Secret");
    let monitor = read("podmonitor.yaml");
    assert!(
        monitor.contains("kind: PodMonitor")
            && monitor.contains("port: walpipe-http")
            && monitor.contains("replacement: walpipe")
    );
    assert!(read("prometheusrule.yaml").contains("kind: PrometheusRule"));
    assert!(read("grafana-dashboard.yaml").contains("grafana_dashboard: \"1\""));
}
