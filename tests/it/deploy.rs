//! Static checks of the deployment files (no Docker engine or cluster is needed): the
//! compose file, the Dockerfile and the Kubernetes base refer to files that exist, to topics
//! the bridge publishes to, and to configuration the bridge accepts.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::common::{repo, yaml_documents, Spawn};
use comm100_bridge::config::Config;
use comm100_bridge::route::Router;
use serde_yaml_ng::Value;

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

/// `comm100-bridge check-config` with exactly `env` (and no inherited COMM100_BRIDGE__ vars).
fn check_config(env: &[(String, String)], config: Option<&Path>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_comm100-bridge"));
    command.env_clear().arg("check-config");
    if let Some(path) = config {
        command.arg("--config").arg(path);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.run().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn every_topic() -> BTreeSet<String> {
    let defaults = Config::load_with_env(None, Some(Default::default())).unwrap();
    let mut topics: BTreeSet<String> = Router::new(&defaults.topics)
        .topics()
        .iter()
        .cloned()
        .collect();
    topics.insert(defaults.dlq_topic());
    topics
}

#[test]
fn compose_services_files_ports_and_environment_are_real() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    assert_eq!(
        names,
        ["bridge", "grafana", "kafka", "prometheus", "topics"].into()
    );

    // Every bind-mounted file or directory exists in the repository.
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            let source = spec.split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(
                    repo(source).exists(),
                    "{name:?} mounts {source}, which does not exist"
                );
            } else {
                assert!(
                    compose["volumes"].get(source).is_some(),
                    "{name:?} uses an undeclared volume {source}"
                );
            }
        }
    }

    let bridge = &compose["services"]["bridge"];
    assert_eq!(bridge["build"].as_str(), Some("."));
    assert!(repo("Dockerfile").is_file());
    let env: Vec<(String, String)> = bridge["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        env.iter().all(|(k, _)| k.starts_with("COMM100_BRIDGE__")),
        "{env:?}"
    );
    let (ok, text) = check_config(&env, None);
    assert!(
        ok,
        "the compose environment is not a valid configuration:\n{text}"
    );
    let effective: toml::Value = toml::from_str(&text).unwrap();
    let listen = effective["http"]["listen"].as_str().unwrap();
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        bridge["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().ends_with(&format!(":{port}"))),
        "the bridge listens on {listen} but compose does not publish that port"
    );
    assert_eq!(
        effective["kafka"]["brokers"][0].as_str(),
        Some("kafka:9092")
    );
    // Probes and Prometheus use the admin listener, which compose opens to the network.
    let admin = effective["admin"]["listen"].as_str().unwrap();
    assert!(admin.starts_with("0.0.0.0:"), "{admin}");
    let admin_port = admin.rsplit(':').next().unwrap();
    let healthcheck: Vec<&str> = bridge["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        healthcheck[..3],
        ["CMD", "comm100-bridge", "healthcheck"],
        "the image has no curl"
    );
    assert!(healthcheck[4].ends_with(&format!(":{admin_port}/readyz")));

    // The one-shot service creates every topic the bridge publishes to.
    let script = compose["services"]["topics"]["command"][0]
        .as_str()
        .unwrap();
    for topic in every_topic() {
        assert!(script.contains(&topic), "compose does not create {topic}");
    }

    // Prometheus and Grafana get the files their configurations name.
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    assert_eq!(prometheus["rule_files"][0].as_str(), Some("alerts.yml"));
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str(),
        Some(format!("bridge:{admin_port}").as_str())
    );
    let provider = yaml("deploy/grafana/provisioning/dashboards/comm100-bridge.yml");
    let dashboards = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let grafana_mounts: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        grafana_mounts
            .iter()
            .any(|m| m.contains(&format!(":{dashboards}"))),
        "{grafana_mounts:?}"
    );
}

#[test]
fn the_dockerfile_runs_serve_as_a_non_root_user_with_a_spool_volume() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    for line in [
        "EXPOSE 8080 9464",
        "VOLUME /var/lib/comm100-bridge/spool",
        "USER 10001:10001",
        // Arguments replace only `serve`, so `IMAGE --version` and `IMAGE check-config` work.
        r#"ENTRYPOINT ["comm100-bridge"]"#,
        r#"CMD ["serve"]"#,
    ] {
        assert!(
            dockerfile.lines().any(|l| l.trim() == line),
            "Dockerfile lacks `{line}`"
        );
    }
    // The image sets no configuration variable, which would override every --config file.
    assert!(
        !dockerfile.contains("ENV COMM100_BRIDGE__"),
        "an ENV in the image silently overrides the TOML"
    );
    let defaults = Config::load_with_env(None, Some(Default::default())).unwrap();
    assert!(dockerfile.contains(&format!("VOLUME {}", defaults.spool.dir.display())));
    assert!(dockerfile.contains("AS build"), "not a multi-stage build");
    // Base images pinned by digest; no curl in the runtime image: the health check is the
    // binary itself.
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    for from in froms {
        let image = from.split_whitespace().next().unwrap();
        let digest = image.split_once("@sha256:").map(|(_, d)| d);
        assert!(
            digest.is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())),
            "{image} is not pinned by digest"
        );
    }
    assert!(
        !dockerfile
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("curl")),
        "curl in the image"
    );
    let healthcheck = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .unwrap();
    assert_eq!(
        healthcheck.trim(),
        r#"CMD ["comm100-bridge", "healthcheck", "--url", "http://127.0.0.1:9464/healthz"]"#
    );
    let ignore = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

#[test]
fn the_kubernetes_base_is_consistent() {
    let dir = repo("deploy/kubernetes/base");
    let kustomization = yaml("deploy/kubernetes/base/kustomization.yaml");
    for resource in kustomization["resources"].as_sequence().unwrap() {
        assert!(
            dir.join(resource.as_str().unwrap()).is_file(),
            "{resource:?} missing"
        );
    }

    // The ConfigMap's configuration is valid, with the token the Secret provides.
    let (ok, text) = check_config(
        &[(
            "COMM100_BRIDGE__AUTH__TOKENS".into(),
            "from-the-secret".into(),
        )],
        Some(&dir.join("bridge.toml")),
    );
    assert!(ok, "deploy/kubernetes/base/bridge.toml:\n{text}");

    let statefulset = yaml("deploy/kubernetes/base/statefulset.yaml");
    let pod = &statefulset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"].as_str(), Some("admin"));
    }
    let admin_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("the container names its admin port")["containerPort"]
        .as_u64()
        .unwrap();
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    // Longer than the longest shutdown: the delay, in-flight requests (deadline + body
    // read), the spool drain and the producer flush.
    let deployed =
        Config::load_with_env(Some(&dir.join("bridge.toml")), Some(Default::default())).unwrap();
    assert!(deployed.http.shutdown_delay_ms >= 5000, "no shutdown delay");
    assert!(deployed.spool.drain_on_shutdown_ms > 0, "no spool drain");
    let shutdown_ms = deployed.http.shutdown_delay_ms
        + deployed.delivery.deadline_ms
        + 5000
        + deployed.spool.drain_on_shutdown_ms
        + 10_000;
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace * 1000 > shutdown_ms, "{grace} s < {shutdown_ms} ms");
    // No autoscaler: scale-in is by hand, so no spool is stranded.
    assert!(!kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().contains("autoscaler")));
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    let toml: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("bridge.toml")).unwrap()).unwrap();
    assert_eq!(
        toml["admin"]["listen"].as_str(),
        Some(format!("0.0.0.0:{admin_port}").as_str()),
        "the probes' port is not where the bridge serves them"
    );
    // The ServiceMonitor scrapes the admin port, which one Service only names.
    let monitor = yaml("deploy/kubernetes/monitoring/servicemonitor.yaml");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("admin")
    );
    let services = std::fs::read_to_string(dir.join("service.yaml")).unwrap();
    let with_admin = yaml_documents(&services)
        .into_iter()
        .filter(|svc| {
            svc["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "admin")
        })
        .count();
    assert_eq!(with_admin, 1, "each pod would be scraped once per Service");
    assert!(
        mounts.contains(&toml["spool"]["dir"].as_str().unwrap()),
        "the spool dir is not on the volume"
    );
    assert_eq!(
        statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str(),
        Some("spool")
    );

    // The spool drain Job mounts a replica's claim where the bridge has its spool, and
    // drains that directory with the bridge's configuration.
    let job = yaml("deploy/kubernetes/spool-drain-job.yaml");
    let job_pod = &job["spec"]["template"]["spec"];
    let drain = &job_pod["containers"][0];
    let spool_dir = toml["spool"]["dir"].as_str().unwrap();
    let args: Vec<&str> = drain["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "spool",
            "drain",
            "--dir",
            spool_dir,
            "--config",
            "/etc/comm100-bridge/bridge.toml"
        ]
    );
    let volume = |name: &str| {
        job_pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        volume("spool")["persistentVolumeClaim"]["claimName"].as_str(),
        Some("spool-comm100-bridge-ORDINAL"),
        "claims of a StatefulSet are <template>-<statefulset>-<ordinal>"
    );
    assert_eq!(
        volume("config")["configMap"]["name"],
        kustomization["configMapGenerator"][0]["name"]
    );
    assert!(drain["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "spool" && m["mountPath"].as_str() == Some(spool_dir)));

    // The PrometheusRule and the chart carry exactly the alerts of deploy/prometheus/alerts.yml.
    let rule = yaml("deploy/kubernetes/monitoring/prometheusrule.yaml");
    assert_eq!(
        rule["spec"],
        yaml("deploy/prometheus/alerts.yml"),
        "prometheusrule.yaml and alerts.yml differ"
    );
    assert_eq!(
        std::fs::read_to_string(repo("deploy/helm/comm100-bridge/files/alerts.yml")).unwrap(),
        std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap(),
        "the chart's copy of alerts.yml differs"
    );
}
