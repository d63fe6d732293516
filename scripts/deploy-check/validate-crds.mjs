// Validates every custom resource (KEDA, Prometheus Operator, Strimzi, External Secrets) in the
// YAML files given as arguments against its CRD's OpenAPI schema, as published in the
// @kubernetes-models packages. Built-in kinds are left to kubernetes-validate. Exits non-zero
// on the first file with an invalid resource, or a custom resource of a group it has no schema for.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const PACKAGES = {
  "keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "kafka.strimzi.io": "@kubernetes-models/strimzi-kafka-operator",
  "external-secrets.io": "@kubernetes-models/external-secrets",
};

let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const res = doc.toJS();
    if (!res || !res.apiVersion || !res.apiVersion.includes(".")) continue;
    const [group, version] = res.apiVersion.split("/");
    if (group.endsWith(".k8s.io") || !version) continue;
    const name = `${file}: ${res.kind} ${res.metadata?.name}`;
    const pkg = PACKAGES[group];
    if (!pkg) {
      console.error(`${name}: no schema for the group ${group}`);
      failed++;
      continue;
    }
    try {
      const mod = await import(`${pkg}/${group}/${version}/${res.kind}`);
      new mod[res.kind](res).validate();
      checked++;
      console.log(`ok ${name}`);
    } catch (e) {
      console.error(`${name}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`${checked} custom resources valid, ${failed} invalid`);
process.exit(failed > 0 || checked === 0 ? 1 : 0);
