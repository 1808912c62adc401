"""The configuration contract: every section and option, and every key of a service
definition, documented once (the sample config and docs/KINDS.md are generated from here)."""

from __future__ import annotations

from dataclasses import replace

from provisiond.config.kind_vars import VAR_KEYS
from provisiond.config.schema import Option, Section, reference_lines
from provisiond.model.settings import StateAttributes
from provisiond.model.states import LIFECYCLES, RESOURCE

LDAP = Section(
    "ldap",
    "The directory to watch. Claims and reports go to write_uri (one provider) when set.",
    (
        Option("uri", "str", "LDAP URI of the server to read and stream from.", required=True,
               example="ldap://127.0.0.1:389"),
        Option("write_uri", "str", "The one provider that takes claims and reports "
               "(compare-and-swap is not safe across multi-master)."),
        Option("bind_dn", "str", "DN to bind as.", example="cn=provisiond,dc=example,dc=org"),
        Option("bind_password_file", "str", "File holding the bind password on its first "
               "line; must not be readable by group or others.",
               example="/etc/provisiond/bind.secret"),
        Option("start_tls", "bool", "Issue StartTLS after connecting.", default=False),
        Option("ca_file", "str", "CA certificate bundle to verify the server with."),
        Option("timeout", "number", "Seconds to wait for the server to connect or answer.",
               default=10.0, minimum=0.1, maximum=3600),
    ),
)

SYNC = Section(
    "sync",
    "How changes are noticed.",
    (
        Option("mode", "str", "persist: RFC 4533 refreshAndPersist (changes within "
               "milliseconds); refresh: refreshOnly every interval; poll: entryCSN search every "
               "interval (safe against a single provider only, never sees deletes).",
               default="persist", choices=("persist", "refresh", "poll")),
        Option("interval", "number", "Seconds between passes in refresh and poll modes.",
               default=60.0, minimum=0.05, maximum=86400),
    ),
)

# Top-level keys (not inside a section), as in the documented contract.
TOP = Section(
    "",
    "Process settings.",
    (
        Option("state_dir", "str", "Cookies, the in-flight journal and the pid file.",
               default="/var/lib/provisiond"),
        Option("pid_file", "str", "Pid file for `run --daemon` (default: state_dir/provisiond.pid)."),
        Option("workers", "int", "Entries processed at once.", default=4, minimum=1,
               maximum=256),
        Option("shutdown_grace", "number", "Seconds in-flight entries get to finish on SIGTERM.",
               default=30.0, minimum=0, maximum=3600),
        Option("templates", "list", "Template directories searched in order (default: "
               "/etc/provisiond/templates, then the shipped templates)."),
    ),
)

LOGGING = Section(
    "logging",
    "syslog output (and stderr in the foreground).",
    (
        Option("syslog_address", "str", "Unix socket path, or host:port for UDP.",
               default="/dev/log"),
        Option("facility", "str", "syslog facility.", default="daemon",
               choices=("daemon", "user", "local0", "local1", "local2", "local3", "local4",
                        "local5", "local6", "local7")),
        Option("tag", "str", "syslog tag.", default="provisiond"),
        Option("level", "str", "Lowest level logged.", default="info",
               choices=("debug", "info", "warning", "error")),
    ),
)

HOOKS = Section(
    "hooks",
    "Hook programs: argv lists, never a shell.",
    (
        Option("timeout", "number", "Seconds before a hook is terminated (then killed); a "
               "step's own `timeout` has the same range.", default=300.0, minimum=0.1,
               maximum=7 * 86400),
        Option("path", "list", "Directories searched for hooks named without a slash; also "
               "put in front of the hooks' PATH.", default=()),
        Option("kill_grace", "number", "Seconds between SIGTERM and SIGKILL.", default=5.0,
               minimum=0, maximum=3600),
    ),
)

ADMIN_HOOKS = Section(
    "admin_hooks",
    "Programs admins add around a service's steps: DIR/SERVICE/MODE.pre.d/ and MODE.post.d/, "
    "run like run-parts with argv PROGRAM SERVICE MODE DN (README: Admin hooks). A service's "
    "own `admin_hooks:` may set pre_code, post_code and post_failure.",
    (
        Option("dir", "str", "Where the directories per service are. Each program, and every "
               "directory from here down, must be owned by root (or the daemon's user) and not "
               "writable by group or others; found when the configuration loads and on SIGHUP.",
               default="/etc/provisiond/hooks.d"),
        Option("pre_code", "int", "ReturnValue when a pre hook fails (no step of the service "
               "runs).", default=90, minimum=1, maximum=999),
        Option("post_code", "int", "ReturnValue when a post hook fails and post_failure is "
               "fail.", default=91, minimum=1, maximum=999),
        Option("post_failure", "str", "fail: a failing post hook fails the entry; log: it is "
               "logged and the entry succeeds.", default="fail", choices=("fail", "log")),
    ),
)

RETRY = Section(
    "retry",
    "Transient failures (hook exit 75) are retried, then reported; while LDAP is away an "
    "entry waits for it without a limit.",
    (
        Option("limit", "int", "Attempts after the first before the entry fails.", default=5,
               minimum=0, maximum=1000),
        Option("initial", "number", "Seconds before the first retry; doubles each time.",
               default=2.0, minimum=0, maximum=86400),
        Option("maximum", "number", "Longest wait between retries.", default=300.0, minimum=0,
               maximum=86400),
    ),
)

METRICS = Section(
    "metrics",
    "Prometheus metrics as a text file for node_exporter's textfile collector.",
    (
        Option("path", "str", "File to rewrite atomically (unset: no metrics); Debian's "
               "node_exporter reads /var/lib/prometheus/node-exporter/*.prom."),
        Option("interval", "number", "Seconds between rewrites of the metrics file.",
               default=5.0, minimum=0.1, maximum=86400),
    ),
)

SECTIONS = (LDAP, SYNC, LOGGING, HOOKS, ADMIN_HOOKS, RETRY, METRICS)

# A service's own `admin_hooks:` overrides the top-level defaults, option by option.
SERVICE_ADMIN_HOOKS = Section(
    "admin_hooks",
    "This service's own admin hook settings (unset: the top-level admin_hooks' ones).",
    tuple(replace(option, default=None) for option in ADMIN_HOOKS.options if option.name != "dir"),
)

_STOCK = StateAttributes()
ATTRIBUTES = Section(
    "attributes",
    "The state machine's attribute names (stoney cloud's by default).",
    (
        Option("mode", "str", "The requested mode (add, modify, delete; -ing while at work, "
               "-ed when done).", default=_STOCK.mode),
        Option("state", "str", "0 while to do; the UTC time of the outcome when done.",
               default=_STOCK.state),
        Option("execution_date", "str", "0, or the UTC day (YYYYMMDD) from which on the "
               "entry is acted on.", default=_STOCK.execution_date),
        Option("return_value", "str", "The outcome: 0, or the failing step's code.",
               default=_STOCK.return_value),
        Option("message", "str", "Where the outcome's message and the claim token go "
               "(unset: no message is written)."),
    ),
)

DEPENDENTS = Section(
    "dependents",
    "What the service's entries allow while active (or in-flight) entries of other services "
    "reference them: a refused request is reported failed with `code`, naming them.",
    (
        Option("code", "int", "The ReturnValue of a refused request (unset: invalid_code).",
               minimum=1, maximum=999),
        Option("delete", "str", "refuse: a delete fails while entries reference the entry; "
               "allow: it goes ahead.", default="refuse",
               choices=("refuse", "allow")),
        Option("fixed", "list", "Values a modify may not change while entries reference the "
               "entry (compared with the values this daemon last provisioned).", default=()),
    ),
)

SERVICE = Section(
    "services.NAME",
    "A service: which entries, which of their values, which steps per mode.",
    (
        Option("kind", "text", "The shipped definition this service starts from: "
               "etc/kinds/KIND.yaml (/etc/provisiond/kinds first), listed in docs/KINDS.md. "
               "Keys given here replace the kind's; `vars` are set one by one."),
        Option("description", "text", "What the service is for (free text; docs/KINDS.md "
               "shows a kind's)."),
        Option("vars", "mapping", "Settings for templates, paths and hook argv "
               "(`{{ vars.NAME }}`); `base`, `filter`, `active` and `roots` may use them too, "
               "rendered once at load. A kind declares each with a value type: `NAME: {"
               f"{', '.join(VAR_KEYS)}}}` plus the type's options, e.g. "
               "`schedule_start_hour: {type: integer, min: 0, max: 23, default: 20}`; a plain "
               "value declares an untyped var with that default. A service of a kind gives "
               "plain values (`vars: {schedule_start_hour: 21}`), each checked against its "
               "declared type at load."),
        Option("base", "text", "The DN the service's entries are under.", required=True),
        Option("scope", "str", "The search scope below base.", default="sub",
               choices=("base", "one", "sub")),
        Option("filter", "text", "The LDAP filter selecting the service's entries (the sync "
               "filter adds an actionable mode and state 0).", default="(objectClass=*)"),
        Option("attributes", "mapping", ATTRIBUTES.doc, section=ATTRIBUTES),
        Option("lifecycle", "str", "The modes the entries move through. resource: add, "
               "modify and delete (a thing that exists until deleted). operation: a one-shot "
               "request such as a tape load, add -> adding -> added (or the failing step's "
               "code) with steps for `add` only; a `delete` is acknowledged as deleted without "
               "running anything (no steps may be given for it), and removing the entry "
               "from LDAP needs no request. Steps, preconditions and admin hook folders may "
               "name only the lifecycle's modes.", default=RESOURCE.name,
               choices=tuple(LIFECYCLES)),
        Option("values", "mapping", "The entry's typed values: `NAME: {attribute, type, ...}`"
               " (the value types: docs/KINDS.md). Only validated values reach templates, paths"
               " and hooks."),
        Option("outputs", "mapping", "Values a hook may report with `provisiond-set "
               "NAME=VALUE`, declared like values (each line checked with its type) and "
               "written to the entry with the outcome; `multi: true` takes every line and "
               "replaces the attribute as a whole, `on_failure: true` is written with a "
               "failure too, and `report_to: parent` goes to the entry's parent entry "
               "instead (an operation's result on its library), before the entry's outcome."),
        Option("preconditions", "mapping", "Per mode, the values an entry must have, e.g. "
               "`delete: {active: false}`."),
        Option("active", "text", "An extra LDAP filter: only the entries it matches are in "
               "files rendered from all entries (`scope: all`)."),
        Option("roots", "list", "Directories every path a step writes, creates or removes "
               "must be inside; not /, nor a system directory such as /etc, /usr or /var.",
               default=()),
        Option("recover", "str", "own: resume only claims proven to be this daemon's; all: "
               "adopt every stranded entry (one daemon per subtree).", default="own",
               choices=("own", "all")),
        Option("invalid_code", "int", "The ReturnValue when an entry's value is invalid (a "
               "value's own `code` comes first).", default=1, minimum=1, maximum=999),
        Option("references", "mapping", "Entries of other services each entry needs, as "
               "`refs.NAME` in templates and hook argv (their `dn`, `uuid`, `values`, `outputs`,"
               " `vars`, `service`): `VALUE: SERVICE` or `VALUE: {service: SERVICE, code: N}`, "
               "a `dn` value naming an entry of SERVICE (multi-valued: `refs.VALUE` is a list);"
               " `NAME: {parent: SERVICE, code: N}`, the entry's parent. An entry waits while a "
               "referenced one is being provisioned, and fails with `code` (default: the "
               "value's code, then invalid_code) when one does not exist, is not an entry of "
               "SERVICE, is inactive, is being deleted or has failed."),
        Option("dependents", "mapping", DEPENDENTS.doc, section=DEPENDENTS),
        Option("unique", "items", "Values no two active or in-flight entries of the service "
               "may share, e.g. `[iqn, {value: lun, per: parent}]` (`per: parent`: only among "
               "the entries below one parent; a multi-valued value: no item shared). An entry "
               "whose value another keeps fails with the value's code (else invalid_code), "
               "the message naming the value and the other entry; a file of all entries "
               "leaves it out. Who keeps it: the entry provisioned with it, then one being "
               "provisioned (claimed), then of two at one stage (two new ones of a burst) the "
               "one whose DN sorts first.", default=()),
        Option("serialize", "text", "A key (a template over the entry's values, refs, vars, "
               "entry and service, e.g. `\"{{ refs.library.dn }}\"`): at most one job with the "
               "same key is in its steps at a time, across every service with a `serialize`; "
               "the others wait in order of arrival, unclaimed, without holding a worker. A "
               "key that renders empty means none; one that fails to render fails the entry "
               "with invalid_code. A step may carry `serialize` too: then only that step "
               "waits for its key (step keys and service keys never exclude each other)."),
        Option("status", "list", "A command `provisiond status` runs for the service's live "
               "facts (an iSCSI target's sessions), printing its stdout lines under the "
               "service: an argv of templates over `vars` and `service`, argv[0] a hook "
               "program named from vars at load (`provisiond check` checks it); a hook's "
               "environment without entry or values, killed after 20 s; a failure is shown, "
               "not fatal (operate/live.py). `[]`: none (a site turns its kind's off)."),
        Option("admin_hooks", "mapping", SERVICE_ADMIN_HOOKS.doc, section=SERVICE_ADMIN_HOOKS),
        Option("steps", "mapping", "Per mode of the lifecycle (add, modify, delete; an "
               "operation's add): a list of steps, or the name of another mode (`modify: "
               "add`). A step has `name`, `code` (its ReturnValue when it fails) and one of "
               "render, hook, mkdir, remove (docs/ARCHITECTURE.md); optionally `when` (a "
               "condition) and `serialize` (a key, as the service's, that may also read the "
               "`outputs` of the hooks before it: one job at a time runs the step per key, "
               "the others wait in their workers in order of arrival).", required=True),
    ),
)


def services_sample() -> str:
    """The end of the sample configuration: the `services:` key with every key of a service
    definition documented."""
    return "\n".join([
        "",
        "# Services: name -> definition. A definition either names a shipped kind",
        "#   backups: {kind: backup-account, vars: {backup_root: /var/backup}}",
        "# (docs/KINDS.md lists the kinds and their vars) or spells everything out (see",
        "# etc/kinds/demo.yaml). Files in services.d/*.yaml beside this file add services the",
        "# same way. The keys of a definition:",
        *reference_lines(SERVICE, "  "),
        "services: {}",
        "",
    ])
