//! Deploy files and docs against the binaries: manifests parse and reference each other
//! correctly, the compose file parses, and every flag and environment variable that `deploy/`
//! or the docs use exists in the binaries' clap definitions (read from `--help`).

use serde_yaml_ng::Value;
use sluice_testkit::paths::{existing_bin, workspace_root};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const BINARIES: [(&str, &[&str]); 5] = [
    ("ingest-consumer", &["run", "migrate"]),
    ("feedback-worker", &["run", "migrate"]),
    ("occurrence-consumer", &["run", "migrate"]),
    ("producer-shim", &["serve", "migrate"]),
    (
        "sluice",
        &[
            "migrate",
            "org create",
            "org list",
            "project create",
            "project list",
            "cleanup",
            "dlq list",
            "dlq show",
            "dlq replay",
            "token create",
            "token list",
            "token revoke",
            "webhook add",
            "webhook list",
            "webhook remove",
            "api",
            "edge",
            "run",
            "key create",
            "key list",
            "key disable",
            "key enable",
        ],
    ),
];

/// flag → env var, per binary (from every subcommand's help).
fn clap_flags() -> anyhow::Result<BTreeMap<String, BTreeMap<String, Option<String>>>> {
    let mut out = BTreeMap::new();
    for (bin, subs) in BINARIES {
        let mut flags = BTreeMap::new();
        let mut helps = vec![vec!["--help"]];
        helps.extend(subs.iter().map(|s| {
            let mut args: Vec<&str> = s.split(' ').collect();
            args.push("--help");
            args
        }));
        for args in helps {
            let o = Command::new(existing_bin(bin)?)
                .args(&args)
                .env_clear()
                .output()?;
            anyhow::ensure!(o.status.success(), "{bin} {args:?} failed");
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            // Entries start with a line whose first non-blank text is "-x" or "--flag".
            let mut entries: Vec<String> = Vec::new();
            for line in text.lines() {
                let t = line.trim_start();
                if t.starts_with("--")
                    || (t.starts_with('-') && t.len() > 1 && !t.starts_with("- "))
                {
                    entries.push(t.to_owned());
                } else if let Some(last) = entries.last_mut() {
                    last.push(' ');
                    last.push_str(t);
                }
            }
            for e in entries {
                let Some(start) = e.find("--") else { continue };
                let flag: String = e[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                let env = e.find("[env: ").map(|i| {
                    e[i + 6..]
                        .chars()
                        .take_while(|c| *c != '=' && *c != ']')
                        .collect()
                });
                flags.insert(flag, env);
            }
        }
        out.insert(bin.to_owned(), flags);
    }
    Ok(out)
}

fn docs(path: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(workspace_root().join(path))?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v = Value::deserialize(doc).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        v.apply_merge()?;
        out.push(v);
    }
    Ok(out)
}

use serde::Deserialize;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    s(v, path).and_then(Value::as_str).unwrap_or_default()
}

/// The renders checked: every overlay, and overlays with more components, in the order a user
/// may list them.
const RENDERS: [&str; 5] = [
    "overlays/production",
    "overlays/development",
    "overlays/example-split-ingest",
    "production+kafka-auth",
    "production+kafka-auth+split-ingest",
];

/// The overlay and the components a composed render of [`RENDERS`] adds to its list, in order
/// after the overlay's own.
fn composition(which: &str) -> Option<(&'static str, &'static [&'static str])> {
    match which {
        "production+kafka-auth" => Some(("overlays/production", &["components/keda-kafka-auth"])),
        "production+kafka-auth+split-ingest" => Some((
            "overlays/production",
            &[
                "components/keda-kafka-auth",
                "components/split-ingest",
                "components/split-ingest-keda",
            ],
        )),
        _ => None,
    }
}

/// `kubectl kustomize` of one of [`RENDERS`], parsed. A composed render is a copy of its
/// overlay with more components, as a user's copy of the overlay would list them.
fn render(which: &str) -> anyhow::Result<Vec<Value>> {
    let root = workspace_root().join("deploy/k8s");
    let dir = match composition(which) {
        Some((overlay, components)) => {
            let dir = tempfile::tempdir_in(workspace_root().join("target"))?;
            let from = root.join(overlay);
            for entry in std::fs::read_dir(&from)? {
                let entry = entry?;
                std::fs::copy(entry.path(), dir.path().join(entry.file_name()))?;
            }
            // The copy sits two levels under the workspace root.
            let k = std::fs::read_to_string(from.join("kustomization.yaml"))?
                .replace("../../base", "../../deploy/k8s/base")
                .replace("../../components", "../../deploy/k8s/components");
            // After the overlay's own components, which end where `images:` begins.
            let mut extra = String::new();
            for c in components {
                extra.push_str(&format!("  - ../../deploy/k8s/{c}\n"));
            }
            anyhow::ensure!(
                k.contains("\ncomponents:\n") && k.contains("\nimages:\n"),
                "{overlay} lists components, then images"
            );
            let k = k.replacen("\nimages:\n", &format!("\n{extra}images:\n"), 1);
            std::fs::write(dir.path().join("kustomization.yaml"), k)?;
            Some(dir)
        }
        None => None,
    };
    let path = dir
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_else(|| root.join(which));
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .map_err(|e| anyhow::anyhow!("kubectl (for `kubectl kustomize`) is needed: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl kustomize {which}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        docs.push(Value::deserialize(doc)?);
    }
    anyhow::ensure!(docs.len() > 10, "{which} renders resources");
    Ok(docs)
}

/// Every rendered resource of every render.
fn k8s() -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    for r in RENDERS {
        all.extend(render(r)?);
    }
    Ok(all)
}

fn seq(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_sequence).cloned().unwrap_or_default()
}

/// The pod spec of a workload (Deployment, StatefulSet, Job, CronJob).
fn pod_spec(d: &Value) -> Option<&Value> {
    s(d, &["spec", "template", "spec"])
        .or_else(|| s(d, &["spec", "jobTemplate", "spec", "template", "spec"]))
}

/// The labels of a workload's pods.
fn pod_labels(d: &Value) -> Option<&Value> {
    s(d, &["spec", "template", "metadata", "labels"]).or_else(|| {
        s(
            d,
            &[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "metadata",
                "labels",
            ],
        )
    })
}

/// Whether a label selector (`matchLabels` and `matchExpressions` with In, NotIn, Exists,
/// DoesNotExist) selects a set of labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = selector
        .get("matchLabels")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .all(|(k, v)| k.as_str().is_some_and(|k| label(k) == v.as_str()))
        })
        .unwrap_or(true);
    let by_expression = seq(selector.get("matchExpressions")).iter().all(|e| {
        let value = label(str_of(e, &["key"]));
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_sequence)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match str_of(e, &["operator"]) {
            "In" => value.is_some_and(|v| values.contains(&v)),
            "NotIn" => !value.is_some_and(|v| values.contains(&v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

/// Pod Security Standards, profile "restricted" (which includes "baseline"): the violations of
/// one pod spec, empty when it passes.
fn restricted_violations(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if s(spec, &[host]).and_then(Value::as_bool) == Some(true) {
            out.push(format!("{host} is set"));
        }
    }
    const VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in seq(s(spec, &["volumes"])) {
        let kinds: Vec<String> = v
            .as_mapping()
            .map(|m| {
                m.keys()
                    .filter_map(Value::as_str)
                    .filter(|k| *k != "name")
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for k in kinds {
            if !VOLUMES.contains(&k.as_str()) {
                out.push(format!("volume type {k}"));
            }
        }
    }
    let pod_sc = s(spec, &["securityContext"])
        .cloned()
        .unwrap_or(Value::Null);
    if s(&pod_sc, &["runAsUser"]).and_then(Value::as_u64) == Some(0) {
        out.push("pod runs as uid 0".into());
    }
    if s(&pod_sc, &["sysctls"]).is_some() {
        out.push("pod sets sysctls".into());
    }
    let mut containers = seq(s(spec, &["containers"]));
    containers.extend(seq(s(spec, &["initContainers"])));
    for c in containers {
        let name = str_of(&c, &["name"]).to_owned();
        let sc = s(&c, &["securityContext"]).cloned().unwrap_or(Value::Null);
        let either = |k: &[&str]| s(&sc, k).or_else(|| s(&pod_sc, k)).cloned();
        if s(&sc, &["privileged"]).and_then(Value::as_bool) == Some(true) {
            out.push(format!("{name}: privileged"));
        }
        if s(&sc, &["allowPrivilegeEscalation"]).and_then(Value::as_bool) != Some(false) {
            out.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if either(&["runAsNonRoot"]).and_then(|v| v.as_bool()) != Some(true) {
            out.push(format!("{name}: runAsNonRoot is not true"));
        }
        if s(&sc, &["runAsUser"]).and_then(Value::as_u64) == Some(0) {
            out.push(format!("{name}: runs as uid 0"));
        }
        let seccomp = either(&["seccompProfile", "type"]);
        if !matches!(
            seccomp.as_ref().and_then(Value::as_str),
            Some("RuntimeDefault" | "Localhost")
        ) {
            out.push(format!(
                "{name}: seccompProfile is not RuntimeDefault or Localhost"
            ));
        }
        let drops = seq(s(&sc, &["capabilities", "drop"]));
        if !drops.iter().any(|d| d.as_str() == Some("ALL")) {
            out.push(format!("{name}: capabilities do not drop ALL"));
        }
        for add in seq(s(&sc, &["capabilities", "add"])) {
            if add.as_str() != Some("NET_BIND_SERVICE") {
                out.push(format!("{name}: adds capability {add:?}"));
            }
        }
        for p in seq(s(&c, &["ports"])) {
            if s(&p, &["hostPort"]).and_then(Value::as_u64).unwrap_or(0) != 0 {
                out.push(format!("{name}: hostPort"));
            }
        }
        if s(&sc, &["procMount"]).is_some_and(|v| v.as_str() != Some("Default")) {
            out.push(format!("{name}: procMount"));
        }
    }
    out
}

/// The image of a container without its tag.
fn image_tag(image: &str) -> Option<&str> {
    image.rsplit_once(':').map(|(_, t)| t)
}

#[test]
fn kubernetes_manifests_are_complete_and_consistent() -> anyhow::Result<()> {
    let stage_names: BTreeSet<String> = BINARIES
        .iter()
        .map(|(b, _)| b.to_string())
        .filter(|b| b != "sluice")
        .collect();
    for which in RENDERS {
        let all = render(which)?;
        let kind = |k: &str| {
            all.iter()
                .filter(|d| str_of(d, &["kind"]) == k)
                .collect::<Vec<_>>()
        };
        let names = |k: &str| {
            kind(k)
                .iter()
                .map(|d| str_of(d, &["metadata", "name"]).to_owned())
                .collect::<BTreeSet<_>>()
        };
        let ours = |d: &&Value| {
            s(
                d,
                &[
                    "spec",
                    "template",
                    "metadata",
                    "labels",
                    "app.kubernetes.io/name",
                ],
            )
            .and_then(Value::as_str)
                == Some("sluice")
        };
        let deployments: Vec<&Value> = kind("Deployment").into_iter().filter(ours).collect();
        let deployment_names: BTreeSet<String> = deployments
            .iter()
            .map(|d| str_of(d, &["metadata", "name"]).to_owned())
            .collect();
        assert!(
            stage_names.is_subset(&deployment_names),
            "{which}: a Deployment per stage"
        );
        let production = which != "overlays/development";
        assert_eq!(
            names("CronJob"),
            BTreeSet::from(["sluice-cleanup".to_owned()]),
            "{which}"
        );
        assert!(names("Service").contains("producer-shim"), "{which}");
        if production {
            assert!(names("Secret").is_empty(), "{which}: ships no Secret");
            assert_eq!(kind("ServiceMonitor").len(), 1, "{which}");
            assert_eq!(kind("PrometheusRule").len(), 1, "{which}");
            assert!(!kind("NetworkPolicy").is_empty(), "{which}");
        }

        // The NetworkPolicies reach every pod that runs sluice's image (stages, migrate, topics,
        // cleanup), and no other.
        let policies = kind("NetworkPolicy");
        if !policies.is_empty() {
            for d in &all {
                let Some(spec) = pod_spec(d) else { continue };
                let runs_sluice = seq(s(spec, &["containers"])).iter().any(|c| {
                    let bin = s(c, &["command"])
                        .and_then(|c| c.get(0))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    BINARIES.iter().any(|(b, _)| *b == bin)
                }) || str_of(d, &["metadata", "name"])
                    .starts_with("sluice-topics");
                let labels = pod_labels(d).cloned().unwrap_or(Value::Null);
                for policy in ["sluice-default-deny", "sluice-egress"] {
                    let selector = policies
                        .iter()
                        .find(|p| str_of(p, &["metadata", "name"]) == policy)
                        .and_then(|p| s(p, &["spec", "podSelector"]))
                        .ok_or_else(|| anyhow::anyhow!("{which}: NetworkPolicy {policy}"))?;
                    assert_eq!(
                        selects(selector, &labels),
                        runs_sluice,
                        "{which}: {policy} selects {} {} exactly when it runs sluice ({labels:?})",
                        str_of(d, &["kind"]),
                        str_of(d, &["metadata", "name"])
                    );
                }
            }
        }

        // Pod Security "restricted" for every pod, in a namespace that enforces it.
        for d in &all {
            if let Some(spec) = pod_spec(d) {
                let v = restricted_violations(spec);
                assert!(
                    v.is_empty(),
                    "{which}: {} {} fails Pod Security restricted: {v:?}",
                    str_of(d, &["kind"]),
                    str_of(d, &["metadata", "name"])
                );
                assert_eq!(
                    s(spec, &["automountServiceAccountToken"]).and_then(Value::as_bool),
                    Some(false),
                    "{which}: {} mounts no service-account token",
                    str_of(d, &["metadata", "name"])
                );
            }
        }
        let ns = kind("Namespace");
        assert_eq!(ns.len(), 1, "{which}");
        assert_eq!(
            str_of(
                ns[0],
                &["metadata", "labels", "pod-security.kubernetes.io/enforce"]
            ),
            "restricted"
        );

        // One image for every container of ours; the migration Job is named after its tag.
        let mut images = BTreeSet::new();
        for d in &all {
            for c in seq(pod_spec(d).and_then(|p| s(p, &["containers"]))) {
                let bin = s(&c, &["command"])
                    .and_then(|c| c.get(0))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if BINARIES.iter().any(|(b, _)| *b == bin) {
                    images.insert(str_of(&c, &["image"]).to_owned());
                }
            }
        }
        assert_eq!(
            images.len(),
            1,
            "{which}: one image, named in one place: {images:?}"
        );
        let image = images.iter().next().cloned().unwrap_or_default();
        let tag = image_tag(&image).unwrap_or_default().to_owned();
        assert!(
            !tag.is_empty() && tag != "latest",
            "{which}: a pinned tag ({image})"
        );
        assert!(
            names("Job").contains(&format!("sluice-migrate-{tag}")),
            "{which}: the migration Job is named after the version: {:?}",
            names("Job")
        );

        let (configmaps, secrets) = (names("ConfigMap"), names("Secret"));
        let mut labels_of = BTreeMap::new();
        for d in &deployments {
            let name = str_of(d, &["metadata", "name"]);
            let spec = pod_spec(d).ok_or_else(|| anyhow::anyhow!("{name}: no pod spec"))?;
            labels_of.insert(
                name.to_owned(),
                s(d, &["spec", "template", "metadata", "labels"]).cloned(),
            );
            assert!(
                selects(
                    s(d, &["spec", "selector"]).unwrap_or(&Value::Null),
                    s(d, &["spec", "template", "metadata", "labels"]).unwrap_or(&Value::Null)
                ),
                "{name}: its selector selects its pods"
            );
            assert_eq!(
                s(d, &["spec", "strategy", "rollingUpdate", "maxUnavailable"])
                    .and_then(Value::as_u64),
                Some(0),
                "{which}: {name} keeps its old pods until the new ones are ready"
            );
            let grace = s(spec, &["terminationGracePeriodSeconds"])
                .and_then(Value::as_u64)
                .unwrap_or(30);
            assert!(
                grace > 40,
                "{name}: grace period {grace}s must exceed the 30 s drain deadline plus flush"
            );
            let c = s(spec, &["containers"])
                .and_then(|c| c.get(0))
                .ok_or_else(|| anyhow::anyhow!("{name}: no container"))?;
            let args = seq(s(c, &["command"]));
            let command: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
            // The web API and the SDK front door are `sluice api` and `sluice edge`, in the
            // Deployments `api` and `edge`; every other Deployment runs a stage and is named
            // after it.
            let web_api = command.first() == Some(&"sluice")
                && matches!(command.get(1), Some(&"api") | Some(&"edge"));
            let bin = if web_api {
                command.get(1).copied().unwrap_or_default()
            } else {
                command.first().copied().unwrap_or_default()
            };
            assert!(
                web_api || stage_names.contains(bin),
                "{which}: {name} runs a stage"
            );
            assert!(
                name.starts_with(bin),
                "{which}: Deployment {name} is named after its stage {bin}"
            );
            assert_eq!(
                str_of(c, &["livenessProbe", "httpGet", "path"]),
                "/health/live",
                "{name}"
            );
            assert_eq!(
                str_of(c, &["readinessProbe", "httpGet", "path"]),
                "/health/ready",
                "{name}"
            );
            assert_eq!(
                s(c, &["securityContext", "readOnlyRootFilesystem"]).and_then(Value::as_bool),
                Some(true),
                "{name}: read-only root file system"
            );
            if bin == "producer-shim" || web_api {
                assert!(
                    s(c, &["lifecycle", "preStop"]).is_some(),
                    "{which}: {name} keeps serving while its endpoint is removed"
                );
            }
            let probe_port = str_of(c, &["readinessProbe", "httpGet", "port"]);
            let ports = seq(s(c, &["ports"]));
            // The sluice-metrics Service (scraped by the ServiceMonitor) targets the port named
            // `metrics`: a Deployment without one is never scraped.
            assert!(
                ports.iter().any(|p| str_of(p, &["name"]) == "metrics"),
                "{which}: {name} has a port named metrics"
            );
            let metrics_port = ports
                .iter()
                .find(|p| str_of(p, &["name"]) == probe_port)
                .and_then(|p| s(p, &["containerPort"]).and_then(Value::as_u64))
                .ok_or_else(|| {
                    anyhow::anyhow!("{name}: probe port {probe_port} is not a named port")
                })?;
            let env = seq(s(c, &["env"]));
            let env_value = |k: &str| {
                env.iter()
                    .find(|e| str_of(e, &["name"]) == k)
                    .map(|e| str_of(e, &["value"]).to_owned())
            };
            // The web API serves its health and metrics on its own listener.
            let served_by = if web_api { "LISTEN" } else { "METRICS_ADDR" };
            assert_eq!(
                env_value(served_by),
                Some(format!("0.0.0.0:{metrics_port}")),
                "{name}: metrics served where probed"
            );
            assert!(
                s(c, &["resources", "requests", "cpu"]).is_some()
                    && s(c, &["resources", "requests", "memory"]).is_some()
                    && s(c, &["resources", "limits", "memory"]).is_some()
            );
            // Only the secrets the stage uses: the object store's only where attachments are.
            let mut secret_refs = Vec::new();
            for from in seq(s(c, &["envFrom"])) {
                if let Some(cm) = s(&from, &["configMapRef", "name"]).and_then(Value::as_str) {
                    assert!(configmaps.contains(cm), "{name}: ConfigMap {cm} exists");
                }
                if let Some(sec) = s(&from, &["secretRef", "name"]).and_then(Value::as_str) {
                    let optional =
                        s(&from, &["secretRef", "optional"]).and_then(Value::as_bool) == Some(true);
                    if !production && !optional {
                        assert!(
                            secrets.contains(sec),
                            "{which}: {name}: Secret {sec} exists"
                        );
                    }
                    secret_refs.push(sec.to_owned());
                }
            }
            assert!(
                secret_refs.iter().any(|r| r.starts_with("sluice-database")),
                "{name}: {secret_refs:?}"
            );
            assert_eq!(
                secret_refs
                    .iter()
                    .any(|r| r.starts_with("sluice-object-store")),
                bin == "ingest-consumer" || bin == "api",
                "{which}: {name} gets the object-store credentials only if it stores attachments \
                 or serves their downloads"
            );
            for v in seq(s(spec, &["volumes"])) {
                if let Some(cm) = s(&v, &["configMap", "name"]).and_then(Value::as_str) {
                    assert!(configmaps.contains(cm), "{name}: ConfigMap {cm} exists");
                }
            }
        }
        for pdb in kind("PodDisruptionBudget") {
            let sel = s(pdb, &["spec", "selector"])
                .cloned()
                .unwrap_or(Value::Null);
            assert_eq!(
                labels_of
                    .values()
                    .filter(|l| l.as_ref().is_some_and(|l| selects(&sel, l)))
                    .count(),
                1,
                "PDB {} selects a Deployment",
                str_of(pdb, &["metadata", "name"])
            );
            assert_eq!(
                str_of(pdb, &["spec", "unhealthyPodEvictionPolicy"]),
                "AlwaysAllow",
                "{which}: not-ready pods never block a drain"
            );
        }
        assert_eq!(
            kind("PodDisruptionBudget").len(),
            deployments.len(),
            "{which}: a PDB per Deployment"
        );

        // KEDA: every consumer Deployment scaled on every input topic, from the earliest offset,
        // with no replica count of its own.
        let scaled = kind("ScaledObject");
        if production {
            for d in &deployments {
                let name = str_of(d, &["metadata", "name"]);
                let c = pod_spec(d)
                    .and_then(|p| s(p, &["containers"]))
                    .and_then(|c| c.get(0))
                    .cloned()
                    .unwrap_or(Value::Null);
                let bin = s(&c, &["command"])
                    .and_then(|c| c.get(0))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                // HTTP services (producer-shim, the web API `sluice api`) are not consumers.
                if bin == "producer-shim" || bin == "sluice" {
                    continue;
                }
                assert!(
                    s(d, &["spec", "replicas"]).is_none(),
                    "{which}: {name} leaves its replica count to KEDA"
                );
                let inputs: BTreeSet<String> = match bin {
                    "ingest-consumer" => seq(s(&c, &["env"]))
                        .iter()
                        .find(|e| str_of(e, &["name"]) == "INPUT_TOPICS")
                        .map(|e| {
                            str_of(e, &["value"])
                                .split(',')
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_else(|| {
                            ["ingest-events", "ingest-attachments"]
                                .map(str::to_owned)
                                .into()
                        }),
                    "feedback-worker" => ["ingest-feedback-events".to_owned()].into(),
                    _ => ["ingest-occurrences".to_owned()].into(),
                };
                let so = scaled
                    .iter()
                    .find(|so| str_of(so, &["spec", "scaleTargetRef", "name"]) == name)
                    .ok_or_else(|| anyhow::anyhow!("{which}: {name} has a ScaledObject"))?;
                let mut topics = BTreeSet::new();
                for t in seq(s(so, &["spec", "triggers"])) {
                    assert_eq!(
                        str_of(&t, &["metadata", "consumerGroup"]),
                        bin,
                        "the binary's default group"
                    );
                    assert_eq!(str_of(&t, &["metadata", "offsetResetPolicy"]), "earliest");
                    topics.insert(str_of(&t, &["metadata", "topic"]).to_owned());
                }
                assert_eq!(
                    topics, inputs,
                    "{which}: {name} scales on each of its inputs"
                );
            }
        }
        // Every trigger authenticates with the one TriggerAuthentication, which reads the
        // Secret's keys only where the keda-kafka-auth component is added.
        if production {
            for so in &scaled {
                for t in seq(s(so, &["spec", "triggers"])) {
                    assert_eq!(
                        str_of(&t, &["authenticationRef", "name"]),
                        "sluice-kafka",
                        "{which}: {}",
                        str_of(so, &["metadata", "name"])
                    );
                }
            }
            let auth = kind("TriggerAuthentication");
            assert_eq!(auth.len(), 1, "{which}");
            assert_eq!(str_of(auth[0], &["metadata", "name"]), "sluice-kafka");
            let params: BTreeSet<String> = seq(s(auth[0], &["spec", "secretTargetRef"]))
                .iter()
                .map(|r| str_of(r, &["parameter"]).to_owned())
                .collect();
            if which.contains("kafka-auth") {
                let want = [
                    "sasl",
                    "username",
                    "password",
                    "tls",
                    "ca",
                    "cert",
                    "key",
                    "keyPassword",
                ];
                assert_eq!(params, want.map(str::to_owned).into(), "{which}");
            } else {
                assert!(params.is_empty(), "{which}: plaintext by default");
            }
        }
        let svc = kind("Service")
            .into_iter()
            .find(|d| str_of(d, &["metadata", "name"]) == "producer-shim");
        let mut sel = serde_yaml_ng::Mapping::new();
        if let Some(labels) = svc.and_then(|d| s(d, &["spec", "selector"])) {
            sel.insert("matchLabels".into(), labels.clone());
        }
        let sel = Value::Mapping(sel);
        let selected: Vec<&String> = labels_of
            .iter()
            .filter(|(_, l)| l.as_ref().is_some_and(|l| selects(&sel, l)))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            selected,
            ["producer-shim"],
            "the shim Service selects the shim pods and no others"
        );
    }
    Ok(())
}

#[test]
fn pod_security_check_catches_violations() {
    let bad: Value = serde_yaml_ng::from_str(
        "containers:\n  - name: c\n    securityContext: {runAsUser: 0}\nvolumes:\n  - name: h\n    hostPath: {path: /}\n",
    )
    .unwrap_or(Value::Null);
    let v = restricted_violations(&bad);
    for what in [
        "hostPath",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "uid 0",
        "seccompProfile",
        "drop ALL",
    ] {
        assert!(v.iter().any(|x| x.contains(what)), "{what} in {v:?}");
    }
}

#[test]
fn compose_file_parses_and_runs_everything() -> anyhow::Result<()> {
    let compose = docs("deploy/compose.yaml")?.remove(0);
    let services = s(&compose, &["services"])
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    let names: BTreeSet<String> = services
        .keys()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    for n in ["kafka", "topics", "postgres", "minio", "bucket", "migrate"] {
        assert!(names.contains(n), "compose runs {n}");
    }
    let cleanup = services
        .get("cleanup")
        .ok_or_else(|| anyhow::anyhow!("compose runs cleanup"))?;
    assert_eq!(
        s(cleanup, &["command"])
            .and_then(Value::as_sequence)
            .map(|c| c.len()),
        Some(2),
        "cleanup loops (no --once)"
    );
    for (bin, _) in BINARIES.iter().filter(|(b, _)| *b != "sluice") {
        let bin = *bin;
        let svc = services
            .get(bin)
            .ok_or_else(|| anyhow::anyhow!("compose runs {bin}"))?;
        assert!(
            s(svc, &["healthcheck", "test"]).is_some(),
            "{bin} has a health check"
        );
        assert_eq!(
            s(svc, &["command"])
                .and_then(|c| c.get(0))
                .and_then(Value::as_str),
            Some(bin)
        );
    }
    let topics = format!("{:?}", s(&services[&Value::from("topics")], &["command"]));
    for t in [
        "ingest-events",
        "ingest-attachments",
        "ingest-feedback-events",
        "ingest-occurrences",
        "outcomes",
    ] {
        assert!(
            topics.contains(&format!("{t}:")) && topics.contains(&format!("{t}-dlq:"))
                || t == "outcomes",
            "{t}"
        );
    }
    Ok(())
}

/// Backticked tokens of a line.
fn ticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

fn is_env_name(t: &str) -> bool {
    t.len() > 2
        && t.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && t.contains('_')
}

#[test]
fn flags_and_env_vars_in_deploy_files_and_docs_exist() -> anyhow::Result<()> {
    let flags = clap_flags()?;
    let all_flags: BTreeMap<&str, Option<&str>> = flags
        .values()
        .flat_map(|m| m.iter().map(|(f, e)| (f.as_str(), e.as_deref())))
        .collect();
    let all_env: BTreeSet<&str> = all_flags.values().flatten().copied().collect();
    assert!(
        all_env.contains("KAFKA_BROKERS") && all_flags.contains_key("--auto-offset-reset"),
        "help parsed"
    );
    let env_ok = |e: &str| all_env.contains(e) || e.starts_with("AWS_") || e.starts_with("SLUICE_");

    // Containers running our binaries, in Kubernetes and compose.
    let mut containers: Vec<(String, Value)> = Vec::new();
    for d in k8s()? {
        for path in [
            &["spec", "template", "spec", "containers"][..],
            &[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "spec",
                "containers",
            ][..],
        ] {
            for c in s(&d, path)
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default()
            {
                let bin = s(&c, &["command"])
                    .and_then(|c| c.get(0))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                containers.push((bin, c));
            }
        }
    }
    let compose = docs("deploy/compose.yaml")?.remove(0);
    for (_, svc) in s(&compose, &["services"])
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default()
    {
        let bin = s(&svc, &["command"])
            .and_then(|c| c.get(0))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        containers.push((bin, svc));
    }
    let mut checked = 0;
    for (bin, c) in containers.iter().filter(|(b, _)| flags.contains_key(b)) {
        let known = &flags[bin];
        for a in s(c, &["command"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            let a = a.as_str().unwrap_or_default();
            if a.starts_with("--") {
                assert!(
                    known.contains_key(a.split('=').next().unwrap_or(a)),
                    "{bin}: unknown flag {a}"
                );
            }
        }
        let env_names: Vec<String> = match s(c, &["env"]).or_else(|| s(c, &["environment"])) {
            Some(Value::Sequence(seq)) => seq
                .iter()
                .map(|e| str_of(e, &["name"]).to_owned())
                .collect(),
            Some(Value::Mapping(m)) => m
                .keys()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        for e in env_names {
            assert!(
                env_ok(&e),
                "{bin}: environment variable {e} is not read by any flag"
            );
            checked += 1;
        }
    }
    for cm in k8s()?
        .iter()
        .filter(|d| str_of(d, &["kind"]) == "ConfigMap" || str_of(d, &["kind"]) == "Secret")
    {
        for key in ["data", "stringData"] {
            for k in s(cm, &[key])
                .and_then(Value::as_mapping)
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                let k = k.as_str().unwrap_or_default();
                if is_env_name(k) {
                    assert!(
                        env_ok(k),
                        "{}: {k} is not read by any flag",
                        str_of(cm, &["metadata", "name"])
                    );
                }
            }
        }
    }
    assert!(
        checked > 20,
        "environment of the deployed containers was checked ({checked})"
    );

    // Docs: every backticked flag exists; a flag and an env var on one line belong together.
    for doc in ["README.md", "deploy/README.md"] {
        let text = std::fs::read_to_string(workspace_root().join(doc))?;
        for line in text.lines() {
            let toks = ticked(line);
            let line_flags: Vec<&str> = toks
                .iter()
                .filter(|t| t.starts_with("--"))
                .map(|t| t.split([' ', '=']).next().unwrap_or(t))
                .collect();
            for f in &line_flags {
                assert!(
                    all_flags.contains_key(f),
                    "{doc}: unknown flag {f} in {line:?}"
                );
            }
            let line_env: Vec<&str> = toks
                .iter()
                .copied()
                .filter(|t| {
                    is_env_name(t)
                        && (all_env.contains(t)
                            || t.ends_with("_MS")
                            || t.ends_with("_TOPIC")
                            || t.ends_with("_ADDR")
                            || t.ends_with("_URL"))
                })
                .collect();
            for e in &line_env {
                assert!(env_ok(e), "{doc}: unknown environment variable {e}");
            }
            if line_flags.len() == 1 && line_env.len() == 1 {
                assert_eq!(
                    all_flags[line_flags[0]],
                    Some(line_env[0]),
                    "{doc}: {line:?}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn every_alert_has_a_runbook_section() -> anyhow::Result<()> {
    let guide = std::fs::read_to_string(workspace_root().join("deploy/README.md"))?;
    let rules = docs("deploy/k8s/components/monitoring/prometheusrule.yaml")?;
    let mut alerts = 0;
    for group in seq(s(&rules[0], &["spec", "groups"])) {
        for rule in seq(s(&group, &["rules"])) {
            let alert = str_of(&rule, &["alert"]);
            assert!(
                guide.lines().any(|l| l == format!("### {alert}")),
                "deploy/README.md has a runbook section for {alert}"
            );
            assert_eq!(
                str_of(&rule, &["annotations", "runbook"]),
                format!("deploy/README.md#{}", alert.to_lowercase()),
                "{alert} names its section"
            );
            alerts += 1;
        }
    }
    assert!(alerts >= 10, "{alerts} alerts");
    Ok(())
}

#[test]
fn label_selector_matching() -> anyhow::Result<()> {
    let labels: Value = serde_yaml_ng::from_str("{a: x, b: y}")?;
    let cases = [
        ("{matchLabels: {a: x}}", true),
        ("{matchLabels: {a: x, b: z}}", false),
        (
            "{matchExpressions: [{key: a, operator: In, values: [w, x]}]}",
            true,
        ),
        (
            "{matchExpressions: [{key: a, operator: NotIn, values: [x]}]}",
            false,
        ),
        ("{matchExpressions: [{key: c, operator: Exists}]}", false),
        (
            "{matchExpressions: [{key: c, operator: DoesNotExist}]}",
            true,
        ),
        ("{}", true),
    ];
    for (selector, want) in cases {
        let selector: Value = serde_yaml_ng::from_str(selector)?;
        assert_eq!(selects(&selector, &labels), want, "{selector:?}");
    }
    Ok(())
}
