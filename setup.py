"""Build hook: the shipped data travels inside the package (issue 9.1).

The repository keeps kinds, templates, hook programs and the schema at the top level
(etc/kinds, templates/, scripts/, etc/schema), where the Debian package and the source checkout
use them. A wheel carries them as provisiond/_data/{kinds,templates,hooks,schema}, copied here
when the package is built, so that provisiond finds them beside its own code wherever pip put it
(provisiond/paths.py). Everything else about the build is declared in setup.cfg.

Hook programs are written 0755 and the rest 0644 whatever the checkout's modes: the wheel
records each file's mode and pip restores the executable bit when it installs.
An editable install (`pip install -e .`) copies nothing: its code runs from the checkout, and
paths.py finds the top-level directories there.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# package data directory -> (repository directory, the files shipped from it)
SHIPPED = {
    "kinds": ("etc/kinds", "**/*.yaml"),  # parts/ too
    "templates": ("templates", "**/*.j2"),
    "hooks": ("scripts", "*"),  # the files directly in scripts/; scripts/dev/ are developer tools
    "schema": ("etc/schema", "*"),
}


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name, (source, pattern) in SHIPPED.items():
            for path in sorted(Path(source).glob(pattern)):
                if not path.is_file():
                    continue
                target = Path(self.build_lib, "provisiond", "_data", name,
                              path.relative_to(source))
                self.mkpath(str(target.parent))
                self.copy_file(str(path), str(target), preserve_mode=False)
                if not self.dry_run:
                    target.chmod(0o755 if name == "hooks" else 0o644)


setup(cmdclass={"build_py": BuildWithData})
