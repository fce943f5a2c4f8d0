"""Thin command-line layer: ``kmunet <command>`` over typed Python functions."""
