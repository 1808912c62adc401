"""An operator's bad day, on stoney backup accounts and a real slapd.

Daemons SIGKILLed at random moments, slapd restarted, SIGKILLed and stopped while a daemon is
asked to stop, two daemons on one subtree with a stale journal record: afterwards nothing is
lost (every account `added`), stranded (`adding` without a ReturnValue), failed or run twice,
no temp file is left, and the schedule lists exactly the active accounts. Seeds are fixed and
every figure is printed (run with -s to see them).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.core.journal import Claim, Journal, new_token
from provisiond.testing.slapd import Slapd
from tests.kinds.backup.support import (
    ACCOUNTS,
    MODE,
    RETURN,
    Site,
    add_account,
    connect,
    service,
)
from tests.support import add_identity, read, start_daemon, stop_daemon, wait_for, write_config

pytestmark = pytest.mark.slow

FIRST_UID = 2000000


def fast_config(directory: Path, slapd: Slapd, site: Site, **top: Any) -> Path:
    return write_config(directory, slapd, service(site), workers=4,
                        retry={"limit": 3, "initial": 0.2, "maximum": 2},
                        hooks={"timeout": 20, "kill_grace": 1}, **top)


def accounts(conn: ldap3.Connection) -> dict[str, dict[str, str]]:
    """uid -> {mode, rv} of every account."""
    conn.search(ACCOUNTS, "(objectClass=sstBackup)", attributes=["uid", MODE, RETURN])
    found = {}
    for item in conn.response or []:
        attrs = item["attributes"]
        found[attrs["uid"][0]] = {"mode": str(attrs.get(MODE) or ""),
                                  "rv": str(attrs.get(RETURN) or "")}
    return found


def scheduled_uids(site: Site) -> set[str]:
    if not site.schedule.exists():
        return set()
    uids = set()
    for line in site.schedule.read_text().splitlines():
        if line.strip() and not line.startswith("#") and "rsnapshot.conf." in line:
            uids.add(line.split("rsnapshot.conf.")[1].split()[0])
    return uids


def temp_files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob(".*.tmp")]


class Writer:
    """Adds accounts in the background, surviving slapd outages, until `count` are in."""

    def __init__(self, slapd: Slapd, count: int, first: int = FIRST_UID,
                 pause: float = 0.01) -> None:
        self.slapd, self.count, self.first, self.pause = slapd, count, first, pause
        self.written: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def _run(self) -> None:
        conn = None
        while len(self.written) < self.count:
            uid = str(self.first + len(self.written))
            try:
                if conn is None or conn.closed:
                    conn = connect(self.slapd)
                add_account(conn, uid)
                self.written.append(uid)
            except (ldap3.core.exceptions.LDAPException, AssertionError, OSError):
                conn = None
                if self._exists(uid):  # the add went through, its answer was lost
                    self.written.append(uid)
                time.sleep(0.05)
            time.sleep(self.pause)

    def _exists(self, uid: str) -> bool:
        try:
            return uid in accounts(connect(self.slapd))
        except (ldap3.core.exceptions.LDAPException, OSError):
            return False

    def join(self, timeout: float = 120) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the writer did not finish"


def kill_slapd(slapd: Slapd) -> None:
    """SIGKILL: slapd restarts from its last checkpointed contextCSN (older than cookies)."""
    assert slapd.process is not None
    slapd.process.send_signal(signal.SIGKILL)
    slapd.process.wait()
    slapd.process = None
    slapd.start()


def settle(conn: ldap3.Connection, uids: list[str], timeout: float = 240
           ) -> dict[str, dict[str, str]]:
    def done() -> dict[str, dict[str, str]] | None:
        found = accounts(conn)
        return found if all(found.get(u, {}).get("mode") == "added" for u in uids) else None

    try:
        return wait_for(done, timeout=timeout, what="every account added")
    except AssertionError:
        found = accounts(conn)
        pending = {u: found.get(u) for u in uids if found.get(u, {}).get("mode") != "added"}
        raise AssertionError(f"{len(pending)} accounts not added: "
                             f"{dict(list(pending.items())[:10])}") from None


def assert_all_well(conn: ldap3.Connection, site: Site, uids: list[str], state: Path) -> None:
    found = settle(conn, uids)
    stranded = [u for u, a in found.items() if a["mode"].endswith("ing") and not a["rv"]]
    failed = [u for u, a in found.items() if a["rv"] not in ("", "0")]
    assert (stranded, failed) == ([], []), (stranded, failed)
    assert temp_files(site.base, state) == []
    assert scheduled_uids(site) == set(uids), set(uids) ^ scheduled_uids(site)
    left = {service.name: Journal(state, service.name).claims()
            for service in (state / "inflight").iterdir() if service.is_dir()}
    assert not any(left.values()), f"journal records left: {left}"


def test_random_sigkills_lose_and_strand_nothing(stoney: Slapd, site: Site,
                                                 tmp_path: Path) -> None:
    seed, count, kills = 7, 240, 20
    rng = random.Random(seed)
    config = fast_config(tmp_path / "cfg", stoney, site)
    log = tmp_path / "daemon.log"
    writer = Writer(stoney, count).start()
    daemon = start_daemon(config, log=log)
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.8))
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
            daemon = start_daemon(config, log=log)
        writer.join()
        assert_all_well(connect(stoney), site, writer.written, tmp_path / "cfg" / "state")
    finally:
        stop_daemon(daemon)
    text = log.read_text(errors="replace")
    print(f"\nfaults: sigkill seed={seed} accounts={count} kills={kills} "
          f"resumes={text.count('event=resume ')} "
          f"stale-temps-removed={text.count('removed-stale-temp')} "
          f"claims={text.count('event=claimed')}")
    assert "internal-error" not in text


def test_slapd_outages_and_a_stop_during_one_lose_nothing(stoney: Slapd, site: Site,
                                                          tmp_path: Path) -> None:
    count = 150
    config = fast_config(tmp_path / "cfg", stoney, site)
    log = tmp_path / "daemon.log"
    writer = Writer(stoney, count, pause=0.03).start()
    daemon = start_daemon(config, log=log)
    restarts = 0

    def after(n: int, action: Callable[[], None]) -> None:
        nonlocal restarts
        wait_for(lambda: len(writer.written) >= n, timeout=120, what=f"{n} accounts written")
        action()
        restarts += 1

    try:
        after(25, stoney.restart)  # session log lost
        after(50, lambda: kill_slapd(stoney))  # contextCSN older than the daemon's cookie
        after(75, stoney.stop)  # an outage ...
        time.sleep(1.0)
        assert stop_daemon(daemon) == 0  # ... during which the daemon is stopped
        stoney.start()
        daemon = start_daemon(config, log=log)
        after(100, lambda: kill_slapd(stoney))
        after(120, stoney.restart)
        writer.join()
        assert_all_well(connect(stoney), site, writer.written, tmp_path / "cfg" / "state")
    finally:
        stop_daemon(daemon)
    print(f"\nfaults: outages accounts={count} slapd-restarts={restarts} daemon-stops=1")


def test_two_daemons_and_a_stale_journal_record_run_nothing_twice(
    stoney: Slapd, tmp_path: Path
) -> None:
    # Two hosts (two sites), one subtree. Host A was killed right after journalling a claim
    # that host B won; B is still running that account's hooks when A starts again.
    sites = {name: Site(tmp_path / name / "site").create() for name in ("a", "b")}
    slow = sites["b"].fake_setquota
    slow.write_text(f'#!/bin/sh\necho "$*" >> {sites["b"].setquota_log}\nsleep 3\nexit 0\n')
    conn = connect(stoney)
    # daemons sharing a subtree bind as identities of their own (README)
    configs = {name: fast_config(tmp_path / name / "cfg", stoney, site,
                                 ldap=add_identity(conn, stoney, f"provisiond-{name}",
                                                   tmp_path / name))
               for name, site in sites.items()}
    daemon_b = start_daemon(configs["b"], log=tmp_path / "b.log")
    daemon_a = None
    try:
        wait_for(lambda: "event=ready" in (tmp_path / "b.log").read_text(), what="b ready")
        uid = "2100000"
        dn = add_account(conn, uid)
        wait_for(lambda: sites["b"].setquota_calls(), what="b runs the quota hook")
        uuid = read(conn, dn)["entryUUID"]
        Journal(tmp_path / "a" / "cfg" / "state", "backup").record(
            Claim(uuid, dn, "add", token=new_token()))
        daemon_a = start_daemon(configs["a"], log=tmp_path / "a.log")
        settle(conn, [uid], timeout=60)
        others = [str(2100001 + n) for n in range(20)]
        for other in others:
            add_account(conn, other)
        settle(conn, [uid, *others], timeout=120)
    finally:
        codes = [stop_daemon(d) for d in (daemon_a, daemon_b) if d is not None]
    assert codes == [0, 0]
    runs = {name: site.setquota_calls() for name, site in sites.items()}
    assert sum(f" {uid} " in f" {line} " for calls in runs.values() for line in calls) == 1, runs
    text_a = (tmp_path / "a.log").read_text(errors="replace")
    assert "event=claim-not-ours" in text_a
    total = sum(len(site.setquota_calls()) for site in sites.values())
    assert total == 21, total  # every account's quota set exactly once, by one of the two
    print(f"\nfaults: two daemons accounts=21 planted=1 quota-runs={total} double-runs=0")


def test_daemon_start_after_slapd_lost_its_newer_state_is_ready(
    stoney: Slapd, site: Site, tmp_path: Path
) -> None:
    config = fast_config(tmp_path / "cfg", stoney, site)
    conn = connect(stoney)
    uids = [str(FIRST_UID + n) for n in range(5)]
    for uid in uids[:3]:
        add_account(conn, uid)
    daemon = start_daemon(config, log=tmp_path / "daemon.log")
    try:
        settle(conn, uids[:3], timeout=60)
    finally:
        assert stop_daemon(daemon) == 0
    kill_slapd(stoney)  # restarts older than the cookie the daemon saved: LDAP 53
    log = tmp_path / "daemon.log"
    before = log.stat().st_size
    daemon = start_daemon(config, log=log)
    try:
        wait_for(lambda: "event=ready" in log.read_text()[before:], timeout=30,
                 what="ready on a quiet directory")
        for uid in uids[3:]:
            add_account(connect(stoney), uid)
        settle(connect(stoney), uids, timeout=60)
    finally:
        assert stop_daemon(daemon) == 0
