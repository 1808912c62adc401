"""One module per command (borgmatic style); each has `NAME`, `HELP`, `add_arguments(parser)`
and `run(args) -> int`. `cli` loads the configuration for commands with `NEEDS_CONFIG = True`
and passes it as `args.loaded_config`.

To add a command: write the module and list it in COMMANDS, in the order `--help` shows.
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
    "import_legacy",
    "test_account",
)
