"""Alert rules from the metric catalogue: the rule model (`rules`, `signals`), the default
rules (`defaults`), the `[alerts]` settings (`config`), and the files made from them
(`files`: the Prometheus rule file, promtool tests, Grafana provisioning and the runbook).

Light to import, like the catalogue: nothing here loads torch, and only `files` and the
modules it renders with load YAML and grafana-foundation-sdk.
"""
