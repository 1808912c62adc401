"""What each shipped template's rendered file must look like, for test_hostile_values.py.

A hostile value that gets past validation shows up in a rendered file as an extra line or
field, a control character or a metacharacter, or a line its reader would not accept. The
checks here look for each of these without trusting the template: the file is compared with
a render of the same values whose strings hold only [A-Za-z0-9_] (`neutral`, for templates
whose output does not depend on a value's content: NEUTRAL), and every line is matched
against its file's grammar (TEMPLATE_CHECKS, one entry per shipped template; the storage
kinds' files, read as their readers read them, in hostile_storage.py). A check gets the
file and the model it was rendered from (`vars`; `values` for a file per entry, `sources`
for a file of all entries).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from provisiond.model.settings import ServiceSpec
from tests.model.hostile_storage import (
    bacula_problems,
    bacula_validate_passes,
    scst_problems,
    target_check_passes,
    target_check_problems,
    tgt_problems,
)
from tests.model.hostile_world import make_devices

# Characters that quote, escape, comment, template or mean something to a shell.
META = frozenset("'\"`{}[]()<>$;|&*?~!\\#%^")


def neutral(value: Any) -> Any:
    """The same value with every character of its strings but [A-Za-z0-9] replaced by '_'."""
    if isinstance(value, str):
        return re.sub(r"[^A-Za-z0-9]", "_", value)
    if isinstance(value, list | tuple):
        return [neutral(item) for item in value]
    return value


def config_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line and not line.startswith("#")]


RSNAPSHOT_ARGS = {"config_version": 1, "snapshot_root": 1, "no_create_root": 1, "cmd_cp": 1,
                  "cmd_rm": 1, "cmd_rsync": 1, "cmd_logger": 1, "retain": 2, "verbose": 1,
                  "loglevel": 1, "lockfile": 1, "rsync_long_args": 1, "backup": 2}


def rsnapshot_problems(text: str, model: Mapping[str, Any]) -> list[str]:
    """Directive TAB argument(s); one snapshot_root, lockfile and backup; known levels."""
    vars_ = model["vars"]
    problems, seen = [], Counter[str]()
    for line in config_lines(text):
        key, *args = line.split("\t")
        seen[key] += 1
        if RSNAPSHOT_ARGS.get(key) != len(args) or any(not a or a != a.strip() for a in args):
            problems.append(f"{line!r}: not an rsnapshot directive with its arguments")
        elif key == "retain" and (args[0] not in vars_["levels"]
                                  or not re.fullmatch(r"[1-9][0-9]?", args[1])):
            problems.append(f"{line!r}: bad retain level")
    if not seen["retain"] or any(seen[key] != 1 for key in ("snapshot_root", "lockfile", "backup")):
        problems.append(f"directives {dict(seen)}")
    return problems


CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cron_problems(text: str, model: Mapping[str, Any]) -> list[str]:
    """SHELL/PATH, or 5 time fields, the user and `rsnapshot -c CONFIG LEVEL`."""
    vars_ = model["vars"]
    config = re.escape(vars_["rsnapshot_config_dir"]) + r"/rsnapshot\.conf\.[1-9][0-9]{5,9}"
    problems = []
    for line in config_lines(text):
        if re.fullmatch(r"(SHELL|PATH)=\S+", line):
            continue
        fields = line.split()
        valid = len(fields) == 10 and all(
            field == "*" or (field.isascii() and field.isdigit() and low <= int(field) <= high)
            for field, (low, high) in zip(fields, CRON_RANGES, strict=False)
        ) and fields[5:8] == [vars_["schedule_user"], vars_["rsnapshot"], "-c"] and bool(
            re.fullmatch(config, fields[8])) and fields[9] in vars_["levels"]
        if not valid:
            problems.append(f"{line!r}: not 5 time fields, the user and rsnapshot -c CONFIG LEVEL")
    return problems


def tab_fields_problems(keys: tuple[str, ...], fields: int) -> Callable[..., list[str]]:
    """Lines of `fields` TAB-separated non-empty fields, the first one of `keys` (or any)."""
    def check(text: str, model: Mapping[str, Any]) -> list[str]:
        del model
        return [f"{line!r}: not {fields} TAB-separated fields" for line in config_lines(text)
                if len(parts := line.split("\t")) != fields or not all(parts)
                or (keys and parts[0] not in keys)]
    return check


# Every shipped template and what each of its lines must be.
TEMPLATE_CHECKS: dict[str, Callable[[str, Mapping[str, Any]], list[str]]] = {
    "backup-account/rsnapshot.conf.j2": rsnapshot_problems,
    "backup-account/schedule.cron.j2": cron_problems,
    "demo/item.conf.j2": tab_fields_problems(("name", "size", "owner", "note"), 2),
    "demo/index.conf.j2": tab_fields_problems((), 3),
    "iscsi/target-check.j2": target_check_problems,
    "iscsi/tgt.conf.j2": tgt_problems,
    "iscsi/scst.conf.j2": scst_problems,
    "bacula/bacula-sd.conf.j2": bacula_problems,
}
# Templates whose output depends on no value's content: compared with the neutral render.
NEUTRAL = frozenset({"backup-account/rsnapshot.conf.j2", "backup-account/schedule.cron.j2",
                     "demo/item.conf.j2", "demo/index.conf.j2"})
# Whether the kind's validate command must accept the file rendered from this model (by
# default it must), after PREPARE; a validator that refuses for a documented reason says so.
VALIDATE_PASSES: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "iscsi/target-check.j2": target_check_passes,
    "bacula/bacula-sd.conf.j2": bacula_validate_passes,
}


def make_rsnapshot_dirs(text: str, service: ServiceSpec, site: Path) -> None:
    """What the backup-chroot hook creates before the config is written (configtest needs
    them), only inside the service's roots."""
    del site
    for line in text.split("\n"):
        key, *args = line.split("\t")
        if key in ("snapshot_root", "backup"):
            directory = Path(args[0])
            assert any(directory.is_relative_to(root) for root in service.roots), line
            directory.mkdir(parents=True, exist_ok=True)


# What must exist before a file's validate command can accept it.
PREPARE: dict[str, Callable[[str, ServiceSpec, Path], None]] = {
    "backup-account/rsnapshot.conf.j2": make_rsnapshot_dirs,
    "bacula/bacula-sd.conf.j2": make_devices,
}


def file_problems(name: str, text: str, plain: str | None,
                  model: Mapping[str, Any]) -> list[str]:
    """Why `text` (the file `name` rendered from `model`) is not safe: compared with
    `plain`, the render of the same values made neutral (None: not compared), and with the
    file's grammar."""
    problems = []
    bad = sorted({c for c in text if c not in "\n\t" and not c.isprintable()})
    if bad:
        problems.append(f"control or format characters {bad}")
    if plain is None:
        return problems + TEMPLATE_CHECKS[name](text, model)
    if [line.count("\t") for line in text.split("\n")] != [
            line.count("\t") for line in plain.split("\n")] or len(text) != len(plain):
        problems.append("a value added a line or a field (differs from the neutral render)")
    else:
        meta = sorted({a for a, b in zip(text, plain, strict=True) if a != b} & META)
        if meta:
            problems.append(f"value characters {meta} in the file")
    return problems + TEMPLATE_CHECKS[name](text, model)
