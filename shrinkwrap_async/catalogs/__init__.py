"""File catalogs: schema, entries, read-only access, local catalog cache."""
