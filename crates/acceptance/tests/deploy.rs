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

fn k8s() -> anyhow::Result<Vec<Value>> {
    let kustomization = docs("deploy/k8s/kustomization.yaml")?;
    let resources = s(&kustomization[0], &["resources"])
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(!resources.is_empty(), "kustomization lists resources");
    let mut all = Vec::new();
    for r in resources {
        all.extend(docs(&format!(
            "deploy/k8s/{}",
            r.as_str().unwrap_or_default()
        ))?);
    }
    Ok(all)
}

#[test]
fn kubernetes_manifests_are_complete_and_consistent() -> anyhow::Result<()> {
    let all = k8s()?;
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
    let stages: BTreeSet<String> = BINARIES
        .iter()
        .map(|(b, _)| b.to_string())
        .filter(|b| b != "sluice")
        .collect();
    assert_eq!(names("Deployment"), stages);
    assert_eq!(kind("PodDisruptionBudget").len(), 4);
    assert_eq!(names("ScaledObject").len(), 3);
    assert_eq!(kind("Job").len(), 1);
    assert_eq!(
        names("CronJob"),
        BTreeSet::from(["sluice-cleanup".to_owned()])
    );
    assert_eq!(kind("ServiceMonitor").len(), 1);
    assert!(names("Service").contains("producer-shim"));
    let (configmaps, secrets) = (names("ConfigMap"), names("Secret"));

    let mut labels_of = BTreeMap::new();
    for d in kind("Deployment") {
        let name = str_of(d, &["metadata", "name"]);
        let spec = s(d, &["spec", "template", "spec"])
            .ok_or_else(|| anyhow::anyhow!("{name}: no pod spec"))?;
        labels_of.insert(
            name.to_owned(),
            s(d, &["spec", "template", "metadata", "labels"]).cloned(),
        );
        assert_eq!(
            s(d, &["spec", "selector", "matchLabels"]),
            s(d, &["spec", "template", "metadata", "labels"]),
            "{name}"
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
        assert_eq!(
            s(c, &["command"])
                .and_then(|c| c.get(0))
                .and_then(Value::as_str),
            Some(name)
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
        let probe_port = str_of(c, &["readinessProbe", "httpGet", "port"]);
        let ports = s(c, &["ports"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let metrics_port = ports
            .iter()
            .find(|p| str_of(p, &["name"]) == probe_port)
            .and_then(|p| s(p, &["containerPort"]).and_then(Value::as_u64))
            .ok_or_else(|| {
                anyhow::anyhow!("{name}: probe port {probe_port} is not a named port")
            })?;
        let env = s(c, &["env"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let metrics_addr = env
            .iter()
            .find(|e| str_of(e, &["name"]) == "METRICS_ADDR")
            .map(|e| str_of(e, &["value"]));
        assert_eq!(
            metrics_addr,
            Some(format!("0.0.0.0:{metrics_port}").as_str()),
            "{name}: metrics served where probed"
        );
        assert!(
            s(c, &["resources", "requests", "cpu"]).is_some()
                && s(c, &["resources", "requests", "memory"]).is_some()
        );
        for from in s(c, &["envFrom"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            if let Some(cm) = s(&from, &["configMapRef", "name"]).and_then(Value::as_str) {
                assert!(configmaps.contains(cm), "{name}: ConfigMap {cm} exists");
            }
            if let Some(sec) = s(&from, &["secretRef", "name"]).and_then(Value::as_str) {
                assert!(secrets.contains(sec), "{name}: Secret {sec} exists");
            }
        }
        for v in s(spec, &["volumes"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            if let Some(cm) = s(&v, &["configMap", "name"]).and_then(Value::as_str) {
                assert!(configmaps.contains(cm), "{name}: ConfigMap {cm} exists");
            }
        }
    }
    for pdb in kind("PodDisruptionBudget") {
        let sel = s(pdb, &["spec", "selector", "matchLabels"]).cloned();
        assert!(
            labels_of.values().any(|l| *l == sel),
            "PDB {} selects a Deployment",
            str_of(pdb, &["metadata", "name"])
        );
    }
    for so in kind("ScaledObject") {
        let target = str_of(so, &["spec", "scaleTargetRef", "name"]);
        assert!(
            labels_of.contains_key(target),
            "ScaledObject targets Deployment {target}"
        );
        let trigger = s(so, &["spec", "triggers"])
            .and_then(|t| t.get(0))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            str_of(&trigger, &["metadata", "consumerGroup"]),
            target,
            "the binary's default group"
        );
    }
    let svc = kind("Service")
        .into_iter()
        .find(|d| str_of(d, &["metadata", "name"]) == "producer-shim");
    let sel = svc.and_then(|d| s(d, &["spec", "selector"]).cloned());
    let shim = labels_of.get("producer-shim").cloned().flatten();
    assert_eq!(sel, shim, "the shim Service selects the shim pods");
    Ok(())
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
