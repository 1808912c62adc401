"""A service's live facts for `provisiond status`: what its `status:` command prints.

The directory says what should be; only the tool on the host knows what is happening now (an
iSCSI target's sessions, a tape library's drives). A service may name a command for that,
`status: [argv]` (ServiceSpec.status, read at load by config/services.py: argv items are
templates over the service's `vars` and `service`, argv[0] a hook program named from vars and
checked by `provisiond check`); `status` runs it, looked up in the hook directories like a
step's, and prints its stdout lines under the service. It gets a hook's minimal environment
(no entry, no values, so no secret), is killed after a timeout, and a failure is shown, not
fatal: the report about the directory stands on its own.
"""

from __future__ import annotations

import subprocess
from typing import Any

from provisiond.host.hooks import HookError, hook_environment, resolve_program
from provisiond.host.jinja import make_environment, render_string
from provisiond.model.settings import Config, ServiceSpec

TIMEOUT = 20.0  # seconds: an operator is waiting
MAX_LINES = 1000


def facts(config: Config, spec: ServiceSpec) -> dict[str, Any]:
    """{"argv": the rendered command, "lines": its stdout lines, "error": why it failed}."""
    shown: dict[str, Any] = {"argv": None, "lines": [], "error": None}
    try:
        env = make_environment(list(config.templates))
        context = {"vars": spec.vars, "service": spec.name}
        rendered = [render_string(env, item, context) for item in spec.status]
        shown["argv"] = rendered
        program = resolve_program(rendered[0], config.hooks.path)
        environment = hook_environment(search_path=config.hooks.path, service=spec.name,
                                       mode="", dn="", uuid="", values={})
        result = subprocess.run([program, *rendered[1:]], env=environment, capture_output=True,
                                text=True, errors="replace", timeout=TIMEOUT, check=False,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        shown["error"] = f"killed after {TIMEOUT:.0f}s"
        return shown
    except (HookError, OSError) as exc:
        shown["error"] = str(exc)
        return shown
    except Exception as exc:  # noqa: BLE001 - a template error: shown with the service
        shown["error"] = f"{type(exc).__name__}: {exc}"
        return shown
    shown["lines"] = result.stdout.splitlines()[:MAX_LINES]
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        shown["error"] = f"exited {result.returncode}: {tail}"
    return shown
