"""Runs Helm's own library (PyPI helm-python-sdk) for the chart tests.

Reads one JSON request on stdin and prints one JSON answer on stdout:
  {"op": "render", "chart": DIR, "values": {...}, "release": NAME, "namespace": NS}
    -> {"manifests": {"<template path>": "<rendered text>"}} or {"error": "..."}
  {"op": "lint", "chart": DIR, "values": {...}, "namespace": NS}
    -> {"messages": [{"severity", "path", "error"}], "errors": [...]}
Render validates the values against values.schema.json, as install does.
"""
import json
import sys

import helm_python as helm


def main() -> None:
    request = json.load(sys.stdin)
    values = request.get("values") or None
    if request["op"] == "render":
        try:
            with helm.Chart.load(request["chart"]) as chart:
                manifests = chart.render(
                    values=values,
                    name=request["release"],
                    namespace=request["namespace"],
                    is_install=True,
                )
            answer = {"manifests": manifests}
        except helm.HelmError as error:
            answer = {"error": str(error)}
    elif request["op"] == "lint":
        answer = helm.lint(
            request["chart"], values, strict=True, namespace=request["namespace"]
        )
    else:
        raise SystemExit(f"unknown op {request['op']!r}")
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
