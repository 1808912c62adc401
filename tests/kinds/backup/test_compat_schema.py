"""The stoney compatibility schema: the LDIF is generated from the .schema file."""

from __future__ import annotations

from provisiond.testing.schema import schema_to_ldif
from tests.kinds.backup.support import COMPAT_SCHEMA


def test_ldif_is_generated_from_the_schema_file() -> None:
    source = COMPAT_SCHEMA.with_suffix(".schema")
    assert COMPAT_SCHEMA.read_text() == schema_to_ldif(source.read_text(), source.stem), (
        "regenerate it: python3 -m provisiond.testing.schema tests/schema/stoney-compat.schema")


def test_it_defines_what_the_kind_and_the_generator_use() -> None:
    text = COMPAT_SCHEMA.read_text()
    for name in ("sstProvisioningMode", "sstProvisioningState", "sstProvisioningExecutionDate",
                 "sstProvisioningReturnValue", "sstQuota", "sstIsActive",
                 "sstBackupIntervalHourly", "sstBackupIntervalDaily", "sstBackupIntervalWeekly",
                 "sstBackupIntervalMonthly", "sstBackupIntervalYearly", "sstBelongsToResellerUID",
                 "sstBelongsToCustomerUID", "sstBelongsToPersonUID", "sstBackup",
                 "sstProvisioning", "sstRelationship"):
        assert f"NAME '{name}'" in text
    assert "olcObjectIdentifier: sstAttributeType 1.3.6.1.4.1.22621.1.1" in text
