"""The uids of the Grafana data sources observe provisions, which its dashboards and its
Grafana alert rules both name: one definition, so the two always agree."""

PROMETHEUS_UID = "observe-prometheus"
STORE_UID = "observe-store"
