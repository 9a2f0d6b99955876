"""The content-addressed .data object store."""
