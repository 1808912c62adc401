"""The fault suite runs against stoney backup accounts: the backup tests' slapd and site."""

from tests.kinds.backup.conftest import site, stoney

__all__ = ["site", "stoney"]
