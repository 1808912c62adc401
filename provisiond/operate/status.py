"""`provisiond status`: what every service's entries are doing, read from the directory.

The directory is the source of truth (the daemon keeps no database), so status searches each
service's entries and classifies them by mode and state, with the modes of the service's
lifecycle (model/states.py; by default add/modify/delete and their -ing and -ed forms):

    pending    at a request mode (add), state 0, due now
    scheduled  requested for a future execution date
    working    at a working mode (adding) without a ReturnValue, changed recently
    stuck      the same, but unchanged for longer than --stuck-after: a daemon died mid-way
               or a hook hangs; the owning daemon resumes it on its next start
    failed     at a working mode with a non-zero ReturnValue: needs an operator, then
               `provisiond retry`
    done       at a done mode (added)
    other      anything else (a request whose state is not 0, unknown modes)

It also reads each service's cookie file (when it was stored, and the time of the newest
change it covers), whether a daemon is running (the pid file, else a process scan) and, from
that daemon's `streams.json` (see liveness.py), whether each service has a change stream: a
service without one processes nothing, so `status` then exits 69 like for an unreachable
directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import psutil

from provisiond import __version__, paths
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.directory.cookie import CookieStore, newest_csn
from provisiond.exitcodes import EX_FAILED, EX_OK, EX_UNAVAILABLE
from provisiond.model import lifecycle
from provisiond.model.settings import Config, ServiceSpec
from provisiond.model.states import Lifecycle
from provisiond.operate import live
from provisiond.operate.common import (
    Reader,
    human_age,
    iso,
    parse_generalized_time,
    same_file,
    shown_time,
    terminal_safe,
)
from provisiond.process import liveness

DEFAULT_STUCK_AFTER = 900.0
CATEGORY_ORDER = ("failed", "stuck", "working", "pending", "scheduled", "done", "other")


def classify(state: lifecycle.EntryState, now: datetime, age: float | None,
             stuck_after: float) -> str:
    if state.request is not None:
        if (state.state or "").strip() != "0":
            return "other"
        decision = lifecycle.decide(state, now)
        return "scheduled" if decision.action is lifecycle.Action.WAIT else "pending"
    if lifecycle.is_failed(state):
        return "failed"
    if lifecycle.is_stranded(state):  # or still running: only its age tells
        return "stuck" if age is not None and age > stuck_after else "working"
    return "done" if state.done_request is not None else "other"


def _int_or_text(value: str | None) -> int | str | None:
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def cookie_state(config: Config, service: str, now: float) -> dict[str, Any]:
    store = CookieStore(config.state_dir, service)
    info: dict[str, Any] = {"path": str(store.path), "present": False, "saved": None,
                            "age_seconds": None, "newest_change": None, "error": None}
    try:
        saved = store.path.stat().st_mtime
    except FileNotFoundError:
        return info
    except OSError as exc:
        info["error"] = exc.strerror or str(exc)
        return info
    info.update(present=True, saved=iso(saved), age_seconds=round(now - saved, 1))
    try:
        csn = newest_csn(store.load())
    except (OSError, ValueError) as exc:
        info["error"] = str(exc)
        return info
    if csn:
        changed = parse_generalized_time(csn[:14] + "Z")
        info["newest_change"] = iso(changed)
    return info


def _config_of(cmdline: list[str]) -> str | None:
    """For a `provisiond ... run` command line, the configuration it uses; else None."""
    for index, arg in enumerate(cmdline):
        if os.path.basename(arg) == "provisiond" or (
            arg == "provisiond" and index > 0 and cmdline[index - 1] == "-m"
        ):
            rest = cmdline[index + 1:]
            break
    else:
        return None
    config = str(paths.DEFAULT_CONFIG)
    command = None
    skip = False
    for position, arg in enumerate(rest):
        if skip:
            skip = False
            continue
        if arg in ("--config", "-c") and position + 1 < len(rest):
            config, skip = rest[position + 1], True
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif not arg.startswith("-") and command is None:
            command = arg
    return config if command == "run" else None


def daemon_state(config: Config) -> dict[str, Any]:
    """Whether a provisiond daemon for this configuration is running: the pid file of
    `run --daemon` first, then a scan for `provisiond run` processes (the systemd unit runs in
    the foreground and writes no pid file)."""
    from provisiond.process.daemon import running_pid

    pid_file = config.pid_file or config.state_dir / "provisiond.pid"
    state: dict[str, Any] = {"running": False, "pid": None, "found_by": None,
                             "pid_file": str(pid_file), "started": None}
    pid = running_pid(pid_file)
    found_by = "pid file" if pid is not None else None
    if pid is None:
        own = {os.getpid(), os.getppid()}
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmdline = process.info.get("cmdline") or []
                if process.info["pid"] in own:
                    continue
                used = _config_of(list(cmdline))
                if used is not None and (
                    same_file(used, config.source)
                    or (not os.path.exists(used) and used == config.source)
                ):
                    pid, found_by = process.info["pid"], "process list"
                    break
            except (psutil.Error, OSError):
                continue
    if pid is not None:
        state.update(running=True, pid=pid, found_by=found_by)
        try:
            state["started"] = iso(psutil.Process(pid).create_time())
        except psutil.Error:
            pass
    return state


def stream_state(published: Mapping[str, Any] | None, now: float) -> dict[str, Any] | None:
    """A service's change stream as the running daemon published it (None: unknown)."""
    if not isinstance(published, Mapping):
        return None
    since = published.get("since")
    since = since if isinstance(since, int | float) else None
    return {"connected": published.get("connected") is True,
            "running": published.get("running") is not False,
            "reason": str(published.get("reason") or ""), "since": iso(since),
            "for_seconds": round(max(0.0, now - since), 1) if since is not None else None}


def service_status(config: Config, spec: ServiceSpec, reader: Reader | None, now: datetime,
                   stuck_after: float, streams: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
    names = spec.attributes
    info: dict[str, Any] = {
        "name": spec.name, "kind": spec.kind, "base": spec.base, "filter": spec.filter,
        "entries": 0, "counts": {}, "failed": [], "stuck": [], "working": [], "scheduled": [],
        "cookie": cookie_state(config, spec.name, now.timestamp()),
        "stream": stream_state((streams or {}).get(spec.name), now.timestamp()), "error": None,
    }
    if reader is None:
        return info
    counts: dict[str, dict[str, int]] = {}
    try:
        for entry in reader.search(spec.base, spec.filter, names.names(), spec.scope):
            attributes: Mapping[str, tuple[str, ...]] = entry.attributes
            state = lifecycle.read_state(names, attributes, spec.lifecycle)
            changed = parse_generalized_time(lifecycle.first(attributes, "modifyTimestamp"))
            age = (now - changed).total_seconds() if changed else None
            category = classify(state, now, age, stuck_after)
            mode = (state.mode or "(none)").lower()
            counts.setdefault(mode, {}).setdefault(category, 0)
            counts[mode][category] += 1
            info["entries"] += 1
            row: dict[str, Any] = {"dn": entry.dn, "uuid": entry.uuid, "mode": state.mode,
                                   "changed": iso(changed),
                                   "age_seconds": round(age) if age is not None else None}
            if category == "failed":
                message = lifecycle.first(attributes, names.message) if names.message else None
                row.update(return_value=_int_or_text(state.return_value), message=message)
                info["failed"].append(row)
            elif category in ("stuck", "working"):
                info[category].append(row)
            elif category == "scheduled":
                day = lifecycle.parse_execution_date(state.execution_date)
                row["execution_date"] = day.isoformat() if day else None
                row["in_days"] = (day - now.date()).days if day else None
                info["scheduled"].append(row)
    except DirectoryUnavailable as exc:
        info["error"] = str(exc)
    info["counts"] = {
        mode: dict(sorted(by.items(), key=lambda kv: CATEGORY_ORDER.index(kv[0])))
        for mode, by in sorted(counts.items(), key=lambda kv: mode_rank(spec.lifecycle, kv[0]))
    }
    for key in ("failed", "stuck", "working"):
        info[key].sort(key=lambda row: (-(row["age_seconds"] or 0), row["dn"]))
    info["scheduled"].sort(key=lambda row: (row["execution_date"] or "", row["dn"]))
    return info


def mode_rank(cycle: Lifecycle, mode: str) -> tuple[int, str]:
    """Where `mode` is listed: in the lifecycle's order, then unknown modes by name."""
    order = cycle.modes
    return (order.index(mode) if mode in order else len(order), mode)


def collect(config: Config, *, stuck_after: float = DEFAULT_STUCK_AFTER,
            now: datetime | None = None) -> dict[str, Any]:
    """Everything `status` shows, as plain data (what `status --json` prints)."""
    now = now or datetime.now(UTC)
    report: dict[str, Any] = {
        "version": __version__,
        "config": config.source,
        "time": iso(now),
        "stuck_after_seconds": stuck_after,
        "daemon": daemon_state(config),
        "directory": {"uri": config.ldap.uri, "reachable": False, "error": None},
        "services": [],
    }
    reader: Reader | None = None
    try:
        reader = Reader(config)
        report["directory"]["reachable"] = True
    except DirectoryUnavailable as exc:
        report["directory"]["error"] = str(exc)
    daemon = report["daemon"]
    streams = liveness.of_daemon(config.state_dir, daemon["pid"]) if daemon["running"] else None
    try:
        for spec in config.services:
            info = service_status(config, spec, reader, now, stuck_after, streams)
            if spec.status:  # the service's own `status:` command
                info["live"] = live.facts(config, spec)
            report["services"].append(info)
    finally:
        if reader is not None:
            reader.close()
    services = report["services"]
    report["summary"] = {
        "entries": sum(s["entries"] for s in services),
        "failed": sum(len(s["failed"]) for s in services),
        "stuck": sum(len(s["stuck"]) for s in services),
        "working": sum(len(s["working"]) for s in services),
        "scheduled": sum(len(s["scheduled"]) for s in services),
        "errors": sum(1 for s in services if s["error"]),
        "no_stream": sum(1 for s in services if s["stream"] and not s["stream"]["connected"]),
    }
    return report


def exit_status(report: Mapping[str, Any]) -> int:
    summary = report["summary"]
    if not report["directory"]["reachable"] or summary["errors"] or summary.get("no_stream"):
        return EX_UNAVAILABLE
    return EX_FAILED if summary["failed"] or summary["stuck"] else EX_OK


# -- the text an operator reads -------------------------------------------------------------------

LIST_LIMIT = 20


def _counts_line(counts: Mapping[str, Mapping[str, int]]) -> str:
    parts = []
    for mode, by in counts.items():
        inner = ", ".join(f"{n} {category}" for category, n in by.items())
        parts.append(f"{mode} {inner}")
    return " | ".join(parts) if parts else "none"


def format_text(report: Mapping[str, Any], out: TextIO) -> None:
    daemon = report["daemon"]
    if daemon["running"]:
        started = f", started {shown_time(_parse_iso(daemon['started']))}" if daemon["started"] \
            else ""
        state = f"running (pid {daemon['pid']}{started})"
    else:
        state = f"not running (no live pid in {daemon['pid_file']}, no `provisiond run` found)"
    directory = report["directory"]
    reach = "reachable" if directory["reachable"] else f"UNREACHABLE: {directory['error']}"
    print(f"provisiond {report['version']}: daemon {state}", file=out)
    print(f"directory {directory['uri']} {reach}", file=out)
    if not report["services"]:
        print("no services configured", file=out)
    stuck_after = human_age(report["stuck_after_seconds"])
    for service in report["services"]:
        print(file=out)
        kind = f", kind {service['kind']}" if service["kind"] else ""
        print(f"service {service['name']} ({service['base']}{kind})", file=out)
        cookie = service["cookie"]
        if cookie["error"]:
            cookie_text = f"{cookie['path']}: {cookie['error']}"
        elif cookie["present"]:
            cookie_text = f"saved {human_age(cookie['age_seconds'])} ago"
            if cookie["newest_change"]:
                cookie_text += f"; newest change {shown_time(_parse_iso(cookie['newest_change']))}"
        else:
            cookie_text = "none yet (the next start does a full refresh)"
        print(f"  cookie     {cookie_text}", file=out)
        stream = service["stream"]
        if stream is not None:
            since = shown_time(_parse_iso(stream["since"])) if stream["since"] else "?"
            stream_text = (f"connected since {since}" if stream["connected"] else
                           f"NONE for {human_age(stream['for_seconds'])}: "
                           f"{terminal_safe(stream['reason'])}")
            print(f"  stream     {stream_text}", file=out)
        if service["error"]:
            print(f"  ERROR      {service['error']}", file=out)
            continue
        print(f"  entries    {service['entries']}: {_counts_line(service['counts'])}", file=out)
        _rows(out, "failed", service["failed"], lambda r: (
            f"rc={r['return_value']}  {human_age(r['age_seconds'])} ago  "
            + terminal_safe(r.get("message") or "(no message)")))
        _rows(out, f"stuck >{stuck_after}", service["stuck"],
              lambda r: f"unchanged for {human_age(r['age_seconds'])}")
        if service["working"]:
            print(f"  working    {len(service['working'])} (in a worker's hands now)", file=out)
        _rows(out, "scheduled", service["scheduled"],
              lambda r: f"on {r['execution_date']} (in {r['in_days']} days)")
        _live(out, service.get("live"))
    summary = report["summary"]
    print(file=out)
    print(f"{summary['failed']} failed, {summary['stuck']} stuck, {summary['working']} working, "
          f"{summary['scheduled']} scheduled, {summary['entries']} entries", file=out)
    if summary.get("no_stream"):
        print(f"{summary['no_stream']} service(s) without a change stream: nothing new is "
              "processed for them", file=out)


def _rows(out: TextIO, title: str, rows: list[dict[str, Any]], detail: Any) -> None:
    if not rows:
        return
    print(f"  {title:<10} {len(rows)}", file=out)
    for row in rows[:LIST_LIMIT]:
        print(f"    {terminal_safe(row['dn'])}  {row['mode']}  {detail(row)}", file=out)
    if len(rows) > LIST_LIMIT:
        print(f"    ... and {len(rows) - LIST_LIMIT} more (status --json lists all)", file=out)


def _live(out: TextIO, facts: Mapping[str, Any] | None) -> None:
    """What the service's `status:` command printed (operate/live.py)."""
    if facts is None:
        return
    lines = facts["lines"]
    if not lines and not facts["error"]:
        print("  live       (nothing reported)", file=out)
    for line in lines[:LIST_LIMIT * 5]:
        print(f"  live       {terminal_safe(line)}", file=out)
    if len(lines) > LIST_LIMIT * 5:
        print(f"    ... and {len(lines) - LIST_LIMIT * 5} more (status --json lists all)",
              file=out)
    if facts["error"]:
        print(f"  live       ERROR {terminal_safe(facts['error'])}", file=out)


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def format_json(report: Mapping[str, Any], out: TextIO) -> None:
    json.dump(report, out, indent=2, sort_keys=False)
    out.write("\n")


def main(config: Config, out: TextIO, *, as_json: bool = False,
         stuck_after: float = DEFAULT_STUCK_AFTER) -> int:
    report = collect(config, stuck_after=stuck_after)
    (format_json if as_json else format_text)(report, out)
    return exit_status(report)
