"""The link stage: writing the visible tree safely under the destination."""
