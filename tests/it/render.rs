//! The Kubernetes manifests as a cluster gets them: the kustomize base and its example
//! overlay (kustomize, or `kubectl kustomize`) and the Helm chart with default and other
//! values (helm), rendered and checked: the image is a parameter, the probes use the admin
//! port the bridge really listens on, one Service is scraped, the grace period outlasts
//! the shutdown, and the configuration the pod would run with passes `check-config`.
//! `.ci/run` installs the tools and runs these.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;

use crate::common::{repo, yaml_documents, Spawn};

fn on_path(tool: &str) -> bool {
    Command::new(tool).arg("version").run().is_ok()
}

/// Runs `program args`, panicking with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .run()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kustomize(dir: &str) -> Vec<Value> {
    let dir = repo(dir);
    let dir = dir.to_str().unwrap();
    yaml_documents(&if on_path("kustomize") {
        run("kustomize", &["build", dir])
    } else {
        run("kubectl", &["kustomize", dir])
    })
}

const CHART: &str = "deploy/helm/comm100-bridge";

fn helm_template(values: Option<&Path>) -> Vec<Value> {
    let chart = repo(CHART);
    let mut args = vec!["template", "bridge", chart.to_str().unwrap()];
    if let Some(values) = values {
        args.extend(["--values", values.to_str().unwrap()]);
    }
    yaml_documents(&run("helm", &args))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (text(k), text(v)))
        .collect()
}

/// Whether every label of `selector` is in `labels`.
fn selects(selector: &Value, labels_of: &Value) -> bool {
    let have = labels(labels_of);
    let want = labels(selector);
    !want.is_empty() && want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// The configuration the bridge container would run with, as `check-config` prints it:
/// the ConfigMap's file and the container's environment (a Secret's value from the
/// rendered Secret, or a stand-in when the Secret is the operator's).
fn effective_config(objects: &[Value]) -> toml::Value {
    effective_config_with(objects, &[])
}

/// [`effective_config`], with the content of the operator's Secrets' keys that must be
/// more than a stand-in (a CA certificate librdkafka reads), by key.
fn effective_config_with(objects: &[Value], contents: &[(&str, &str)]) -> toml::Value {
    let out = pod_check_config(objects, contents);
    assert!(
        out.status.success(),
        "the rendered pod's configuration fails check-config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// What `check-config` says of the configuration the bridge container would run with.
fn pod_check_config(objects: &[Value], contents: &[(&str, &str)]) -> std::process::Output {
    let statefulset = one(objects, "StatefulSet");
    let pod = &statefulset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let at = args.iter().position(|a| a == "--config").expect("--config");
    let config_path = Path::new(&args[at + 1]);
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| Some(Path::new(m["mountPath"].as_str().unwrap())) == config_path.parent())
        .expect("the configuration file is mounted");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let map_name = &volume["configMap"]["name"];
    let config_map = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| &c["metadata"]["name"] == map_name)
        .expect("the mounted ConfigMap is rendered");
    let file_name = config_path.file_name().unwrap().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join(file_name);
    std::fs::write(&file, text(&config_map["data"][file_name])).unwrap();

    // Secret volumes as the kubelet writes them: each key a file under the mount path (a
    // stand-in value when the Secret is the operator's). Paths in the environment that lead
    // into them are pointed at the copies.
    let secrets = of_kind(objects, "Secret");
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|var| {
            assert!(
                var.get("valueFrom").is_none(),
                "{}: secrets reach the bridge as files, which it reads again when they change",
                text(&var["name"])
            );
            (text(&var["name"]), text(&var["value"]))
        })
        .collect();
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        let secret = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .and_then(|v| v["secret"]["secretName"].as_str());
        let Some(name) = secret else {
            continue;
        };
        let at = text(&mount["mountPath"]);
        let local = work.path().join(at.trim_start_matches('/'));
        std::fs::create_dir_all(&local).unwrap();
        match secrets.iter().find(|s| s["metadata"]["name"] == name) {
            Some(secret) => {
                for (key, value) in secret["stringData"].as_mapping().unwrap() {
                    std::fs::write(local.join(text(key)), text(value)).unwrap();
                }
            }
            None => {
                for (_, value) in &env {
                    if let Some(key) = value.strip_prefix(&format!("{at}/")) {
                        let content = contents
                            .iter()
                            .find(|(k, _)| *k == key)
                            .map_or(format!("stand-in-for-{key}"), |(_, c)| (*c).to_owned());
                        std::fs::write(local.join(key), content).unwrap();
                    }
                }
            }
        }
        mounts.push((at, local));
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_comm100-bridge"));
    command
        .env_clear()
        .arg("check-config")
        .arg("--config")
        .arg(&file);
    for (name, mut value) in env {
        for (at, local) in &mounts {
            if let Some(rest) = value.strip_prefix(&format!("{at}/")) {
                value = local.join(rest).display().to_string();
            }
        }
        command.env(name, value);
    }
    command.run().unwrap()
}

/// A Kubernetes quantity of bytes, such as `2Gi` or `500Mi`.
fn quantity(text: &str) -> u64 {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let unit = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => panic!("unit {other} of {text}"),
    };
    number.parse::<u64>().unwrap() * unit
}

fn port_of(listen: &toml::Value) -> u64 {
    let addr: std::net::SocketAddr = listen.as_str().unwrap().parse().unwrap();
    u64::from(addr.port())
}

/// What every rendering must hold; returns the pod's grace period, in seconds.
fn check(objects: &[Value], image: &str, monitored: bool) -> u64 {
    let statefulset = one(objects, "StatefulSet");
    let pod = &statefulset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"].as_str(), Some(image));
    assert!(selects(
        &statefulset["spec"]["selector"]["matchLabels"],
        &statefulset["spec"]["template"]["metadata"]["labels"]
    ));

    let config = effective_config(objects);
    // The probes point at the admin port, which is where the bridge serves them.
    let ports = container["ports"].as_sequence().unwrap();
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} port"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("admin"), port_of(&config["admin"]["listen"]));
    assert_eq!(port("http"), port_of(&config["http"]["listen"]));
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        let target = &get["port"];
        assert!(
            target == "admin" || target.as_u64() == Some(port("admin")),
            "{probe} port {target:?} is not the admin port"
        );
    }

    // A long spool scan at start is not a liveness failure: the startup probe allows
    // minutes before liveness begins.
    let startup = &container["startupProbe"];
    let allowed = startup["periodSeconds"].as_u64().unwrap_or(10)
        * startup["failureThreshold"].as_u64().unwrap_or(3);
    assert!(allowed >= 120, "the startup probe allows only {allowed} s");

    // The tokens are a file of a mounted Secret (check-config read it), read again when it
    // changes.
    assert!(
        config["auth"]["tokens_file"].as_str().is_some(),
        "auth.tokens_file is not set"
    );

    // The grace period outlasts the longest shutdown: the delay, requests in flight (the
    // deadline and 5 s to read a body), the spool drain and the producer's flush.
    let ms = |section: &str, key: &str| config[section][key].as_integer().unwrap() as u64;
    let delay = ms("http", "shutdown_delay_ms");
    assert!(
        delay > 0,
        "no shutdown delay: endpoints would still send here"
    );
    let shutdown =
        delay + ms("delivery", "deadline_ms") + 5000 + ms("spool", "drain_on_shutdown_ms") + 10_000;
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace * 1000 > shutdown,
        "grace {grace} s, shutdown up to {shutdown} ms"
    );

    // The spool is on the replica's own volume.
    let spool_dir = config["spool"]["dir"].as_str().unwrap();
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(spool_dir))
        .expect("the spool directory is mounted");
    assert!(statefulset["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|t| t["metadata"]["name"] == mount["name"]));
    // The spool uses most of its volume and never more.
    let claim = statefulset["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|t| t["metadata"]["name"] == mount["name"])
        .unwrap();
    let volume = quantity(&text(&claim["spec"]["resources"]["requests"]["storage"]));
    let max_bytes = config["spool"]["max_bytes"].as_integer().unwrap() as u64;
    assert!(
        max_bytes <= volume && max_bytes * 10 >= volume * 8,
        "spool.max_bytes {max_bytes} on a volume of {volume} bytes"
    );

    // Services select the pods; with monitoring, exactly one is scraped, on the admin port.
    let pod_labels = &statefulset["spec"]["template"]["metadata"]["labels"];
    let services = of_kind(objects, "Service");
    for service in &services {
        assert!(selects(&service["spec"]["selector"], pod_labels));
    }
    let monitors = of_kind(objects, "ServiceMonitor");
    let rules = of_kind(objects, "PrometheusRule");
    if !monitored {
        assert!(
            monitors.is_empty() && rules.is_empty(),
            "needs the operator's CRDs"
        );
        return grace;
    }
    let monitor = one(objects, "ServiceMonitor");
    let scraped: Vec<_> = services
        .iter()
        .filter(|s| {
            selects(
                &monitor["spec"]["selector"]["matchLabels"],
                &s["metadata"]["labels"],
            )
        })
        .collect();
    assert_eq!(
        scraped.len(),
        1,
        "each pod would be scraped once per Service"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    let service_port = scraped[0]["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .expect("the scraped Service has the endpoint's port");
    assert_eq!(service_port["targetPort"].as_str(), Some("admin"));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    let rule = one(objects, "PrometheusRule");
    let alerts: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"], alerts);
    grace
}

#[test]
#[ignore = "needs kustomize or kubectl; .ci/run runs it"]
fn the_kustomize_base_and_its_overlay_render_as_documented() {
    // The base: no image invented (the overlay sets it), nothing that needs the
    // Prometheus Operator's CRDs.
    let base = kustomize("deploy/kubernetes/base");
    check(&base, "comm100-bridge", false);

    // The overlay: applies without the Prometheus Operator's CRDs; brokers and SASL set,
    // the password read from the Secret's file (check-config builds the producer with them).
    let mut overlay = kustomize("deploy/kubernetes/example");
    check(&overlay, "registry.example.com/comm100-bridge:0.2.0", false);
    let kafka = &effective_config(&overlay)["kafka"];
    assert_eq!(
        kafka["brokers"],
        toml::Value::try_from([
            "kafka-0.kafka.example.internal:9093",
            "kafka-1.kafka.example.internal:9093"
        ])
        .unwrap()
    );
    let properties = &kafka["properties"];
    assert_eq!(properties["security.protocol"].as_str(), Some("SASL_SSL"));
    assert_eq!(
        properties["sasl.mechanisms"].as_str(),
        Some("SCRAM-SHA-512")
    );
    // Read from the file (check-config prints it redacted).
    assert_eq!(properties["sasl.password"].as_str(), Some("<redacted>"));

    // Its monitoring step, in the same namespace, selects what the overlay runs.
    let monitoring = kustomize("deploy/kubernetes/example/monitoring");
    assert!(of_kind(&monitoring, "StatefulSet").is_empty());
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            one(&monitoring, kind)["metadata"]["labels"]["release"].as_str(),
            Some("kube-prometheus-stack"),
            "{kind}: the label kube-prometheus-stack selects"
        );
    }
    overlay.extend(monitoring);
    check(&overlay, "registry.example.com/comm100-bridge:0.2.0", true);
    assert!(overlay
        .iter()
        .all(|o| o["metadata"]["namespace"] == "comm100" || o["kind"] == "Namespace"));
    assert_eq!(
        effective_config(&overlay)["auth"]["trusted_proxies"],
        toml::Value::try_from(["10.244.0.0/16"]).unwrap()
    );
    check_network_policy(&overlay, 8080, 9464);
    assert!(of_kind(&base, "NetworkPolicy").is_empty());
}

#[test]
#[ignore = "needs helm; .ci/run runs it"]
fn the_helm_chart_lints_and_renders_with_default_and_other_values() {
    let chart = repo(CHART);
    run("helm", &["lint", "--strict", chart.to_str().unwrap()]);
    let app_version = serde_yaml_ng::from_str::<Value>(
        &std::fs::read_to_string(chart.join("Chart.yaml")).unwrap(),
    )
    .unwrap()["appVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion"
    );

    // Defaults: the chart generates no token, so it asks for one.
    let refused = Command::new("helm")
        .args(["template", "comm100-bridge", chart.to_str().unwrap()])
        .run()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("set secret.tokens"),
        "{said}"
    );
    // With a token: the image tag is the chart's appVersion, and every render is the same
    // (what helm template, Argo CD and Flux each produce).
    let work = tempfile::tempdir().unwrap();
    let token_only = work.path().join("token.yaml");
    std::fs::write(&token_only, "secret: {tokens: \"token-a,token-b\"}\n").unwrap();
    let defaults = helm_template(Some(&token_only));
    assert_eq!(
        defaults,
        helm_template(Some(&token_only)),
        "two renders differ"
    );
    let grace = check(&defaults, &format!("comm100-bridge:{app_version}"), false);
    assert_eq!(grace, 45);
    let secret = one(&defaults, "Secret");
    assert_eq!(text(&secret["stringData"]["tokens"]), "token-a,token-b");
    assert!(secret["stringData"].get("kafka-password").is_none());
    assert!(of_kind(&defaults, "NetworkPolicy").is_empty());

    // Other values: the image, ports, timings, an existing Secret, SASL properties, more
    // TOML, trusted proxies, a NetworkPolicy, and the Prometheus Operator objects with the
    // label a Prometheus selects.
    let values = work.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
image: {repository: registry.test/team/comm100-bridge, tag: "9.9.9"}
replicaCount: 3
ports: {http: 9000, admin: 9999}
shutdown: {delayMs: 2000, spoolDrainMs: 30000}
delivery: {deadlineMs: 3000}
secret: {existingSecret: bridge-credentials}
kafka:
  brokers: [k1.test:9093, k2.test:9093]
  properties:
    security.protocol: SASL_SSL
    sasl.mechanisms: SCRAM-SHA-512
    sasl.username: bridge
    linger.ms: 0
config: |
  [log]
  level = "debug"
  [dlq]
  topic = "team.dlq"
serviceMonitor: {enabled: true, labels: {release: prom}}
prometheusRule: {enabled: true, labels: {release: prom}}
spoolDrain: {ordinals: [2]}
auth: {trustedProxies: [10.244.0.0/16, "fd00::/8"]}
networkPolicy: {enabled: true}
"#,
    )
    .unwrap();
    run(
        "helm",
        &[
            "lint",
            "--strict",
            chart.to_str().unwrap(),
            "--values",
            values.to_str().unwrap(),
        ],
    );
    let custom = helm_template(Some(&values));
    let grace = check(&custom, "registry.test/team/comm100-bridge:9.9.9", true);
    assert_eq!(grace, (2000 + 3000 + 5000 + 30_000 + 10_000) / 1000 + 10);
    assert!(
        of_kind(&custom, "Secret").is_empty(),
        "the operator's Secret is used"
    );
    assert_eq!(
        one(&custom, "StatefulSet")["spec"]["replicas"].as_u64(),
        Some(3)
    );
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            one(&custom, kind)["metadata"]["labels"]["release"].as_str(),
            Some("prom")
        );
    }
    // The drain Job of a removed replica: its claim, the bridge's settings, its spool dir.
    let statefulset = one(&custom, "StatefulSet");
    let bridge = &statefulset["spec"]["template"]["spec"]["containers"][0];
    let job = one(&custom, "Job");
    let job_pod = &job["spec"]["template"]["spec"];
    let drain = &job_pod["containers"][0];
    assert_eq!(drain["image"], bridge["image"]);
    assert_eq!(
        drain["env"], bridge["env"],
        "the Job publishes with the bridge's settings"
    );
    let claim_template = text(&statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]);
    let claim = format!(
        "{claim_template}-{}-2",
        text(&statefulset["metadata"]["name"])
    );
    let spool_volume = job_pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(claim.as_str()))
        .expect("the Job mounts replica 2's claim");
    let args: Vec<String> = drain["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let spool_dir = drain["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == spool_volume["name"])
        .unwrap()["mountPath"]
        .clone();
    assert_eq!(
        args[..4],
        ["spool", "drain", "--dir", text(&spool_dir).as_str()]
    );
    assert!(of_kind(&defaults, "Job").is_empty());

    let config = effective_config(&custom);
    let properties = &config["kafka"]["properties"];
    assert_eq!(properties["security.protocol"].as_str(), Some("SASL_SSL"));
    assert_eq!(properties["linger.ms"].as_str(), Some("0"));
    assert_eq!(properties["sasl.password"].as_str(), Some("<redacted>"));
    assert_eq!(config["kafka"]["brokers"][1].as_str(), Some("k2.test:9093"));
    assert_eq!(config["log"]["level"].as_str(), Some("debug"));
    assert_eq!(config["dlq"]["topic"].as_str(), Some("team.dlq"));
    assert_eq!(
        config["auth"]["trusted_proxies"],
        toml::Value::try_from(["10.244.0.0/16", "fd00::/8"]).unwrap()
    );
    check_network_policy(&custom, 9000, 9999);
}

/// The NetworkPolicy selects the bridge's pods and lets in only the webhook port from
/// the Ingress controller's namespace and the admin port from the monitoring namespace.
fn check_network_policy(objects: &[Value], http: u64, admin: u64) {
    let policy = one(objects, "NetworkPolicy");
    let pod = &one(objects, "StatefulSet")["spec"]["template"];
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    let ports = pod["spec"]["containers"][0]["ports"].as_sequence().unwrap();
    let number = |name: &Value| {
        name.as_u64().unwrap_or_else(|| {
            ports.iter().find(|p| &p["name"] == name).unwrap()["containerPort"]
                .as_u64()
                .unwrap()
        })
    };
    let rules: Vec<(u64, String)> = policy["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|rule| {
            let only: Vec<u64> = rule["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| number(&p["port"]))
                .collect();
            assert_eq!(only.len(), 1, "{rule:?}");
            let from = text(
                &rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            );
            (only[0], from)
        })
        .collect();
    assert_eq!(
        rules,
        [
            (http, "ingress-nginx".to_owned()),
            (admin, "monitoring".to_owned())
        ]
    );
}

#[test]
#[ignore = "needs helm; .ci/run runs it"]
fn a_single_replica_gets_no_disruption_budget_that_would_block_node_drains() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "replicaCount: 1\nsecret:\n  tokens: t\n").unwrap();
    assert!(of_kind(&helm_template(Some(&values)), "PodDisruptionBudget").is_empty());
    std::fs::write(&values, "replicaCount: 2\nsecret:\n  tokens: t\n").unwrap();
    let rendered = helm_template(Some(&values));
    let budget = one(&rendered, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
}

/// The mounts of the first container of a pod spec that have a volume in it: name → (path,
/// volume).
fn mounted(pod: &Value) -> BTreeMap<String, (String, Value)> {
    let volumes = pod["volumes"].as_sequence().unwrap();
    pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|m| {
            // The StatefulSet's spool comes from its claim template, not a volume.
            let volume = volumes.iter().find(|v| v["name"] == m["name"])?;
            Some((text(&m["name"]), (text(&m["mountPath"]), volume.clone())))
        })
        .collect()
}

#[test]
#[ignore = "needs helm; .ci/run runs it"]
fn the_helm_chart_reaches_a_sasl_ssl_kafka_with_a_private_ca_from_existing_secrets() {
    let work = tempfile::tempdir().unwrap();
    let values = work.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
secret: {existingSecret: bridge-credentials}
kafka:
  brokers: [kafka-bootstrap.kafka.svc:9093]
  properties:
    security.protocol: SASL_SSL
    sasl.mechanisms: SCRAM-SHA-512
    sasl.username: comm100-bridge
  caSecret: {name: kafka-cluster-ca-cert}
extraEnv:
  - {name: COMM100_BRIDGE__LOG__LEVEL, value: debug}
extraVolumes:
  - name: kafka-client
    secret: {secretName: bridge-kafka-user}
extraVolumeMounts:
  - {name: kafka-client, mountPath: /etc/comm100-bridge-kafka-client, readOnly: true}
spoolDrain: {ordinals: [1]}
"#,
    )
    .unwrap();
    let objects = helm_template(Some(&values));
    assert!(
        of_kind(&objects, "Secret").is_empty(),
        "the Secrets are the operator's"
    );

    // The pod runs with the CA file librdkafka reads, the password file and the extra
    // environment: check-config (which builds the producer) passes with a real CA there,
    // and fails with anything else in its place.
    let ca = rcgen::generate_simple_self_signed(vec!["kafka.test".to_owned()])
        .unwrap()
        .cert
        .pem();
    let config = effective_config_with(&objects, &[("ca.crt", &ca)]);
    let kafka = &config["kafka"];
    // (the mount's path, under the stand-in directory the check ran with)
    let ca_location = kafka["properties"]["ssl.ca.location"].as_str().unwrap();
    assert!(
        ca_location.ends_with("/etc/comm100-bridge-kafka-ca/ca.crt"),
        "{ca_location}"
    );
    assert_eq!(
        kafka["properties"]["security.protocol"].as_str(),
        Some("SASL_SSL")
    );
    assert_eq!(config["log"]["level"].as_str(), Some("debug"));
    let refused = pod_check_config(&objects, &[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("kafka.properties.ssl.ca.location"),
        "a CA file that is not a certificate passed check-config: {said}"
    );

    // The bridge and the spool drain Job mount the same: the CA Secret's key, the
    // operator's Secret, and the extra volume.
    let statefulset = one(&objects, "StatefulSet");
    let job = one(&objects, "Job");
    for pod in [
        &statefulset["spec"]["template"]["spec"],
        &job["spec"]["template"]["spec"],
    ] {
        let mounts = mounted(pod);
        let (path, volume) = &mounts["kafka-ca"];
        assert_eq!(path, "/etc/comm100-bridge-kafka-ca");
        assert_eq!(
            text(&volume["secret"]["secretName"]),
            "kafka-cluster-ca-cert"
        );
        assert_eq!(text(&volume["secret"]["items"][0]["key"]), "ca.crt");
        let (path, volume) = &mounts["kafka-client"];
        assert_eq!(path, "/etc/comm100-bridge-kafka-client");
        assert_eq!(text(&volume["secret"]["secretName"]), "bridge-kafka-user");
        assert_eq!(
            text(&mounts["secret"].1["secret"]["secretName"]),
            "bridge-credentials"
        );
        let env = pod["containers"][0]["env"].as_sequence().unwrap();
        let value = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .map(|e| text(&e["value"]))
        };
        assert_eq!(
            value("COMM100_BRIDGE__KAFKA__PROPERTIES__SSL_CA_LOCATION").as_deref(),
            Some("/etc/comm100-bridge-kafka-ca/ca.crt")
        );
        assert_eq!(
            value("COMM100_BRIDGE__KAFKA__PROPERTIES__SASL_PASSWORD_FILE").as_deref(),
            Some("/run/secrets/comm100-bridge/kafka-password")
        );
        assert_eq!(
            value("COMM100_BRIDGE__LOG__LEVEL").as_deref(),
            Some("debug")
        );
    }

    // ssl.ca.location given twice is refused at render time.
    std::fs::write(
        &values,
        "secret: {tokens: t}\nkafka: {caSecret: {name: ca}, properties: {ssl.ca.location: /x}}\n",
    )
    .unwrap();
    let chart = repo(CHART);
    let refused = Command::new("helm")
        .args(["template", "b", chart.to_str().unwrap(), "--values"])
        .arg(&values)
        .run()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("kafka.caSecret sets ssl.ca.location"),
        "{said}"
    );
}

#[test]
#[ignore = "needs helm and kustomize or kubectl; .ci/run runs it"]
fn the_readmes_helm_and_kubectl_commands_render() {
    use crate::commands::{bash, block};
    // `helm install` as written, rendered by `helm template` with the same arguments.
    let install = block(
        "README.md",
        "helm install comm100-bridge deploy/helm/comm100-bridge \\",
    );
    assert!(install.starts_with("helm install "), "{install}");
    let rendered = yaml_documents(&bash(
        &install.replacen("helm install", "helm template", 1),
        &[],
    ));
    check(&rendered, "registry.example.com/comm100-bridge:0.2.0", true);
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            one(&rendered, kind)["metadata"]["labels"]["release"].as_str(),
            Some("kube-prometheus-stack"),
            "{kind}: the README's command gives Prometheus no {kind} it selects"
        );
    }
    let kafka = &effective_config(&rendered)["kafka"];
    assert_eq!(
        kafka["brokers"],
        toml::Value::try_from(["kafka-0.kafka:9092", "kafka-1.kafka:9092"]).unwrap()
    );

    // Every `kubectl apply -k` of the kustomize steps builds (`kubectl create` needs a cluster).
    let steps = block("README.md", "kubectl create namespace comm100");
    let mut applied = 0;
    for line in steps.lines() {
        let command = line.split(" #").next().unwrap().trim();
        if let Some(dir) = command.strip_prefix("kubectl apply -k ") {
            assert!(!kustomize(dir).is_empty(), "{dir}");
            applied += 1;
        } else {
            assert!(
                command.starts_with("kubectl ") && command.contains(" create "),
                "{line}"
            );
        }
    }
    assert_eq!(applied, 2, "{steps}");
}

#[test]
#[ignore = "needs helm; .ci/run runs it"]
fn the_helm_chart_creates_the_topics_by_hook_or_strimzi_with_a_user_that_may_only_write() {
    let work = tempfile::tempdir().unwrap();
    let token_only = work.path().join("token.yaml");
    std::fs::write(&token_only, "secret: {tokens: t}\n").unwrap();
    let defaults = helm_template(Some(&token_only));
    for kind in ["KafkaTopic", "KafkaUser"] {
        assert!(of_kind(&defaults, kind).is_empty(), "{kind} by default");
    }
    assert!(
        of_kind(&defaults, "Job").is_empty(),
        "a topics Job by default"
    );

    let values = work.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
secret: {tokens: t}
topics:
  prefix: acme
  partitions: 12
  replicationFactor: 3
  config: {min.insync.replicas: "2"}
  ensureJob: {enabled: true}
  strimzi: {enabled: true, cluster: prod, user: {enabled: true}}
"#,
    )
    .unwrap();
    let objects = helm_template(Some(&values));
    // The bridge runs with the same settings: what it checks and would create.
    let config = effective_config(&objects);
    assert_eq!(config["topics"]["prefix"].as_str(), Some("acme"));
    assert_eq!(config["topics"]["partitions"].as_integer(), Some(12));
    assert_eq!(config["topics"]["replication_factor"].as_integer(), Some(3));
    assert_eq!(
        config["topics"]["config"]["min.insync.replicas"].as_str(),
        Some("2")
    );
    let mut bridge_config =
        comm100_bridge::config::Config::load_with_env(None, Some(Default::default())).unwrap();
    bridge_config.topics.prefix = "acme".into();
    let mut expected = comm100_bridge::topics::expected(&bridge_config);
    expected.sort();

    // The hook Job: `topics ensure` with the bridge's environment and files.
    let job = one(&objects, "Job");
    let hook = text(&job["metadata"]["annotations"]["helm.sh/hook"]);
    assert!(
        hook.contains("post-install") && hook.contains("post-upgrade"),
        "{hook}"
    );
    let pod = &job["spec"]["template"]["spec"];
    let args: Vec<String> = pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(
        args,
        [
            "topics",
            "ensure",
            "--config",
            "/etc/comm100-bridge/bridge.toml"
        ]
    );
    let statefulset = one(&objects, "StatefulSet");
    let bridge_pod = &statefulset["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["env"],
        bridge_pod["containers"][0]["env"]
    );
    let mounts = mounted(pod);
    assert!(
        mounts.contains_key("config") && mounts.contains_key("secret"),
        "{mounts:?}"
    );

    // Strimzi: a KafkaTopic per topic the bridge expects, with the settings.
    let topics = of_kind(&objects, "KafkaTopic");
    let mut names: Vec<String> = topics
        .iter()
        .map(|t| text(&t["spec"]["topicName"]))
        .collect();
    names.sort();
    assert_eq!(names, expected);
    for topic in &topics {
        assert_eq!(
            text(&topic["metadata"]["labels"]["strimzi.io/cluster"]),
            "prod"
        );
        assert_eq!(topic["spec"]["partitions"].as_u64(), Some(12));
        assert_eq!(topic["spec"]["replicas"].as_u64(), Some(3));
        assert_eq!(text(&topic["spec"]["config"]["min.insync.replicas"]), "2");
    }
    // Its user may write to those topics, and do nothing else.
    let user = one(&objects, "KafkaUser");
    assert_eq!(
        text(&user["spec"]["authentication"]["type"]),
        "scram-sha-512"
    );
    let acls = user["spec"]["authorization"]["acls"].as_sequence().unwrap();
    let mut granted: Vec<String> = acls
        .iter()
        .map(|acl| {
            assert_eq!(text(&acl["resource"]["type"]), "topic");
            assert_eq!(text(&acl["resource"]["patternType"]), "literal");
            let operations: Vec<String> = acl["operations"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(text)
                .collect();
            assert_eq!(operations, ["Write"]);
            text(&acl["resource"]["name"])
        })
        .collect();
    granted.sort();
    assert_eq!(granted, expected);
}

#[test]
#[ignore = "needs helm; .ci/run runs it"]
fn the_helm_chart_frames_values_for_a_schema_registry_and_can_register_the_schemas_first() {
    let work = tempfile::tempdir().unwrap();
    let values = work.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
secret: {tokens: t, schemaRegistryPassword: registry-secret}
kafka: {valueFormat: json_sr}
schemaRegistry:
  url: https://registry.example:8081
  username: bridge-key
  registerOnStart: true
  compatibility: BACKWARD
"#,
    )
    .unwrap();
    let objects = helm_template(Some(&values));
    // The bridge runs framed, with the registry, its user and the password from its file.
    let config = effective_config(&objects);
    assert_eq!(config["kafka"]["value_format"].as_str(), Some("json_sr"));
    let registry = &config["schema_registry"];
    assert_eq!(
        registry["url"].as_str(),
        Some("https://registry.example:8081")
    );
    assert_eq!(registry["username"].as_str(), Some("bridge-key"));
    assert_eq!(
        registry["password"].as_str(),
        Some("<redacted>"),
        "the password read from the Secret's file: {registry:?}"
    );
    assert!(registry.get("password_file").is_none(), "{registry:?}");

    // Before it, an init container registers the schemas with the bridge's own settings.
    let statefulset = one(&objects, "StatefulSet");
    let pod = &statefulset["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    let args: Vec<String> = init["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(
        args,
        [
            "schemas",
            "register",
            "--compatibility",
            "BACKWARD",
            "--config",
            "/etc/comm100-bridge/bridge.toml"
        ]
    );
    assert_eq!(init["env"], pod["containers"][0]["env"]);
    let mounts: Vec<String> = init["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| text(&m["name"]))
        .collect();
    assert!(
        mounts.contains(&"config".to_owned()) && mounts.contains(&"secret".to_owned()),
        "{mounts:?}"
    );

    // By default: plain JSON, no init container; json_sr without a URL does not render.
    std::fs::write(&values, "secret: {tokens: t}\n").unwrap();
    let defaults = helm_template(Some(&values));
    let pod = &one(&defaults, "StatefulSet")["spec"]["template"]["spec"];
    assert!(pod.get("initContainers").is_none());
    assert_eq!(
        effective_config(&defaults)["kafka"]["value_format"].as_str(),
        Some("json")
    );
    std::fs::write(
        &values,
        "secret: {tokens: t}\nkafka: {valueFormat: json_sr}\n",
    )
    .unwrap();
    let chart = repo(CHART);
    let refused = Command::new("helm")
        .args(["template", "bridge", chart.to_str().unwrap(), "--values"])
        .arg(&values)
        .run()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs schemaRegistry.url"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
