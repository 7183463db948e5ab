#!/usr/bin/env python3
"""Validates rendered chart objects (chart-render -o json output) against Kubernetes' own schemas.

Usage: validate.py --kubernetes-version 1.30.0 INDEX
INDEX holds one line per rendering: a label, a tab, and a file of JSON objects, one per line.
Every built-in object is checked with kubernetes-validate in strict mode (unknown fields are
errors). Custom resources kubernetes-validate has no schema for are checked here against the
few fields their operators need (ServiceMonitor of the Prometheus operator); any other unknown
kind is an error. Exits 1 after reporting every problem.
"""

import argparse
import json
import sys

import kubernetes_validate


def check_service_monitor(obj):
    """The fields of monitoring.coreos.com/v1 ServiceMonitor the charts set."""
    problems = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return ["spec is missing"]
    allowed = {"endpoints", "selector", "namespaceSelector", "jobLabel", "podTargetLabels",
               "targetLabels", "sampleLimit", "scrapeProtocols"}
    problems += [f"spec.{k} is not a ServiceMonitor field" for k in spec if k not in allowed]
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        problems.append("spec.selector needs matchLabels or matchExpressions")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.append("spec.endpoints needs at least one endpoint")
    else:
        ep_allowed = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout",
                      "tlsConfig", "bearerTokenSecret", "authorization", "honorLabels",
                      "relabelings", "metricRelabelings", "params", "followRedirects"}
        for i, ep in enumerate(endpoints):
            if not isinstance(ep, dict) or not (ep.get("port") or ep.get("targetPort")):
                problems.append(f"spec.endpoints[{i}] needs a port")
                continue
            problems += [f"spec.endpoints[{i}].{k} is not an endpoint field" for k in ep if k not in ep_allowed]
            if ep.get("scheme", "http") not in ("http", "https"):
                problems.append(f"spec.endpoints[{i}].scheme must be http or https")
    return problems


CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("index")
    args = ap.parse_args()
    failures = 0
    total = 0
    with open(args.index) as f:
        renderings = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    for label, path in renderings:
        kinds = []
        before = failures
        with open(path) as f:
            objects = [json.loads(line) for line in f if line.strip()]
        if not objects:
            print(f"{label}: rendered no object", file=sys.stderr)
            failures += 1
        for obj in objects:
            total += 1
            key = (obj.get("apiVersion"), obj.get("kind"))
            name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            kinds.append(obj.get("kind"))
            if key in CUSTOM:
                problems = CUSTOM[key](obj)
            else:
                try:
                    kubernetes_validate.validate(obj, args.kubernetes_version, strict=True)
                    problems = []
                except kubernetes_validate.SchemaNotFoundError as e:
                    problems = [f"no schema for {key[0]} {key[1]} in Kubernetes {args.kubernetes_version}: {e}"]
                except kubernetes_validate.ValidationError as e:
                    where = "/".join(str(p) for p in e.path)
                    problems = [f"{where or '(root)'}: {e.message}"]
            for p in problems:
                print(f"{label}: {name}: {p}", file=sys.stderr)
            failures += len(problems)
        verdict = "valid" if failures == before else "checked, with problems"
        print(f"{label}: {len(objects)} object(s) {verdict} -", ", ".join(sorted(set(kinds))))
    if failures:
        print(f"{failures} problem(s) in {total} object(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
