"""Run state: state database, locks, provenance, logs and metrics."""
