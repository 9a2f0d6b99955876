"""Spec files: which parts of a repository to export, and specs built from traces."""
