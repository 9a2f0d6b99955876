"""Packing exports into tarballs and SquashFS images."""
