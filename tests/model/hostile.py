"""Hostile LDAP values for the fuzz tests in test_hostile_values.py, generated deterministically.

A self-care portal can write any string into an attribute. The values here are what an
attacker (or a careless import) would try: line and field separators that inject config
lines, quotes and braces that break out of quoting or into Jinja, shell metacharacters, path
traversal, Unicode lookalikes that pass a check written for ASCII (fullwidth and Arabic-Indic
digits, the Kelvin sign, dotless i, long s), invisible and bidi characters, lone surrogates,
outer spaces, and very long values - alone, and as mutations of valid values (inserted,
prefixed, appended, replacing a character), because a check that only looks at the start or
the end of a value passes a valid value with a tail. `random.Random(seed)` keeps every run the
same, so CI is deterministic and a failure names a value that reproduces.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Sequence

# Line, record and field separators, and other control and format characters.
CONTROLS = [
    "\n", "\r", "\r\n", "\t", "\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1c",
    "\x1f", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\ufeff", "\ud800", "\udfff",
]
# Invisible characters and bidi overrides: the value looks like another one.
INVISIBLE = [
    "\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\u200e", "\u200f", "\u202a", "\u202e",
    "\u2066", "\u2069", "\u061c", "\U000e0041", "\u034f", "\u0301",
]
# Spaces that are not the ASCII space (some are "printable" to Python, some are not).
SPACES = [" ", "  ", "\u00a0", "\u1680", "\u2000", "\u2003", "\u2009", "\u202f", "\u3000"]
# Quotes, Jinja delimiters, shell and config metacharacters, traversal.
META = [
    "'", '"', "`", "{{", "}}", "{%", "%}", "{#", "#}", "{", "}", "[", "]", "(", ")", "<", ">",
    ";", "|", "&", "&&", "||", "$", "$(", "$(id)", "${IFS}", "`id`", "*", "?", "~", "!", "#",
    "%", "%n", "^", "\\", "\\n", "\\t", "\\0a", "\\,", "=", ",", "+", "@", ":", "/", "//",
    "..", "../", "/..", "./", "-", "--", "-rf", "--help", "\\\\",
]
# Lookalikes of ASCII characters that Unicode-aware checks (str.isdigit, re without
# re.ASCII, casefold, int()) may take for the real thing.
LOOKALIKES: dict[str, list[str]] = {
    **{str(d): [chr(0x0660 + d), chr(0x06F0 + d), chr(0x0966 + d), chr(0xFF10 + d),
                chr(0x1D7CE + d), "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"[d]]
       for d in range(10)},
    "i": ["\u0131", "\u0456", "\uff49"], "I": ["\u0130", "\u0406", "\uff29"],
    "k": ["\u212a", "\u03ba"], "K": ["\u212a", "\u039a"], "s": ["\u017f", "\u0455"],
    "S": ["\u0405"], "a": ["\u0430", "\uff41"], "e": ["\u0435"], "o": ["\u043e", "\u03bf"],
    "c": ["\u0441"], "p": ["\u0440"], "x": ["\u0445"], "B": ["\u0392"], "M": ["\u041c"],
    "T": ["\u0422"], "G": ["\u0262"], "A": ["\u0391"], "E": ["\u0415"], "R": ["\u0280"],
    "U": ["\u222a"], "F": ["\u03dc"], "L": ["\u216c"], "f": ["\ufb01"],
    ".": ["\uff0e", "\u2024", "\u3002"], "/": ["\uff0f", "\u2215", "\u2044"],
    "-": ["\u2010", "\u2212", "\uff0d"], ":": ["\uff1a", "\u0589"], "=": ["\uff1d"],
    ",": ["\uff0c"], "_": ["\uff3f"], "@": ["\uff20"], " ": ["\u00a0"],
}
OTHER_SCRIPTS = ["\u00e9", "M\u00fcller", "\u00df", "\u4e2d", "\U0001f600", "\ue000", "\uffff",
                 "\u0378", "\ufffd", "\u2126"]
FRAGMENTS: list[str] = [*CONTROLS, *INVISIBLE, *SPACES, *META, *OTHER_SCRIPTS,
                        *(c for chars in LOOKALIKES.values() for c in chars)]
# Whole values worth trying as they are.
WHOLE: list[str] = [
    "", " ", "\t", "\n", "-", ".", "..", "/", "//", "0", "-0", "00", "+1", "1e3", "0x10",
    "1_000", "TRUE", "true", "yes", "null", "None", "*", "{{ vars }}", "{% raw %}",
    "$(reboot)", "; rm -rf / #", "a\nretain\thourly\t1", "x\n* * * * * root /bin/sh",
    "a\tb", "'; DROP", "\\", "\\\\", "%00", "..%2f", "\u202eexe.txt", "a" * 256, "9" * 20,
    "9" * 64, "1" * 1025, "x/" * 2100, "a" * 4096, "a" * 70000,
]


def rng_for(*key: object) -> random.Random:
    """One generator per (test, type, ...) so adding a case elsewhere changes nothing here
    (str hash() is salted per process; crc32 is not)."""
    return random.Random(zlib.crc32(repr(key).encode()))


def lookalike_variants(seed: str) -> Iterable[str]:
    """`seed` with one character, and then every character that has one, replaced."""
    for index, char in enumerate(seed):
        for twin in LOOKALIKES.get(char, ()):
            yield seed[:index] + twin + seed[index + 1:]
    for choice in range(3):
        swapped = "".join(LOOKALIKES[c][choice % len(LOOKALIKES[c])] if c in LOOKALIKES else c
                          for c in seed)
        if swapped != seed:
            yield swapped


def around(seed: str, fragment: str) -> list[str]:
    """`fragment` before, after, in the middle of and instead of `seed`'s middle character."""
    middle = len(seed) // 2
    return [fragment + seed, seed + fragment, seed[:middle] + fragment + seed[middle:],
            seed[:middle] + fragment + seed[middle + 1:]]


def mutate(seed: str, rng: random.Random) -> str:
    """One random edit of `seed`: a fragment inserted or substituted, a lookalike, case,
    truncation, repetition, or several of these stacked."""
    text = seed
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.randrange(8)
        at = rng.randrange(len(text) + 1)
        if kind <= 2:
            text = text[:at] + rng.choice(FRAGMENTS) + text[at:]
        elif kind == 3 and text:
            at = min(at, len(text) - 1)
            text = text[:at] + rng.choice(FRAGMENTS) + text[at + 1:]
        elif kind == 4:
            twins = [i for i, c in enumerate(text) if c in LOOKALIKES]
            if twins:
                i = rng.choice(twins)
                text = text[:i] + rng.choice(LOOKALIKES[text[i]]) + text[i + 1:]
        elif kind == 5:
            text = rng.choice((str.upper, str.lower, str.swapcase, str.title))(text)
        elif kind == 6:
            text = text[:at] if rng.random() < 0.5 else text[at:]
        else:
            text = text * rng.choice((2, 3, 40))
    return text


def random_text(rng: random.Random) -> str:
    """A short string from ASCII printables and hostile fragments."""
    pieces = [chr(rng.randrange(0x20, 0x7F)) if rng.random() < 0.6 else rng.choice(FRAGMENTS)
              for _ in range(rng.randrange(1, 12))]
    return "".join(pieces)


def hostile_values(seeds: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """`count` values (at least the fixed catalogue): every fragment and whole value alone,
    every fragment around the first seeds, lookalikes of every seed, then random mutations
    of the seeds and random strings. Duplicates are removed, order is kept."""
    found: dict[str, None] = {}
    catalogue: list[str] = [*WHOLE, *FRAGMENTS, *seeds]
    for seed in seeds[:3]:
        catalogue += [value for fragment in FRAGMENTS for value in around(seed, fragment)]
    for seed in seeds:
        catalogue += [*lookalike_variants(seed), " " + seed, seed + " ", seed.upper(),
                      seed.lower(), seed * 2, "-" + seed, "../" + seed, seed + "/../x"]
    found.update(dict.fromkeys(catalogue))
    attempts = 0
    while len(found) < count and attempts < count * 4:
        attempts += 1
        value = random_text(rng) if rng.random() < 0.15 else mutate(rng.choice(seeds), rng)
        found.setdefault(value)
    return list(found)


def numbers(rng: random.Random) -> list[str]:
    """Valid-looking counts, ids and sizes of every magnitude, so that accepted values of many
    shapes (not just the one valid seed) reach the templates."""
    small = [str(i) for i in range(101)] + ["00", "007", "099", "-0", "-1", "1000", "999"]
    ids = [str(rng.randrange(10 ** rng.randrange(3, 11))) for _ in range(60)]
    sizes = [f"{rng.randrange(1, 4096)}{unit}" for unit in ("", "K", "m", "G", "T", "P", "MiB",
                                                            "gB", "kib") for _ in range(6)]
    return list(dict.fromkeys(small + ids + sizes))
