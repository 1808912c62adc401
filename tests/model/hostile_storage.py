"""What the storage kinds' rendered files must be, for test_hostile_values.py.

These templates decide by a value's content (a portal within allowed_portals, a library's
devices under device_prefixes), so a render with neutral values is no fair comparison. Each
file is instead read as its reader reads it (tgt lines, scstadmin's sections and tokens,
Bacula's resources and quoted strings) and compared with what the entries say it must hold,
derived here from the rendered model (`vars`, `sources`, `values`) independently of the
template: every token equal to its value, every value's token in its strict character set,
nothing more. A value that adds a line, a token, a section or a resource shows as a
difference; one that carries a character its reader treats specially shows as a token
outside its set.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from provisiond.aggregates.mirror import Member

REPO = Path(__file__).resolve().parents[2]
IQN = r"(?:iqn|eui|naa)\.[A-Za-z0-9.:-]+"
PATH = r"(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)+"
CHAP_USER = r"[A-Za-z0-9._@:-]{1,64}"
CHAP_SECRET = r"[A-Za-z0-9._@:+=,/%^~!*-]{12,16}"


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line and not line.startswith("#")]


def _sources(model: Mapping[str, Any], name: str) -> list[Member]:
    return list(model["sources"].get(name, []))


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def with_port(portal: str) -> str:
    return portal if re.search(r":[0-9]+$", portal.split("]")[-1]) else portal + ":3260"


def portal_host(portal: str) -> str:
    """The address as written: `[v6]` with its brackets, or v4; without the port."""
    return portal.split("]")[0] + "]" if portal.startswith("[") else portal.split(":")[0]


def portal_allowed(portal: str, allowed: Sequence[str]) -> bool:
    """README "iSCSI targets": the portal, the portal with the default port, or its
    address alone (any port) is one of this host's allowed_portals."""
    return portal in allowed or with_port(portal) in allowed or portal_host(portal) in allowed


def _luns(model: Mapping[str, Any], target: Member) -> list[Member]:
    """The LUNs listed under `target`: their target and disk resolved, the disk's device known."""
    return [lun for lun in _sources(model, "iscsi-lun")
            if "target" in lun.refs and "disk" in lun.refs
            and lun.refs["disk"].outputs.get("device") and lun.refs["target"].dn == target.dn]


def _chap(values: Mapping[str, Any]) -> tuple[str, str] | None:
    user, secret = values.get("chap_user"), values.get("chap_secret")
    return (user, secret) if user and secret else None


# -- tgt: the lines iscsi-tgt-apply reads ------------------------------------------------------

TGT_ARGS = {"target": (IQN,), "portal": (r"(?:[0-9.]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}",),
            "initiator": (IQN,), "chap": (CHAP_USER, CHAP_SECRET),
            "lun": (r"[1-9][0-9]{0,2}", PATH), "end": ()}


@functools.cache
def tgt_apply() -> Any:
    from tests.kinds.bacula.support import load_script
    return load_script(REPO / "scripts" / "iscsi-tgt-apply")


def tgt_problems(text: str, model: Mapping[str, Any]) -> list[str]:
    """`target IQN` blocks to `end`, one directive per line, each as the entries say; and
    the hook's own reader (iscsi-tgt-apply parse_targets) accepts the file."""
    problems, found = [], []
    for line in _lines(text):
        key, *args = line.split(" ")
        shapes = TGT_ARGS.get(key)
        if shapes is None or len(args) != len(shapes) or not all(
                re.fullmatch(shape, arg, re.ASCII) for shape, arg in zip(shapes, args, strict=True)):
            problems.append(f"{line!r}: not a tgt directive with its arguments")
        elif key == "target":
            found.append([line])
        elif found and found[-1][-1] != "end":
            found[-1].append(line)
        else:
            problems.append(f"{line!r}: outside a target block")
    allowed = model["vars"].get("allowed_portals") or []
    expected = []
    for target in _sources(model, "iscsi-target"):
        values, chap = target.values, _chap(target.values)
        expected.append([f"target {values['iqn']}",
                         *(f"portal {with_port(p)}" for p in values.get("portals") or []
                           if portal_allowed(p, allowed)),
                         *(f"initiator {i}" for i in values.get("initiators") or []),
                         *([f"chap {chap[0]} {chap[1]}"] if chap else []),
                         *(f"lun {n} {d}" for n, d in sorted(
                             (lun.values["lun"], lun.refs["disk"].outputs["device"])
                             for lun in _luns(model, target))), "end"])
    if found != expected:
        problems.append(f"the targets differ from the entries': {found} != {expected}")
    try:
        tgt_apply().parse_targets(text)
    except tgt_apply().Refused as exc:
        problems.append(f"iscsi-tgt-apply refuses it: {exc}")
    return problems


def target_check_problems(text: str, model: Mapping[str, Any]) -> list[str]:
    """The entry's portals, the allowed ones and whether CHAP is set: never the secret."""
    values, allowed = model["values"], model["vars"].get("allowed_portals") or []
    first, *rest = [line for line in text.split("\n") if line]
    expected = [*(f"portal {p}" for p in values.get("portals") or []),
                *(f"allowed {p}" for p in allowed),
                f"chap-user {'yes' if values.get('chap_user') else 'no'}",
                f"chap-secret {'yes' if values.get('chap_secret') else 'no'}"]
    problems = [] if first.startswith("# provisiond: the checks of ") else [f"{first!r}"]
    if rest != expected:
        problems.append(f"lines {rest} != {expected}")
    if values.get("chap_secret") and values["chap_secret"] in text:
        problems.append("the CHAP secret is in the check file")
    return problems


def target_check_passes(model: Mapping[str, Any]) -> bool:
    """Whether iscsi-tgt-apply check-target must accept the entry (else it fails it, 31)."""
    values, allowed = model["values"], model["vars"].get("allowed_portals") or []
    return all(portal_allowed(p, allowed) for p in values.get("portals") or []) and (
        values.get("chap_user") is None) == (values.get("chap_secret") is None)


# -- SCST: sections and tokens as scstadmin reads them -----------------------------------------

SCST_LINE = re.compile(r'([A-Za-z_]+)((?: (?:[^\s"{}#\\]+|"[^\s"{}#\\]+ [^\s"{}#\\]+"))*)( \{)?')
SCST_ARGS = {"HANDLER": ("vdisk_blockio",), "DEVICE": (r"[A-Za-z0-9][A-Za-z0-9_-]{0,48}",),
             "filename": (PATH,), "TARGET_DRIVER": ("iscsi",), "enabled": ("[01]",),
             "TARGET": (IQN,), "allowed_portal": (r"[0-9A-Fa-f.:]+",),
             "IncomingUser": (f'"{CHAP_USER} {CHAP_SECRET}"',), "GROUP": ("provisiond",),
             "LUN": (r"[0-9]{1,5}", r"[A-Za-z0-9][A-Za-z0-9_-]{0,48}"), "INITIATOR": (IQN,)}
Node = tuple[str, tuple[str, ...], Any]  # key, arguments, children (a list) or None


def scst_tree(text: str) -> tuple[list[Node], list[str]]:
    """The sections and directives: a line is `}`, a `#` comment from column 0, or a key,
    at most two arguments (scstadmin keeps three tokens) and an optional opening brace."""
    root: list[Node] = []
    stack, problems = [root], []
    for line in text.split("\n"):
        stripped = line.strip("\t")
        if not stripped or line.startswith("#"):
            continue
        if stripped == "}":
            if len(stack) == 1:
                problems.append("a `}` closes no section")
            else:
                stack.pop()
            continue
        match = SCST_LINE.fullmatch(stripped)
        args = tuple(re.findall(r'"[^"]*"|\S+', match.group(2))) if match else ()
        shapes = SCST_ARGS.get(match.group(1), ()) if match else ()
        if match is None or len(args) != len(shapes) or not all(
                re.fullmatch(shape, arg, re.ASCII) for shape, arg in zip(shapes, args, strict=True)):
            problems.append(f"{line!r}: not KEY ARGUMENTS [{{] with scstadmin's tokens")
            continue
        children: list[Node] | None = [] if match.group(3) else None
        stack[-1].append((match.group(1), args, children))
        if children is not None:
            stack.append(children)
    if len(stack) != 1:
        problems.append(f"{len(stack) - 1} section(s) not closed")
    return root, problems


def scst_expected(model: Mapping[str, Any]) -> list[Node]:
    """README "iSCSI targets" (SCST): a vdisk_blockio device per exported disk, every target
    with its allowed portals' addresses, CHAP, and one group of its LUNs and initiators."""
    allowed = model["vars"].get("allowed_portals") or []
    devices: dict[str, str] = {}
    targets = []
    for target in sorted(_sources(model, "iscsi-target"), key=lambda t: t.values["iqn"].lower()):
        values, chap = target.values, _chap(target.values)
        luns = sorted((lun.values["lun"], lun.refs["disk"]) for lun in _luns(model, target))
        for _, disk in luns:
            devices.setdefault(disk.values["name"], disk.outputs["device"])
        addresses = _unique([portal_host(p).strip("[]") for p in values.get("portals") or []
                             if portal_allowed(p, allowed)])
        group = [*(("LUN", (str(n), disk.values["name"]), None) for n, disk in luns),
                 *(("INITIATOR", (i,), None) for i in _unique(values.get("initiators") or []))]
        targets.append(("TARGET", (values["iqn"],), [
            ("enabled", ("1" if luns else "0",), None),
            *(("allowed_portal", (a,), None) for a in addresses),
            *([("IncomingUser", (f'"{chap[0]} {chap[1]}"',), None)] if chap else []),
            ("GROUP", ("provisiond",), group)]))
    handler: list[Node] = [("HANDLER", ("vdisk_blockio",), [
        ("DEVICE", (name,), [("filename", (path,), None)]) for name, path in sorted(
            devices.items())])] if devices else []
    return [*handler, ("TARGET_DRIVER", ("iscsi",), [("enabled", ("1",), None), *targets])]


def twice(nodes: list[Node], where: str = "") -> list[str]:
    """Sections or LUNs named twice in one section: scstadmin keeps one of them."""
    seen = [f"{key} {args[0]}" for key, args, children in nodes
            if children is not None or key == "LUN"]
    problems = [f"{where}{name} twice" for name in _unique(seen) if seen.count(name) > 1]
    for key, args, children in nodes:
        problems += twice(children, f"{where}{key} {args[0]}: ") if children else []
    return problems


def scst_problems(text: str, model: Mapping[str, Any]) -> list[str]:
    tree, problems = scst_tree(text)
    problems += twice(tree)
    expected = scst_expected(model)
    if not problems and tree != expected:
        problems.append(f"the sections differ from the entries': {tree} != {expected}")
    first = text.split("\n", 1)[0]
    prefix = "# provisiond-scst-model: "
    if not first.startswith(prefix):
        problems.append(f"first line {first[:80]!r} is not the model")
    else:
        json.loads(first[len(prefix):])
    secrets = [t.values["chap_secret"] for t in _sources(model, "iscsi-target")
               if t.values.get("chap_secret")]
    if any(secret in first for secret in secrets):
        problems.append("a CHAP secret is in the model line")
    return problems


# -- Bacula: resources of `Key = value` lines, quoted strings --------------------------------

BACULA_VALUE = r'"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"|[A-Za-z0-9_.:/-]+'
BACULA_DIRECTIVE = re.compile(rf"([A-Za-z][A-Za-z ]*?) = ((?:{BACULA_VALUE})"
                              rf"(?:(?:, | = )(?:{BACULA_VALUE}))*)")
Resource = tuple[str, dict[str, list[str]]]


def bacula_resources(text: str, password_file: str) -> tuple[list[Resource], list[str]]:
    """The resources (type, directive -> its values unquoted), one directive per line."""
    resources: list[Resource] = []
    problems: list[str] = []
    current: dict[str, list[str]] | None = None
    for line in text.split("\n"):
        stripped = line.strip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        opening = re.fullmatch(r"([A-Za-z]+) \{", stripped)
        directive = BACULA_DIRECTIVE.fullmatch(stripped)
        if opening and current is None:
            current = {}
            resources.append((opening.group(1), current))
        elif stripped == "}" and current is not None:
            current = None
        elif current is not None and stripped == f"@{password_file}":
            current.setdefault("@", []).append(password_file)
        elif directive and current is not None and directive.group(1) not in current:
            current[directive.group(1)] = [
                re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
                for value in re.findall(BACULA_VALUE, directive.group(2))]
        else:
            problems.append(f"{line!r}: not a resource, `}}` or one `Key = value` directive")
    if current is not None:
        problems.append("a resource is not closed")
    return resources, problems


def library_refused(library: Member) -> bool:
    """The tape-library kind refuses it (40): a drive index twice, a device outside
    device_prefixes (a prefix ending in `/`: below it; else followed by a number)."""
    indexes = [line.split(" ", 1)[0] for line in library.values["drives"]]
    devices = [library.values["changer"], *(line.split(" ", 1)[1]
                                            for line in library.values["drives"])]

    def under(path: str, prefix: str) -> bool:
        rest = path[len(prefix):] if path.startswith(prefix) else ""
        return bool(rest) and (prefix.endswith("/") or rest.isdigit())

    prefixes = library.vars.get("device_prefixes") or []
    return len(set(indexes)) < len(indexes) or not all(
        any(under(path, prefix) for prefix in prefixes) for path in devices)


def bacula_expected(model: Mapping[str, Any]) -> tuple[list[Resource], list[str]]:
    """README "Bacula storage daemon": per listed library an Autochanger and a tape Device
    per drive; per flagged filesystem repository an Autochanger of File devices; the
    libraries the kind refuses only named in a comment."""
    vars_ = model["vars"]
    devices: list[Resource] = []
    changers: list[Resource] = []
    left_out = []
    for library in [m for m in _sources(model, "tape-library") if m.vars.get("bacula_sd_config")]:
        name, values = library.values["name"], library.values
        if library_refused(library):
            left_out.append(name)
            continue
        drives = [line.split(" ", 1) for line in sorted(values["drives"])]
        changers.append(("Autochanger", {"Name": [name], "Device": [
            f"{name}:drive-{index}" for index, _ in drives], "Changer Device": [
            values["changer"]], "Changer Command": [vars_["bacula_changer_command"]]}))
        devices += [("Device", {"Name": [f"{name}:drive-{index}"], "Media Type": [
            values["media_type"]], "Archive Device": [path], "Drive Index": [index]})
            for index, path in drives]
    for disk in _sources(model, "disk-repository"):
        values = disk.values
        if not (disk.vars.get("bacula_sd_config") and values.get("type") == "filesystem"
                and values.get("bacula_device")):
            continue
        name = f"{values['name']}:disk"
        count = range(vars_["bacula_file_devices"])
        changers.append(("Autochanger", {"Name": [name], "Device": [f"{name}-{n}" for n in count],
                                         "Changer Device": ["/dev/null"], "Changer Command": [""]}))
        path = disk.outputs.get("path") or f"{disk.vars['mount_root']}/{values['name']}"
        devices += [("Device", {"Name": [f"{name}-{n}"], "Media Type": [
            values.get("media_type") or f"File-{values['name']}"], "Archive Device": [path],
            "Drive Index": [str(n)]}) for n in count]
    return changers + devices, left_out


def bacula_problems(text: str, model: Mapping[str, Any]) -> list[str]:
    vars_ = model["vars"]
    resources, problems = bacula_resources(text, vars_["bacula_director_password_file"])
    expected, left_out = bacula_expected(model)
    if not expected:  # bacula-sd needs a Device: the placeholder
        expected = [("Device", {"Name": ["provisiond:none"], "Media Type": ["provisiond:none"],
                                "Archive Device": [vars_["bacula_sd_working_directory"]]})]
    keys = {key for _, directives in expected for key in directives}
    found = [(kind, {k: v for k, v in directives.items() if k in keys})
             for kind, directives in resources if kind in ("Autochanger", "Device")]
    if sorted(map(repr, found)) != sorted(map(repr, expected)):
        problems.append(f"the devices differ from the entries': {found} != {expected}")
    kinds = [kind for kind, _ in resources]
    if [kinds.count(k) for k in ("Storage", "Director", "Messages")] != [1, 1, 1]:
        problems.append(f"resources {kinds}")
    storage = next((d for k, d in resources if k == "Storage"), {})
    if storage.get("Name") != [vars_["bacula_sd_name"]]:
        problems.append(f"Storage {storage}")
    director = next((d for k, d in resources if k == "Director"), {})
    if director != {"Name": [vars_["bacula_director_name"]],
                    "@": [vars_["bacula_director_password_file"]]}:
        problems.append(f"Director {director}")
    for name in left_out:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        if f'# Tape library "{quoted}" left out: ' not in text:
            problems.append(f"library {name!r} is neither listed nor said to be left out")
    return problems


def bacula_validate_passes(model: Mapping[str, Any]) -> bool:
    """bacula-sd-check must accept the file when every device it names exists (the test
    makes them inside its site; one below a device node cannot exist)."""
    resources, _ = bacula_expected(model)
    return all(Path(path).exists() for _, directives in resources
               for key in ("Archive Device", "Changer Device") for path in directives.get(key, []))
