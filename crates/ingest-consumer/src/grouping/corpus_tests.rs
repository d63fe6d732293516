//! The grouping corpus (`corpus.json`): events across platforms with the issue each belongs to,
//! the rule expected to group it and why. Events with one label must share a fingerprint,
//! events with different labels must not.

use super::group;
use serde_json::Value;
use std::collections::BTreeMap;

#[test]
fn corpus_partitions_as_written() -> Result<(), serde_json::Error> {
    let cases: Vec<Value> = serde_json::from_str(include_str!("corpus.json"))?;
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut by_issue: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut by_fingerprint: BTreeMap<String, String> = BTreeMap::new();
    let mut failures = Vec::new();
    for c in &cases {
        let name = c["case"].as_str().unwrap_or("?");
        let issue = c["issue"].as_str().unwrap_or("?").to_owned();
        let g = group(&c["event"]);
        if let Some(rule) = c["rule"].as_str() {
            if g.rule != rule {
                failures.push(format!(
                    "{name}: rule {} (want {rule}) {:?}",
                    g.rule, g.components
                ));
            }
        }
        for (field, got) in [("title", &g.title), ("culprit", &g.culprit)] {
            if let Some(want) = c[field].as_str() {
                if got != want {
                    failures.push(format!("{name}: {field} {got:?} (want {want:?})"));
                }
            }
        }
        match by_issue.get(&issue) {
            Some((fp, first)) if *fp != g.fingerprint => failures.push(format!(
                "{name}: not in the issue of {first} ({issue}): {:?}",
                g.components
            )),
            Some(_) => {}
            None => {
                by_issue.insert(issue.clone(), (g.fingerprint.clone(), name.to_owned()));
            }
        }
        match by_fingerprint.get(&g.fingerprint) {
            Some(other) if *other != issue => failures.push(format!(
                "{name}: shares an issue with {other}, expected {issue}: {:?}",
                g.components
            )),
            Some(_) => {}
            None => {
                by_fingerprint.insert(g.fingerprint.clone(), issue);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
