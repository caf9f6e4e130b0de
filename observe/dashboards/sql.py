"""A raw-SQL query for Grafana's PostgreSQL datasource, as a foundation-SDK dataquery.

The SDK ships no PostgreSQL query type, so this follows its custom-query pattern: a
`Dataquery` with `to_json`/`from_json`, a builder for panels' `with_target`, and a variant
config that lets the SDK read dashboards holding such targets back
(`register_dataquery_variant(variant_config())`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.common import DataSourceRef

# The plugin id of Grafana's bundled PostgreSQL datasource since Grafana 10.3 (formerly
# `postgres`, which Grafana still accepts as an alias).
POSTGRES_TYPE = "grafana-postgresql-datasource"


class SQLFormat(StrEnum):
    # Rows with a time column, a `metric` column naming the series and a value column.
    TIME_SERIES = "time_series"
    TABLE = "table"


class SQLQuery(cogvariants.Dataquery):
    def __init__(
        self,
        raw_sql: str,
        format_val: SQLFormat = SQLFormat.TABLE,
        ref_id: str | None = None,
        datasource: DataSourceRef | None = None,
    ) -> None:
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.ref_id = ref_id
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        # `rawQuery` and the code editor: Grafana shows the SQL as written instead of
        # trying to rebuild it in its visual query builder.
        payload: dict[str, object] = {
            "rawSql": self.raw_sql,
            "format": str(self.format_val),
            "rawQuery": True,
            "editorMode": "code",
        }
        if self.ref_id is not None:
            payload["refId"] = self.ref_id
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        datasource = data.get("datasource")
        return cls(
            raw_sql=data["rawSql"],
            format_val=SQLFormat(data.get("format", SQLFormat.TABLE)),
            ref_id=data.get("refId"),
            datasource=DataSourceRef.from_json(datasource) if datasource else None,
        )


def variant_config() -> cogruntime.DataqueryConfig:
    return cogruntime.DataqueryConfig(identifier=POSTGRES_TYPE, from_json_hook=SQLQuery.from_json)


class SQL(cogbuilder.Builder[SQLQuery]):
    """`SQL("SELECT ...").format(SQLFormat.TIME_SERIES)`, for a panel's `with_target`."""

    def __init__(self, raw_sql: str) -> None:
        self._internal = SQLQuery(raw_sql)

    def build(self) -> SQLQuery:
        return self._internal

    def format(self, format_val: SQLFormat) -> Self:
        self._internal.format_val = format_val
        return self

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def datasource(self, datasource: DataSourceRef) -> Self:
        self._internal.datasource = datasource
        return self
