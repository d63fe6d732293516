"""Every PromQL query in the alerts (PrometheusRule) and the Grafana dashboard parses, and every
sluice_* metric it names is one the binaries register (a metric name string in crates/*/src).

Usage: check_queries.py RENDERED_YAML DASHBOARD_JSON REPO_ROOT
"""

import json
import pathlib
import re
import sys

import promql_parser
import yaml

rendered, dashboard, root = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])

known = set()
for src in root.glob("crates/*/src/**/*.rs"):
    known.update(re.findall(r'"(sluice_[a-z0-9_]+)"', src.read_text()))

queries = []
for doc in yaml.safe_load_all(open(rendered)):
    if doc and doc.get("kind") == "PrometheusRule":
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                queries.append((f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]))
for panel in json.load(open(dashboard))["panels"]:
    for target in panel.get("targets", []):
        # Grafana's variables, as Grafana substitutes them.
        expr = target["expr"].replace("$__rate_interval", "5m").replace("$namespace", "sluice")
        queries.append((f"panel {panel['title']!r}", expr))

errors = []
for where, expr in queries:
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser's error types differ by version
        errors.append(f"{where}: does not parse: {e}")
    for name in re.findall(r"\bsluice_[a-z0-9_]+", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in known and base not in known:
            errors.append(f"{where}: no binary registers {name}")
for e in errors:
    print(e, file=sys.stderr)
print(f"{len(queries)} queries checked, {len(errors)} problems")
sys.exit(1 if errors or not queries else 0)
