"""Hooks for training frameworks; each submodule imports its framework, so import the one
you use (e.g. `observe.integrations.hf`, which needs the `hf` extra)."""
