//! A source without `wal_level = logical` is refused with the fix.

mod common;

use common::{ClusterOptions, run_with_timeout, walpipe};
use std::time::Duration;

#[test]
fn wal_level_replica_is_refused_with_the_fix() {
    let options =
        ClusterOptions { settings: vec![("wal_level", "replica".into())], ..ClusterOptions::default() };
    let mut clusters = vec![common::pg15_with(&options)];
    clusters.extend(common::pg18_with(&options));
    for cluster in clusters {
        let output = run_with_timeout(
            walpipe()
                .args(["tail", "--slot", "s", "--publication", "p", "--source"])
                .arg(cluster.url("postgres")),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        assert!(!output.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("wal_level = replica") && stderr.contains("wal_level = logical"), "{stderr}");
        assert!(stderr.contains("restart"), "{stderr}");
    }
}
