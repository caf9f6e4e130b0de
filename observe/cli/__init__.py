"""The `observe` command line."""

from observe.cli import alerts, drift, spool, store, workload
from observe.cli.app import app, main

__all__ = ["alerts", "app", "drift", "main", "spool", "store", "workload"]
