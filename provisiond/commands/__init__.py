"""One module per command (borgmatic style); each has `NAME`, `HELP`, `add_arguments(parser)`
and `run(args) -> int`. `cli` loads the configuration for commands with `NEEDS_CONFIG = True`
and passes it as `args.loaded_config` (checking that the state directory is writable unless
the command says `WRITES_STATE = False`).

To add a command: write the module and list it in COMMANDS, in the order `--help` shows. A
command that serves one kind only lives with that kind (`kinds.backup.import_legacy`) and is
listed by its path below the package.
"""

COMMANDS = (
    "run",
    "once",
    "check",
    "sample_config",
    "status",
    "render",
    "retry",
    "diagnose",
    "kinds.backup.import_legacy",
    "kinds.backup.test_account",
)
