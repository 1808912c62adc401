"""The Grafana dashboard in etc/grafana (issue 9.5) queries only what provisiond writes.

The set of written series comes from running the real writer (`provisiond once` against a
private slapd, two entries added and one failed, so the step histograms have samples), not
from a list kept beside the dashboard: a renamed metric breaks this test, not the dashboard
in production.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from provisiond.testing.slapd import Slapd
from tests.process.metrics_support import once_site, parse
from tests.support import REPO

DASHBOARD = REPO / "etc" / "grafana" / "provisiond.json"

# Words in PromQL that look like metric names but are not: aggregation and binary-operator
# modifiers (function names are recognised by the "(" after them).
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset"}
# What the issue asks the dashboard to show: entries by outcome, step durations, queue depth,
# last sync, connected.
REQUIRED = {"provisiond_entries_processed_total", "provisiond_step_duration_seconds_bucket",
            "provisiond_queue_depth", "provisiond_last_sync_timestamp_seconds",
            "provisiond_connected"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (Grafana's variables removed first)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and other strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery windows
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "",
                  expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # $instance, ${datasource}, $__rate_interval
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if match[0] in KEYWORDS or expr[match.end():].lstrip().startswith("("):
            continue  # a function call or a modifier
        names.add(match[0])
    return names


def test_metric_names_are_found_in_promql() -> None:
    """The extraction the real test relies on: names in, functions and labels out."""
    expr = ('histogram_quantile(0.95, sum by (le, service) (rate(a_bucket{service=~"$s", '
            'step="x{y}"}[$__rate_interval]))) / on (instance) group_left b_total '
            "+ time() - (c > 0) unless d offset 5m")
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d"}


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [(f"panel {panel['title']!r}", target["expr"])
             for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            # Grafana's label_values(selector, label): the selector is the PromQL
            found.append((f"variable {variable['name']}",
                          re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query)))
    return found


def written_series(slapd: Slapd, tmp_path: Path) -> set[str]:
    site = once_site(slapd, tmp_path)
    result = site.once()
    assert result.returncode == 1, result.stderr  # two added, one failed
    return {sample.name for family in parse(site.prom.read_text()).values()
            for sample in family.samples}


def test_every_metric_the_dashboard_queries_is_one_provisiond_writes(
    slapd: Slapd, tmp_path: Path
) -> None:
    written = written_series(slapd, tmp_path)
    assert "provisiond_step_duration_seconds_bucket" in written  # the run had steps to time
    queried: set[str] = set()
    for where, expr in queries(dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown = names - written
        assert not unknown, f"{where}: {sorted(unknown)} not written by provisiond ({expr!r})"
        queried |= names
    assert REQUIRED <= queried, f"not shown: {sorted(REQUIRED - queried)}"


def test_every_panel_has_the_datasource_and_a_query() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == source, variable["name"]
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            assert target["expr"].strip() and target["refId"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]


def test_dashboard_is_plain_json() -> None:
    """Grafana's import takes the file as it is: UTF-8 JSON, one object, no duplicate keys."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"
        return dict(pairs)

    assert isinstance(json.loads(DASHBOARD.read_bytes().decode("utf-8"),
                                 object_pairs_hook=no_duplicates), dict)
