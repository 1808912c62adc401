"""What the metrics tests share: the reference parser, sample lookup, and a `once` run that
writes a metrics file (two entries added, one failed) against a real slapd."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.testing.slapd import Slapd
from tests.support import add_item, connect, demo_service, run_cli, write_config

parser = pytest.importorskip("prometheus_client.parser")


def parse(text: str) -> dict[str, Any]:
    """name -> family, every family checked by the reference parser."""
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def value(families: dict[str, Any], sample: str, **labels: str) -> float:
    family_name = sample
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if sample.endswith(suffix) and sample[: -len(suffix)] in families:
            family_name = sample[: -len(suffix)]
    for found in families[family_name].samples:
        if found.name == sample and all(found.labels.get(k) == v for k, v in labels.items()):
            return float(found.value)
    raise KeyError(f"{sample}{labels}")


@dataclass
class OnceSite:
    conn: ldap3.Connection
    config: Path
    prom: Path

    def once(self) -> subprocess.CompletedProcess[str]:
        return run_cli("--config", str(self.config), "once")


def once_site(slapd: Slapd, tmp_path: Path) -> OnceSite:
    """A demo service with metrics on, and in the directory two good entries and a bad one
    (a tab in its description: the render fails with ReturnValue 2)."""
    root = tmp_path / "root"
    root.mkdir()
    prom = tmp_path / "textfile" / "provisiond.prom"
    prom.parent.mkdir()
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          metrics={"path": str(prom)})
    conn = connect(slapd)
    add_item(conn, "one")
    add_item(conn, "two")
    add_item(conn, "bad", description="tab\there")
    return OnceSite(conn=conn, config=config, prom=prom)


def assert_two_added_one_failed(families: dict[str, Any]) -> None:
    """The counts after a site's two good entries and its bad one were processed."""
    for outcome, count in (("success", 2), ("failure", 1)):
        assert value(families, "provisiond_entries_processed_total", service="demo",
                     outcome=outcome) == count
    step = {"service": "demo", "step": "write item file", "outcome": "success"}
    assert value(families, "provisiond_step_duration_seconds_count", **step) == 2
    assert value(families, "provisiond_step_duration_seconds_bucket", **step, le="+Inf") == 2
    assert value(families, "provisiond_step_duration_seconds_count", service="demo",
                 step="provision item", outcome="success") == 2
    assert value(families, "provisiond_queue_depth") == 0
