"""Generated files are committed; this fails when one is out of date."""

from observe.generate import GENERATED, stale


def test_generated_files_are_up_to_date() -> None:
    assert stale() == [], "run `make generate` and commit the result"


def test_metrics_doc_lists_every_catalogue_metric() -> None:
    from observe.catalogue import CATALOGUE

    doc = GENERATED["docs/metrics.md"]()
    assert all(f"`{m.prometheus_name}`" in doc for m in CATALOGUE)
