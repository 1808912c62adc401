"""Exit statuses, from sysexits(3): what every command and the hooks' retry request use.

No dependencies, so any layer may name a status instead of writing a number.
"""

EX_OK = 0
EX_FAILED = 1  # something the operator should look at (a failed entry, an internal error)
EX_USAGE = 64
EX_DATAERR = 65  # the entry is not in a state the command applies to
EX_NOINPUT = 66  # no such entry, or no service manages it
EX_UNAVAILABLE = 69  # the directory cannot be reached
EX_CANTCREAT = 73  # the output file cannot be written
EX_TEMPFAIL = 75  # try again later: a hook asks for a retry; another daemon holds a resource
EX_CONFIG = 78  # the configuration is wrong
