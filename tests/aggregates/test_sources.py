"""Files rendered from the entries of several services (issue 11.3): `render: {scope: all,
sources: [targets, luns]}` on a real slapd, one file written by the jobs of either service."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import ldap3
import pytest
import yaml

from provisiond import paths
from provisiond.aggregates.mirror import Coalescer
from provisiond.config import ConfigError, load_config
from provisiond.host.hostlock import AggregateLocks
from provisiond.operate import preview
from provisiond.testing.slapd import Slapd
from tests.support import connect, mode_of, request, running, wait_for, write_config

TARGETS = "ou=targets,dc=example,dc=org"
LUNS = "ou=luns,dc=example,dc=org"
NAMES = {"mode": "provisiondMode", "state": "provisiondState",
         "execution_date": "provisiondExecutionDate", "return_value": "provisiondReturnValue",
         "message": "provisiondMessage"}
SCST = ("{% for t in sources.targets %}target {{ t.values.name }}\n{% endfor %}"
        "{% for l in sources.luns %}lun {{ l.values.name }}"
        "{{ ' of ' ~ l.refs.target.values.name if l.refs.target is defined else '' }}\n"
        "{% endfor %}")


def service(base: str, root: Path, *, template: str = "scst.j2",
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A service whose every request renders `root/scst.conf` from targets and luns."""
    write = {"name": "write scst.conf", "code": 8,
             "render": {"template": template, "path": f"{root}/scst.conf", "scope": "all",
                        "sources": ["targets", "luns"]}}
    return {"base": base, "filter": "(objectClass=provisiondDemoItem)", "attributes": NAMES,
            "values": {"name": {"attribute": "cn", "type": "posix_name"}},
            "roots": [str(root)], "steps": {"add": [write], "modify": "add", "delete": [write]},
            **(extra or {})}


def services(root: Path) -> dict[str, Any]:
    lun_target = {"attribute": "provisiondReference", "type": "dn", "under": TARGETS,
                  "required": False}
    luns = service(LUNS, root, extra={"references": {"target": "targets"}})
    luns["values"] = {**luns["values"], "target": lun_target}
    return {"targets": service(TARGETS, root), "luns": luns}


def templates(tmp_path: Path) -> list[str]:
    directory = tmp_path / "templates"
    directory.mkdir(exist_ok=True)
    (directory / "scst.j2").write_text(SCST)
    (directory / "other.j2").write_text("other\n")
    return [str(directory), *map(str, paths.templates_dirs())]


def config(tmp_path: Path, slapd: Slapd, root: Path, **top: Any) -> Path:
    return write_config(tmp_path / "cfg", slapd, services(root), templates=templates(tmp_path),
                        **top)


def directory(slapd: Slapd) -> ldap3.Connection:
    conn = connect(slapd)
    for ou in ("targets", "luns"):
        assert conn.add(f"ou={ou},dc=example,dc=org", ["organizationalUnit"], {"ou": ou})
    return conn


def add(conn: ldap3.Connection, base: str, name: str, **extra: str) -> str:
    dn = f"cn={name},{base}"
    assert conn.add(dn, ["provisiondDemoItem", "provisiondProvisioning"], {
        "provisiondMode": "add", "provisiondState": "0", "provisiondExecutionDate": "0",
        **extra}), conn.result
    return dn


def shows(root: Path, text: str) -> bool:
    file = root / "scst.conf"
    return file.exists() and file.read_text() == text


def test_a_file_lists_entries_of_two_services_written_by_the_jobs_of_either(
        slapd: Slapd, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    conn = directory(slapd)
    path = config(tmp_path, slapd, root)
    with running(path) as engine:
        t1 = add(conn, TARGETS, "t1")
        wait_for(lambda: mode_of(conn, t1) == "added", what="target added")
        assert shows(root, "target t1\n")  # written by a job of targets
        l1 = add(conn, LUNS, "l1", provisiondReference=t1)
        wait_for(lambda: mode_of(conn, l1) == "added", what="lun added")
        assert shows(root, "target t1\nlun l1 of t1\n")  # by a job of luns, refs resolved
        # One coalescer for the file, whichever service asks.
        assert engine.aggregates.coalescer(root.resolve() / "scst.conf").runs == 2

    loaded = load_config(path)
    for dn in (t1, l1):  # `provisiond render` shows what the run wrote
        out = io.StringIO()
        assert preview.main(loaded, dn, out, mode="add") == 0, out.getvalue()
        line = next(ln for ln in out.getvalue().splitlines() if "scst.conf" in ln)
        assert "from 1 active entry (sources: targets 1, luns 1): unchanged" in line, line
    t2 = add(conn, TARGETS, "t2")
    out = io.StringIO()
    assert preview.main(loaded, t2, out, mode="add") == 0
    assert "+target t2" in out.getvalue()  # the entry asked about, laid over as it will be


def test_deleting_an_entry_of_one_source_takes_it_out_of_the_file(
        slapd: Slapd, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    conn = directory(slapd)
    with running(config(tmp_path, slapd, root)) as engine:
        t1 = add(conn, TARGETS, "t1")
        wait_for(lambda: mode_of(conn, t1) == "added", what="target added")
        l1, l2 = (add(conn, LUNS, name, provisiondReference=t1) for name in ("l1", "l2"))
        wait_for(lambda: shows(root, "target t1\nlun l1 of t1\nlun l2 of t1\n"),
                 what="both luns listed")
        wait_for(lambda: mode_of(conn, l1) == mode_of(conn, l2) == "added", what="luns added")
        request(conn, l1, "delete")
        wait_for(lambda: mode_of(conn, l1) == "deleted", what="lun deleted")
        assert shows(root, "target t1\nlun l2 of t1\n")

        # Removed elsewhere: the periodic refresh renders the shared file once, not once
        # per service that writes it.
        assert conn.delete(l2), conn.result
        runs = engine.aggregates.coalescer(root.resolve() / "scst.conf").runs
        engine.refresh_aggregates()
        assert shows(root, "target t1\n")
        assert engine.aggregates.coalescer(root.resolve() / "scst.conf").runs == runs + 1


@pytest.mark.slow
def test_a_burst_of_300_entries_of_two_services_renders_the_file_a_handful_of_times(
        slapd: Slapd, tmp_path: Path) -> None:
    """The storage shape: a hook makes the device, then the shared file is rendered, checked
    and applied. Each job reaching the file is parked and one batch render serves all parked
    jobs of either service (core/batches.py), so with 4 workers a burst of 300 takes a handful
    of renders (each job waiting in its worker shared renders four at a time: about 75), and
    the apply runs once per render that changed the file."""
    root = tmp_path / "root"
    root.mkdir()
    programs = tmp_path / "bin"
    programs.mkdir()
    for name, text in (("make-device", "sleep 0.02"), ("slow-check", "sleep 0.05"),
                       ("apply", f"echo run >> {root}/applies.log")):
        (programs / name).write_text(f"#!/bin/sh\n{text}\n")
        (programs / name).chmod(0o755)
    both = services(root)
    for spec in both.values():
        write = spec["steps"]["add"][0]
        write["render"]["validate"] = ["slow-check", "{{ file }}"]
        write["render"]["on_change"] = ["apply", "{{ path }}"]
        spec["steps"]["add"] = [{"name": "make device", "code": 5, "hook": ["make-device"]},
                                write]
    conn = directory(slapd)
    names = [f"e{number:03d}" for number in range(150)]
    expected = "".join(f"target {n}\n" for n in names) + "".join(f"lun {n}\n" for n in names)
    dns = [add(conn, base, n) for n in names for base in (TARGETS, LUNS)]  # before the start:
    path = write_config(tmp_path / "cfg", slapd, both, templates=templates(tmp_path),
                        hooks={"path": [str(programs)]})
    with running(path) as engine:  # all 300 arrive at once, with the stream's first refresh
        started = time.monotonic()
        wait_for(lambda: all(mode_of(conn, dn) == "added" for dn in dns), timeout=120,
                 what="all 300 added")
        renders = engine.batches.renders
        seconds = time.monotonic() - started
    assert shows(root, expected)
    applies = len((root / "applies.log").read_text().splitlines())
    print(f"300 entries: {renders} batch renders, {applies} applies in {seconds:.1f}s")
    assert 1 <= applies <= renders <= 12, (applies, renders)


def test_two_services_rendering_one_file_differently_is_refused_naming_both(
        slapd: Slapd, tmp_path: Path) -> None:
    root = tmp_path / "root"
    both = services(root)
    luns = both.pop("luns")
    luns["steps"]["add"][0]["render"]["template"] = "other.j2"
    path = write_config(tmp_path / "cfg", slapd, both, templates=templates(tmp_path))
    extra = path.parent / "services.d" / "luns.yaml"
    extra.parent.mkdir()
    extra.write_text(yaml.safe_dump({"luns": luns}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = [error.line() for error in caught.value.errors]
    line = next((ln for ln in lines if "scst.conf" in ln), "\n".join(lines))
    assert line.startswith(f"{extra}: luns.steps.add[0].render: "), line
    assert f"{path}: services.targets.steps.add[0].render" in line, line
    assert "template" in line, line


@pytest.mark.parametrize(("change", "key", "reason"), [
    (lambda r: r.update(sources=["targets", "disks"]), "luns.steps.add[0].render.sources[1]",
     "no service 'disks'"),
    (lambda r: r.update(scope="entry"), "luns.steps.add[0].render.sources",
     "only with scope: all"),
])
def test_sources_must_name_services_of_a_file_of_all_entries(
        slapd: Slapd, tmp_path: Path, change: Any, key: str, reason: str) -> None:
    root = tmp_path / "root"
    both = services(root)
    luns = both["luns"]
    luns["steps"] = {"add": [{**luns["steps"]["add"][0],
                              "render": dict(luns["steps"]["add"][0]["render"])}]}
    change(luns["steps"]["add"][0]["render"])
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "cfg", slapd, both, templates=templates(tmp_path)))
    lines = [error.line() for error in caught.value.errors]
    assert any(f"services.{key}: " in ln and reason in ln for ln in lines), lines


def test_a_file_lists_a_service_that_does_not_render_it(slapd: Slapd, tmp_path: Path) -> None:
    """luns only appear in the targets' file (`sources`): they are mirrored, and a refresh
    of luns (the periodic one, or the re-render of a referenced entry's dependents) renders
    the file, planned as its writer does, once per pass."""
    root = tmp_path / "root"
    root.mkdir()
    both = services(root)
    both["luns"]["steps"] = {"add": [{"name": "own file", "code": 3, "render": {
        "template": "other.j2", "path": f"{root}/luns/{{{{ values.name }}}}.conf"}}]}
    conn = directory(slapd)
    path = write_config(tmp_path / "cfg", slapd, both, templates=templates(tmp_path))
    with running(path) as engine:
        luns = next(spec for spec in engine.config.services if spec.name == "luns")
        assert engine.aggregates.mirrored(luns)  # read by the targets' file, not its own
        t1 = add(conn, TARGETS, "t1")
        wait_for(lambda: mode_of(conn, t1) == "added", what="target added")
        l1 = add(conn, LUNS, "l1", provisiondReference=t1)
        wait_for(lambda: mode_of(conn, l1) == "added", what="lun added")
        coalescer = engine.aggregates.coalescer(root.resolve() / "scst.conf")
        runs = coalescer.runs
        engine.refresh_aggregates([luns])
        assert shows(root, "target t1\nlun l1 of t1\n")
        assert coalescer.runs == runs + 1
        engine.refresh_aggregates()  # every service: the file once
        assert coalescer.runs == runs + 2


def test_one_path_of_two_services_is_locked_once(tmp_path: Path) -> None:
    locks = AggregateLocks(tmp_path / "locks")
    target = Path(os.path.realpath(tmp_path)) / "scst.conf"
    locks.acquire([target, target])  # the start-up list has it once per service writing it
    assert list(locks._held) == [target]
    locks.release()


def test_a_job_is_covered_by_a_render_that_started_after_it_began() -> None:
    """A render started after a job's entry was laid over (`Aggregates.begin`) lists it: the
    job shares that render, running or done, instead of asking for one more."""
    stamp = 5
    coalescer = Coalescer(stamp=lambda: stamp)
    release = threading.Event()
    rendered: list[int] = []

    def render() -> None:
        rendered.append(stamp)
        release.wait(10)

    first = threading.Thread(target=coalescer.run, args=(render,))
    first.start()
    wait_for(lambda: rendered, what="the first render running")
    covered = threading.Thread(target=coalescer.run, args=(render,), kwargs={"since": 5})
    covered.start()
    wait_for(lambda: coalescer._requested == 2, what="the covered request waiting")
    release.set()
    for thread in (first, covered):
        thread.join(10)
    assert coalescer.runs == 1  # the job that began at 5 shared the run stamped 5
    coalescer.run(render, since=4)  # done and covering: nothing to render
    assert coalescer.runs == 1
    stamp = 6
    coalescer.run(render, since=6)  # began after the last render started: a new one
    assert coalescer.runs == 2 and rendered == [5, 6]
    coalescer.run(render)  # without a job: a render that starts after the request
    assert coalescer.runs == 3


@pytest.mark.parametrize("bacula", ["", "on"])
def test_a_step_off_by_its_vars_may_name_a_service_the_site_does_not_have(
        slapd: Slapd, tmp_path: Path, bacula: str) -> None:
    """The Bacula SD file of the tape and disk kinds is rendered only when a var turns it on;
    a site with disks and no tapes must load with it off (and be told when it is on)."""
    root = tmp_path / "root"
    both = services(root)
    luns = both["luns"]
    luns["vars"] = {"bacula": bacula}
    del luns["references"], luns["values"]["target"]
    luns["steps"] = {"add": [{**luns["steps"]["add"][0], "when": "vars.bacula",
                              "render": {**luns["steps"]["add"][0]["render"],
                                         "path": f"{root}/sd.conf",
                                         "sources": ["luns", "tapes"]}}]}
    path = write_config(tmp_path / "cfg", slapd, {"luns": luns}, templates=templates(tmp_path))
    if not bacula:
        assert load_config(path).services[0].name == "luns"
        return
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any("luns.steps.add[0].render.sources[1]: " in error.line()
               and "no service 'tapes'" in error.line() for error in caught.value.errors)


def test_an_optional_source_a_site_does_not_have_is_an_empty_list(
        slapd: Slapd, tmp_path: Path) -> None:
    """`sources: [luns, tapes?]`: a site with disks and no tapes still gets its SD file."""
    root = tmp_path / "root"
    luns = services(root)["luns"]
    del luns["references"], luns["values"]["target"]
    luns["steps"] = {"add": [{**luns["steps"]["add"][0],
                              "render": {**luns["steps"]["add"][0]["render"],
                                         "template": "counts.j2",
                                         "sources": ["luns", "tapes?"]}}]}
    (Path(templates(tmp_path)[0]) / "counts.j2").write_text(
        "luns {{ sources.luns | length }} tapes {{ sources['tapes'] | length }}\n")
    conn = directory(slapd)
    add(conn, LUNS, "l1")
    with running(write_config(tmp_path / "cfg", slapd, {"luns": luns},
                              templates=templates(tmp_path))):
        wait_for(lambda: shows(root, "luns 1 tapes 0\n"), 20, "the file with no tapes")
