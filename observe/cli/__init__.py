"""The `observe` command line."""

from observe.cli import store, workload
from observe.cli.app import app, main

__all__ = ["app", "main", "store", "workload"]
