"""Alert states as a running Prometheus evaluates them, from its rules API
(`/api/v1/rules?type=alert`), in the rows `observe alerts status` shows."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from observe.alerts.evaluate import AlertRow
from observe.alerts.rules import Rule
from observe.errors import ObserveError

# Seconds to wait for Prometheus's answer.
TIMEOUT_S = 10.0
# A configured rule that Prometheus has not loaded (its rule file is missing or stale).
MISSING = "not loaded"
_STATES = {"inactive": "ok", "pending": "pending", "firing": "firing"}


def fetch_rules(url: str) -> list[dict[str, Any]]:
    """Every alerting rule Prometheus at `url` has loaded, as its API describes it."""
    address = f"{url.rstrip('/')}/api/v1/rules?type=alert"
    try:
        with urllib.request.urlopen(address, timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ObserveError(
            f"cannot reach Prometheus at {url} ({reason}): check --prometheus, e.g. "
            "http://127.0.0.1:9090"
        ) from exc
    except ValueError as exc:
        raise ObserveError(
            f"{address} did not answer JSON ({exc}): is --prometheus a Prometheus server?"
        ) from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ObserveError(f"Prometheus at {url} answered an error: {body!r:.200}")
    return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def prometheus_rows(url: str, rules: Iterable[Rule]) -> list[AlertRow]:
    """Per configured rule, its pending and firing alerts in Prometheus, or one row saying
    it is ok (or not loaded there)."""
    loaded: dict[str, list[dict[str, Any]]] = {}
    for described in fetch_rules(url):
        loaded.setdefault(described["name"], []).append(described)
    rows = []
    for rule in rules:
        if rule.name not in loaded:
            rows.append(AlertRow(rule.name, rule.severity, MISSING, None, None))
            continue
        alerts = [a for r in loaded[rule.name] for a in r.get("alerts", [])]
        active = [a for a in alerts if _STATES.get(a["state"]) in ("pending", "firing")]
        for alert in active:
            labels = {
                k: v for k, v in alert["labels"].items() if k not in ("alertname", "severity")
            }
            rows.append(
                AlertRow(
                    rule.name,
                    rule.severity,
                    _STATES[alert["state"]],
                    float(alert["value"]),
                    datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")),
                    labels,
                )
            )
        if not active:
            rows.append(AlertRow(rule.name, rule.severity, "ok", None, None))
    return rows
