"""Everything that talks to the LDAP server: connections, the change stream, claims, reports."""
