"""The top-level configuration contract: every section and option, documented once."""

from __future__ import annotations

from provisiond.config.schema import Option, Section

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
    "Transient failures (hook exit 75, LDAP unavailable) are retried, then reported.",
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

SERVICES_SAMPLE = """
# Services: name -> definition. A definition either names a shipped kind
#   backups: {kind: backup-account, vars: {backup_root: /var/backup}}
# or spells everything out (see etc/services.d/demo.yaml). Files in services.d/*.yaml
# beside this file add services the same way.
services: {}
"""
