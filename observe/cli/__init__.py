"""The `observe` command line."""

from observe.cli import drift, spool, store, workload
from observe.cli.app import app, main

__all__ = ["app", "drift", "main", "spool", "store", "workload"]
