"""provisiond: turns LDAP entries into provisioned storage on backup appliances."""

__version__ = "0.1.0"
