"""observe's SQL store: PostgreSQL (COPY, optional TimescaleDB) or a local SQLite file.

- `records`: the rows the pipeline hands over (`Sample`, `HistogramSample`, and as arrays
  `Family` and `ExpertLoads`, in a `Batch`).
- `engine`: URLs (`resolve_url`, `mask_url`) and `connect`, which explains failures.
- `schema` and `migrate`: the tables and their Alembic migrations (`migrations/`).
- `writer`: `Store`, one transaction per batch; `series` finds series ids, `rows` writes
  the rows (`binary_copy` formats COPY data on PostgreSQL).
- `spool` and `delivery`: `Delivery`, which spools batches on disk and writes them in
  the background, so the caller never waits for the database and nothing is lost.
- `queries`: `list_runs` and `query`.
"""
