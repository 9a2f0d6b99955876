"""Sub-commands of the shrinkwrap-async command line."""
