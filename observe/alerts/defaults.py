"""The default alert rules: every bound, `for`, severity, text and runbook, in one place.

Metric names come from the catalogue, never typed here; `observe.toml`'s `[alerts]` table
retargets and overrides them (`observe/alerts/config.py`). Dashboards read their lines and
bands from these rules (`RULES_BY_NAME`), so a chart and its alert never disagree.
"""

from __future__ import annotations

from observe.alerts.rules import Range, Rule, Runbook, Severity, Threshold
from observe.alerts.signals import Quantile, Rate, Share, Value
from observe.catalogue import (
    CACHE_HITS,
    CACHE_MISS_RATE_BAND,
    CACHE_MISSES,
    DEAD_EXPERTS,
    DEAD_EXPERTS_ALERT,
    DROPPED_SAMPLES,
    EXPORT_FAILURES,
    INFERENCE_LATENCY,
    KNOWLEDGE_FRESHNESS,
    KNOWLEDGE_STALE_AFTER_S,
    LATENCY_P95_ALERT_S,
    LOAD_IMBALANCE,
    LOAD_IMBALANCE_ALERT,
    ROUTER_NONFINITE_TOKENS,
    ROUTING_DRIFT,
    ROUTING_DRIFT_ALERT,
    ROUTING_ENTROPY,
    ROUTING_ENTROPY_BAND,
    SEMANTIC_DRIFT_ALERT,
    SEMANTIC_DRIFT_ALERT_WINDOWS,
    SEMANTIC_DRIFTED_WINDOWS,
)

_DRIFT_CHECKS = (
    "`observe drift status --run RUN` shows the latest score per layer and method, with the "
    "threshold calibrated on the baseline.",
    "`observe drift report --run RUN --out drift.html` compares the last scored window with "
    "the baseline, feature by feature.",
    "`observe drift baselines --model MODEL`: is the active baseline the served checkpoint's?",
)

# Counted in scored drift windows, not seconds: the drift sink compares each drift window's
# score with the threshold calibrated on the baseline for its layer, method and window size,
# and counts the windows in a row over it (catalogue.SEMANTIC_DRIFT_ALERT_WINDOWS says why
# two). A `for` in seconds could not count them: a window lasts from seconds under load to
# hours on a quiet service (when windows were each flush's, 5-23 s under
# benchmarks/serve_load.py's load, a `for` of 15 s paged 4 windows after a shift there, and
# 10 s on one window of unchanged traffic). `for` 0s: the count is the persistence.
SEMANTIC_DRIFT_RULE = Threshold(
    Value(SEMANTIC_DRIFTED_WINDOWS.name),
    ">",
    SEMANTIC_DRIFT_ALERT_WINDOWS - 1,
    name="ObserveSemanticDrift",
    for_="0s",
    severity=Severity.CRITICAL,
    summary="Served traffic no longer looks like the baseline: semantic drift over its "
    "calibrated threshold in windows in a row.",
    description="Semantic drift of $where was over its calibrated threshold in each of the last "
    "$value scored windows: windows in a row $bound.",
    runbook=Runbook(
        meaning="The hidden states of the traffic served in the last windows are told apart "
        "from the baseline's (the traffic the checkpoint was tuned and checked on) better "
        "than windows of the baseline's own traffic are: in at least "
        f"{SEMANTIC_DRIFT_ALERT_WINDOWS} scored windows in a row, a layer's score was over "
        "the threshold calibrated on the baseline for its layer, method and window size. For "
        f"the classifier method that threshold is at least {SEMANTIC_DRIFT_ALERT:g}, a ROC "
        f"AUC of {(1 + SEMANTIC_DRIFT_ALERT) / 2:g}. Answers on such traffic are no longer "
        "backed by the evaluation the checkpoint passed.",
        causes=(
            "A new client, product or language sends prompts of a domain the model was not "
            "tuned on.",
            "The active baseline is not the served checkpoint's (a rollout without a new "
            "baseline, or a baseline activated by hand).",
            "A change in prompt templates, preprocessing or tokenizer upstream of the model.",
        ),
        checks=(
            *_DRIFT_CHECKS,
            "ObserveRoutingDrift on the same run: experts taking a different load confirm a "
            "change of domain.",
        ),
        fix="If the new traffic is legitimate, fine-tune on it, or make it the reference: "
        "`observe drift baseline --run RUN` from a run that served it. If a wrong baseline "
        "is active, `observe drift baselines --activate ID`. If the traffic is not meant to "
        "reach this model, fix its routing upstream.",
    ),
)

ROUTING_DRIFT_RULE = Threshold(
    Value(ROUTING_DRIFT.name),
    ">",
    ROUTING_DRIFT_ALERT,
    name="ObserveRoutingDrift",
    for_="10m",
    severity=Severity.WARNING,
    summary="Experts take a different load than in the baseline: routing drift $bound.",
    description="Routing drift (JS divergence of the expert load) of $where is $value, "
    "$bound for at least $for.",
    runbook=Runbook(
        meaning="The share of tokens each expert of a MoE layer receives has moved away from "
        "the baseline's: the router sends this traffic to other experts than the traffic "
        "the checkpoint was tuned on.",
        causes=(
            "Traffic of another domain (ObserveSemanticDrift usually fires too).",
            "A checkpoint served against another checkpoint's baseline.",
            "Router weights changed by further training, or a different capacity factor.",
        ),
        checks=(
            *_DRIFT_CHECKS[:2],
            "The experts dashboard: which experts gained and which lost tokens, per layer.",
        ),
        fix="As for semantic drift: fine-tune on the new traffic or make a baseline of it "
        "once it is the expected traffic; activate the served checkpoint's baseline if "
        "another is active.",
    ),
)

CACHE_MISS_RULE = Range(
    Share(CACHE_MISSES.name, CACHE_HITS.name, "5m"),
    *CACHE_MISS_RATE_BAND,
    name="ObserveCacheMissRate",
    for_="10m",
    severity=Severity.WARNING,
    summary="The response cache misses $value of requests, $bound.",
    description="Cache miss rate of $where is $value, $bound for at least $for.",
    runbook=Runbook(
        meaning="The share of requests the model had to generate instead of answering from "
        "the response cache left its usual band. Too many misses cost latency and compute; "
        "too few mean the cache answers nearly everything, so new prompts are rare or the "
        "cache serves answers to prompts it should not match.",
        causes=(
            "Over the band: new traffic (few repeated prompts), a cache cleared by a restart, "
            "or a cache too small for the traffic.",
            "Under the band: a replay, load test or retrying client repeating the same "
            "prompts; a cache key that ignores part of the prompt.",
        ),
        checks=(
            "The on-call dashboard's cache panel: when the rate left the band, and whether "
            "latency and drift moved with it.",
            "Whether a deploy or restart of the serving process happened then.",
        ),
        fix="Over the band: let the cache warm, or size it for the traffic. Under the band: "
        "find the client repeating prompts, or fix the cache key. Move the band with "
        "`[alerts.rules.ObserveCacheMissRate] low/high` when the traffic's usual miss rate "
        "is known to be elsewhere.",
    ),
)

ROUTING_ENTROPY_RULE = Range(
    Value(ROUTING_ENTROPY.name),
    *ROUTING_ENTROPY_BAND,
    name="ObserveRoutingEntropy",
    for_="10m",
    severity=Severity.WARNING,
    summary="Router entropy left its band: $value, $bound.",
    description="Normalised routing entropy of $where is $value, $bound for at least $for.",
    runbook=Runbook(
        meaning="The router's distribution over experts is sharper or flatter than usual. "
        "Under the band, tokens go to a few experts with certainty (collapse, less capacity "
        "used); over it, the router hardly prefers any expert (routing close to uniform, "
        "experts less specialised).",
        causes=(
            "Under: expert collapse in training (a load-balancing loss too weak), or traffic "
            "that a few experts cover.",
            "Over: a router early in training or re-initialised, a learning rate too high, "
            "or traffic unlike anything the router learned.",
        ),
        checks=(
            "The experts dashboard: entropy per layer, the expert × entropy heatmap, dead "
            "experts and load imbalance of the same layer.",
            "In training: the aux and z-loss on the training dashboard.",
        ),
        fix="In training, adjust the load-balancing loss weight or learning rate and resume "
        "from a checkpoint before the change. In serving, check for drift first; a band "
        "that does not suit the model is set with `[alerts.rules.ObserveRoutingEntropy]`.",
    ),
)

DEAD_EXPERTS_RULE = Threshold(
    Value(DEAD_EXPERTS.name),
    ">",
    DEAD_EXPERTS_ALERT,
    name="ObserveDeadExperts",
    for_="10m",
    severity=Severity.WARNING,
    summary="Experts receive no token: $value dead in a layer.",
    description="$value experts of $where received no token in the last window, for at least $for.",
    runbook=Runbook(
        meaning="Some experts of a MoE layer were routed no token in whole flush windows: "
        "their parameters cost memory and give nothing.",
        causes=(
            "Expert collapse in training (load balancing too weak).",
            "Narrow traffic in serving that never needs those experts.",
            "Windows too short to reach every expert (`flush_every` small, few tokens).",
        ),
        checks=(
            "The experts dashboard: token share per expert and layer.",
            "ObserveLoadImbalance and ObserveRoutingEntropy on the same layer.",
        ),
        fix="In training, raise the load-balancing loss weight. In serving, a traffic-specific "
        "pattern may be expected: raise `[monitor] flush_every` for longer windows, or "
        "silence the alert for that run.",
    ),
)

NONFINITE_LOGITS_RULE = Threshold(
    Rate(ROUTER_NONFINITE_TOKENS.name, "5m"),
    ">",
    0,
    name="ObserveRouterNonFinite",
    for_="0s",
    severity=Severity.WARNING,
    summary="A router produces NaN or infinite logits.",
    description="$where's router gave non-finite logits for $value tokens per second; those "
    "tokens are left out of every routing figure.",
    runbook=Runbook(
        meaning="Some tokens' router logits hold NaN or an infinity. observe counts them and "
        "leaves them out of entropy, load, top-1 and the router losses, so those stay "
        "finite; but the model itself routes these tokens on garbage.",
        causes=(
            "Training diverging (a learning rate too high, an exploding gradient).",
            "Low-precision overflow in the router (fp16 logits past 65,504).",
            "Corrupted weights after a bad checkpoint load or merge.",
        ),
        checks=(
            "The training dashboard: loss and the router's z-loss climbing before this.",
            "Which layer: the `layer` label; a single layer points at its weights.",
        ),
        fix="Lower the learning rate or raise the z-loss weight and resume from an earlier "
        "checkpoint; keep the router in float32 under mixed precision.",
    ),
)

LOAD_IMBALANCE_RULE = Threshold(
    Value(LOAD_IMBALANCE.name),
    ">",
    LOAD_IMBALANCE_ALERT,
    name="ObserveLoadImbalance",
    for_="10m",
    severity=Severity.WARNING,
    summary="One expert takes over twice its share: load imbalance $value.",
    description="Load imbalance (busiest expert over the mean) of $where is $value, $bound "
    "for at least $for.",
    runbook=Runbook(
        meaning="The busiest expert of a layer receives more than twice the mean assignments "
        "per expert. With expert capacity, tokens over it are dropped; with expert "
        "parallelism, the device holding it sets the pace.",
        causes=(
            "Weak load balancing in training.",
            "Traffic of one narrow domain.",
        ),
        checks=(
            "The experts dashboard: which expert, since when, and dropped tokens.",
            "ObserveRoutingDrift: whether the load moved away from the baseline's.",
        ),
        fix="In training, raise the load-balancing loss weight or capacity factor. In "
        "serving, check drift; raise the bound with `[alerts.rules.ObserveLoadImbalance] "
        "value` if the model is known to be this unbalanced on this traffic.",
    ),
)

LATENCY_RULE = Threshold(
    Quantile(INFERENCE_LATENCY.name, 0.95, "5m"),
    ">",
    LATENCY_P95_ALERT_S,
    name="ObserveInferenceLatencyHigh",
    for_="5m",
    severity=Severity.CRITICAL,
    summary="Inference p95 latency $bound: $value.",
    description="p95 latency of $where is $value, $bound for at least $for.",
    runbook=Runbook(
        meaning="One request in twenty waits longer than the bound from submission to "
        "response, cache hits included.",
        causes=(
            "More traffic than the server's batch size and concurrency absorb (queueing).",
            "A cache miss rate over its band: more requests are generated.",
            "Longer prompts or more new tokens per request; a slower device or CPU contention.",
        ),
        checks=(
            "The on-call dashboard: p50, p95 and p99 latency with the request rate and cache "
            "miss rate.",
            "Whether the serving host is shared or throttled.",
        ),
        fix="Add capacity or raise the batch size; cap new tokens per request. Set the bound "
        "for the deployment with `[alerts.rules.ObserveInferenceLatencyHigh] value` "
        "(seconds, within the latency histogram's buckets).",
    ),
)

FRESHNESS_RULE = Threshold(
    Value(KNOWLEDGE_FRESHNESS.name),
    ">",
    KNOWLEDGE_STALE_AFTER_S,
    name="ObserveKnowledgeStale",
    for_="15m",
    severity=Severity.INFO,
    summary="The served model's training data ended $value ago.",
    description="Knowledge of $where is $value old, $bound.",
    runbook=Runbook(
        meaning="The data the served checkpoint was trained on ends longer ago than the "
        "bound: answers about anything since are not backed by training data.",
        causes=(
            "No fine-tune on recent data since the bound passed.",
            "A rollback to an older checkpoint.",
        ),
        checks=("`observe drift baselines --model MODEL`: each baseline's training data end.",),
        fix="Fine-tune on recent data and serve the new checkpoint; for a model meant to "
        "stay frozen, raise `[alerts.rules.ObserveKnowledgeStale] value` (seconds).",
    ),
)

EXPORT_FAILURES_RULE = Threshold(
    Rate(EXPORT_FAILURES.name, "5m"),
    ">",
    0,
    name="ObserveExportFailures",
    for_="10m",
    severity=Severity.WARNING,
    summary="observe's pipeline fails to deliver batches.",
    description="Deliveries of $where fail at $value per second, for at least $for; the "
    "batches wait in the spool.",
    runbook=Runbook(
        meaning="The pipeline's exporter (the store, or the OTLP endpoint) refuses or cannot "
        "be reached. Nothing is lost yet: failed batches stay in the on-disk spool and are "
        "retried, until the spool is full (then ObserveSamplesDropped fires).",
        causes=(
            "The store's database is down, full, or refuses the credentials.",
            "The OTLP collector is down or unreachable.",
        ),
        checks=(
            "The process's log: each failure says why.",
            "`observe db current` against the same `db_url`.",
            "`observe_pipeline_spooled_samples`: how much waits in the spool.",
        ),
        fix="Bring the store or collector back; the spool drains by itself. To silence it "
        "during planned maintenance, silence `alertname=ObserveExportFailures` with the "
        "`exporter` label.",
    ),
)

DROPPED_SAMPLES_RULE = Threshold(
    Rate(DROPPED_SAMPLES.name, "5m"),
    ">",
    0,
    name="ObserveSamplesDropped",
    for_="5m",
    severity=Severity.WARNING,
    summary="observe drops samples: $value per second.",
    description="Samples of $where are dropped at $value per second, for at least $for.",
    runbook=Runbook(
        meaning="Measurements are lost: the spool is full (the store has been unreachable "
        "long enough), or a metric has more label combinations than the label limit allows.",
        causes=(
            "`reason` says which: a full spool after export failures, or the label limit.",
            "A model with more layers × experts × entropy slots than `label_limit` series.",
        ),
        checks=(
            "The `reason` label of `observe_pipeline_dropped_samples_total`.",
            "ObserveExportFailures on the same run.",
        ),
        fix="A full spool: restore the store, or raise `spool_max_bytes`. The label limit: "
        "raise `label_limit` (observe.toml) above the model's series count.",
    ),
)

DEFAULT_RULES: tuple[Rule, ...] = (
    SEMANTIC_DRIFT_RULE,
    ROUTING_DRIFT_RULE,
    CACHE_MISS_RULE,
    ROUTING_ENTROPY_RULE,
    DEAD_EXPERTS_RULE,
    NONFINITE_LOGITS_RULE,
    LOAD_IMBALANCE_RULE,
    LATENCY_RULE,
    FRESHNESS_RULE,
    EXPORT_FAILURES_RULE,
    DROPPED_SAMPLES_RULE,
)
RULES_BY_NAME = {rule.name: rule for rule in DEFAULT_RULES}
