"""The export pipeline: catalog-fetch, spec-filter, object-fetch, decompress-verify, link-stage."""
