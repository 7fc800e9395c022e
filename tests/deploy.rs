//! The deployment files: the cluster manifests parse as the Kubernetes types they claim to be,
//! grant exactly the least privilege the actuator and scraper need, and carry a configuration the
//! binary accepts; the compose stack's stages and settings exist.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn docs(rel: &str) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = serde_yaml_ng::Value::deserialize(d).unwrap();
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

fn graphscaler(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_graphscaler"));
    c.args(args).current_dir(repo());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn grants(rules: &[PolicyRule]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.clone().unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                for v in &r.verbs {
                    out.insert(format!("{g}/{res}:{v}"));
                }
            }
        }
    }
    out
}

#[test]
fn cluster_manifests_are_typed_least_privilege_and_configured() {
    // Roles by (namespace or "" for cluster-wide, name) and which service accounts they bind.
    let mut roles: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut bound: Vec<(String, String)> = vec![];
    let mut no_token = BTreeSet::new();
    let mut config = None;
    let mut stages = vec![];
    for d in docs("deploy/kubernetes/graphscaler.yaml") {
        let kind = d["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "ClusterRole" => {
                let r: ClusterRole = serde_yaml_ng::from_value(d).unwrap();
                let key = format!("cluster/{}", r.metadata.name.unwrap());
                roles.insert(key, grants(&r.rules.unwrap_or_default()));
            }
            "Role" => {
                let r: Role = serde_yaml_ng::from_value(d).unwrap();
                let key = format!(
                    "{}/{}",
                    r.metadata.namespace.unwrap(),
                    r.metadata.name.unwrap()
                );
                roles.insert(key, grants(&r.rules.unwrap_or_default()));
            }
            "ClusterRoleBinding" => {
                let b: ClusterRoleBinding = serde_yaml_ng::from_value(d).unwrap();
                for sub in b.subjects.unwrap() {
                    bound.push((sub.name, format!("cluster/{}", b.role_ref.name)));
                }
            }
            "RoleBinding" => {
                let b: RoleBinding = serde_yaml_ng::from_value(d).unwrap();
                let ns = b.metadata.namespace.unwrap();
                for sub in b.subjects.unwrap() {
                    bound.push((sub.name, format!("{ns}/{}", b.role_ref.name)));
                }
            }
            "ServiceAccount" => {
                let sa: ServiceAccount = serde_yaml_ng::from_value(d).unwrap();
                if sa.automount_service_account_token == Some(false) {
                    no_token.insert(sa.metadata.name.unwrap());
                }
            }
            "ConfigMap" => {
                let c: ConfigMap = serde_yaml_ng::from_value(d).unwrap();
                config = c.data.unwrap().get("graphscaler.toml").cloned();
            }
            "Deployment" => {
                let dep: Deployment = serde_yaml_ng::from_value(d).unwrap();
                let pod = dep.spec.template.spec.unwrap();
                let psc = pod.security_context.unwrap();
                assert_eq!(psc.run_as_non_root, Some(true));
                assert_eq!(
                    psc.seccomp_profile.map(|p| p.type_),
                    Some("RuntimeDefault".to_string())
                );
                // One stage per Deployment, under its own service account.
                assert_eq!(pod.containers.len(), 1);
                for c in pod.containers {
                    let stage = c.args.clone().unwrap().last().unwrap().clone();
                    assert_eq!(
                        pod.service_account_name.as_deref(),
                        Some(format!("graphscaler-{stage}").as_str())
                    );
                    if stage == "graph" || stage == "policy" {
                        assert_eq!(pod.automount_service_account_token, Some(false), "{stage}");
                    }
                    // Pinned images: the slim one (no libtorch) but for the policy stage.
                    let image = c.image.clone().unwrap();
                    let version = env!("CARGO_PKG_VERSION");
                    let want = if stage == "policy" {
                        format!("ghcr.io/graphscaler/graphscaler:{version}")
                    } else {
                        format!("ghcr.io/graphscaler/graphscaler:{version}-slim")
                    };
                    assert_eq!(image, want, "{stage}");
                    let sc = c.security_context.clone().unwrap();
                    assert_eq!(sc.allow_privilege_escalation, Some(false), "{stage}");
                    assert_eq!(sc.read_only_root_filesystem, Some(true), "{stage}");
                    assert_eq!(
                        sc.capabilities.and_then(|c| c.drop),
                        Some(vec!["ALL".to_string()]),
                        "{stage}"
                    );
                    // Probes on the port the stage serves its metrics on.
                    let listen = c
                        .env
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .find(|e| e.name == "GRAPHSCALER_PIPELINE__METRICS_LISTEN")
                        .and_then(|e| e.value)
                        .unwrap_or_else(|| panic!("{stage}: no metrics_listen"));
                    let port: i32 = listen.rsplit(':').next().unwrap().parse().unwrap();
                    let declared: Vec<i32> = c
                        .ports
                        .clone()
                        .unwrap_or_default()
                        .iter()
                        .map(|p| p.container_port)
                        .collect();
                    assert_eq!(declared, [port], "{stage}");
                    for (probe, path) in [
                        (c.liveness_probe.clone(), "/healthz"),
                        (c.readiness_probe.clone(), "/readyz"),
                    ] {
                        let get = probe
                            .and_then(|p| p.http_get)
                            .unwrap_or_else(|| panic!("{stage}: no {path} probe"));
                        assert_eq!(get.path.as_deref(), Some(path), "{stage}");
                        assert_eq!(
                            get.port,
                            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port),
                            "{stage}"
                        );
                    }
                    stages.push(stage);
                }
            }
            "Namespace" => {}
            other => panic!("unexpected kind {other}"),
        }
    }
    // Every service account's grants: what its bindings' roles allow.
    let of = |sa: &str| -> BTreeSet<String> {
        bound
            .iter()
            .filter(|(s, _)| s == sa)
            .flat_map(|(_, r)| roles[r].iter().cloned())
            .collect()
    };
    let want = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let read_cluster = [
        "/nodes:get",
        "/nodes:list",
        "/nodes:watch",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
    ];
    let mut scrape = want(&read_cluster);
    scrape.extend(want(&[
        "apps/deployments:get",
        "apps/deployments:list",
        "apps/deployments:watch",
    ]));
    assert_eq!(of("graphscaler-scrape"), scrape, "scrape: read only");
    let mut actuate = want(&read_cluster);
    actuate.extend(want(&[
        "apps/deployments:get",
        "apps/deployments:patch",
        "apps/deployments/scale:get",
        "apps/deployments/scale:patch",
        "/pods/resize:patch",
        // Its leader election's Lease, in graphscaler's namespace only (below).
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:create",
        "coordination.k8s.io/leases:update",
    ]));
    assert_eq!(
        of("graphscaler-actuate"),
        actuate,
        "actuate: the only one that patches"
    );
    for sa in ["graphscaler-graph", "graphscaler-policy"] {
        assert!(of(sa).is_empty(), "{sa} is granted {:?}", of(sa));
        assert!(no_token.contains(sa), "{sa} mounts a token");
    }
    // The lease role is graphscaler's own namespace's, and the configuration names it.
    let lease_roles: Vec<&String> = roles
        .iter()
        .filter(|(_, g)| g.iter().any(|x| x.contains("leases")))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(lease_roles, ["graphscaler/graphscaler-actuate-lease"]);
    // Only the managed namespace's roles patch anything.
    for (name, g) in &roles {
        if g.iter().any(|x| x.ends_with(":patch")) {
            assert_eq!(name, "boutique/graphscaler-scale");
        }
    }
    assert_eq!(stages, ["scrape", "graph", "policy", "actuate"]);
    // The binary accepts the ConfigMap's configuration.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("graphscaler.toml");
    std::fs::write(&f, config.unwrap()).unwrap();
    let o = graphscaler(&["--config", f.to_str().unwrap(), "config"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(shown.contains("kiali.istio-system"), "{shown}");
    assert!(shown.contains("dry_run = true"), "{shown}");
    assert!(shown.contains("[pipeline.lease]"), "{shown}");
}

#[test]
fn the_compose_stack_names_real_stages_and_settings() {
    let d = &docs("docker-compose.yml")[0];
    let services = d["services"].as_mapping().unwrap();
    for name in [
        "kafka",
        "prometheus",
        "twin",
        "scrape",
        "graph",
        "policy",
        "actuate",
    ] {
        assert!(services.contains_key(name), "{name}");
    }
    for stage in ["scrape", "graph", "policy", "actuate"] {
        let s = &d["services"][stage];
        let cmd: Vec<String> = serde_yaml_ng::from_value(s["command"].clone()).unwrap();
        let env: std::collections::BTreeMap<String, String> =
            serde_yaml_ng::from_value(s["environment"].clone()).unwrap();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Every variable is a real setting (unknown keys are refused), and the stage exists.
        let o = graphscaler(&["config"], &pairs);
        assert!(
            o.status.success(),
            "{stage}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = graphscaler(&[cmd[0].as_str(), "--help"], &[]);
        assert!(o.status.success(), "{stage}");
    }
    // Nothing is published beyond loopback (the twin's API is unauthenticated).
    for (name, s) in services {
        for port in s["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(port.starts_with("127.0.0.1:"), "{name:?} publishes {port}");
        }
    }
    // Scrape, graph, actuate and the twin run the slim image (built without libtorch); the
    // policy stage the full one, which can serve a learned policy.
    for slim in ["scrape", "graph", "actuate", "twin"] {
        let s = &d["services"][slim];
        assert_eq!(s["image"].as_str(), Some("graphscaler:slim"), "{slim}");
        assert_eq!(s["build"]["target"].as_str(), Some("slim"), "{slim}");
    }
    assert_eq!(
        d["services"]["policy"]["image"].as_str(),
        Some("graphscaler:local")
    );
    // The stack serves the learned policy, with the HPA declared as its fallback; Kafka
    // advertises a listener for the host, published on loopback.
    let env = &d["services"]["policy"]["environment"];
    assert_eq!(
        env["GRAPHSCALER_PIPELINE__POLICY"].as_str(),
        Some("gat-ppo")
    );
    assert_eq!(
        env["GRAPHSCALER_PIPELINE__FALLBACK_POLICY"].as_str(),
        Some("hpa")
    );
    let kafka = &d["services"]["kafka"];
    let advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .unwrap();
    assert!(advertised.contains("HOST://127.0.0.1:9094"), "{advertised}");
    let published: Vec<String> = serde_yaml_ng::from_value(kafka["ports"].clone()).unwrap();
    assert_eq!(published, ["127.0.0.1:9094:9094"]);
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for line in [
        "AS build-slim",
        "cargo build --release --locked --no-default-features --bin graphscaler",
        "FROM debian:bookworm-slim AS slim",
        "COPY --from=build-slim /src/target/release/graphscaler /usr/local/bin/graphscaler",
        "FROM slim AS full",
        "COPY --from=build /src/target/release/graphscaler-learn /usr/local/bin/graphscaler-learn",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile lacks `{line}`");
    }
    let slim =
        &dockerfile[dockerfile.find("AS slim").unwrap()..dockerfile.find("AS full").unwrap()];
    assert!(
        !slim.contains("libtorch") && !slim.contains("checkpoints"),
        "the slim image ships no libtorch and no model: {slim}"
    );
    // librdkafka is built with TLS and SASL against the system OpenSSL: the runtime has it.
    assert!(slim.contains("libssl3"), "{slim}");
    let twin: Vec<String> =
        serde_yaml_ng::from_value(d["services"]["twin"]["command"].clone()).unwrap();
    let args: Vec<&str> = twin.iter().map(String::as_str).collect();
    assert_eq!(&args[..2], ["twin", "serve"]);
    let mut help = args[..2].to_vec();
    help.push("--help");
    assert!(graphscaler(&help, &[]).status.success());
    // Every stage's healthcheck probes its own /readyz with a command the binary has.
    for name in ["scrape", "graph", "policy", "actuate"] {
        let st = &d["services"][name];
        let listen = st["environment"]["GRAPHSCALER_PIPELINE__METRICS_LISTEN"]
            .as_str()
            .unwrap();
        let port = listen.rsplit(':').next().unwrap();
        let test: Vec<String> =
            serde_yaml_ng::from_value(st["healthcheck"]["test"].clone()).unwrap();
        assert_eq!(
            test,
            [
                "CMD".to_string(),
                "graphscaler".into(),
                "probe".into(),
                format!("http://127.0.0.1:{port}/readyz")
            ],
            "{name}"
        );
    }
    let o = graphscaler(&["probe", "--help"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The Prometheus configuration scrapes the twin at the address compose gives it.
    let prom = std::fs::read_to_string(repo().join("config/prometheus/prometheus.yml")).unwrap();
    assert!(prom.contains("twin:8080") && twin.iter().any(|a| a == "0.0.0.0:8080"));
}
