"""The metric catalogue: every figure observe shows a user, defined once.

The instruments the monitor's sinks and the workload create, the store's queries, the
generated `docs/metrics.md`, the dashboards (`observe/dashboards/`) and the alert rules
(`observe/alerts/`) all read this module. Names follow Prometheus conventions;
`Metric.prometheus_name` is the series name a scrape of the OpenTelemetry Prometheus
reader shows (unit suffix, `_total` for counters).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


# Label names, written only here: emitters take them from `Metric.labels` (`attributes`).
RUN_LABEL = "run"
MODEL_LABEL = "model"
RANK_LABEL = "rank"
WORLD_SIZE_LABEL = "world_size"
LAYER = "layer"
EXPERT = "expert"
SLOT_LE = "slot_le"
METHOD = "method"
OUTCOME = "outcome"
REASON = "reason"
EXPORTER = "exporter"
QUANTILE = "quantile"
ROUTE = "route"
STATUS_CODE = "status_code"

# Labels on every series: which run and which model; `rank` and `world_size` are added in
# distributed runs. They come from the run's OpenTelemetry resource, not from the emitters.
COMMON_LABELS = (RUN_LABEL, MODEL_LABEL)
DISTRIBUTED_LABELS = (RANK_LABEL, WORLD_SIZE_LABEL)
RESOURCE_LABELS = frozenset((*COMMON_LABELS, *DISTRIBUTED_LABELS))
# Label values are kept verbatim, of any length, by Prometheus and the store, except: run
# ids and model names, which key the store's B-tree indexes (PostgreSQL caps an entry at
# 2,704 bytes, and a character takes up to 4), have at most this many characters; and no
# text the store keeps holds NUL or a lone surrogate, which PostgreSQL cannot store.
MAX_IDENTIFIER_CHARS = 256

# Prometheus unit suffixes for the UCUM units used here ("1" and annotations add none).
_UNIT_SUFFIXES = {"s": "seconds", "By": "bytes"}


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    # UCUM: "s" seconds, "1" a ratio or plain number, "{token}" a count of tokens.
    unit: str
    description: str
    labels: tuple[str, ...] = ()
    # Upper bounds of histogram buckets.
    buckets: tuple[float, ...] | None = None

    @property
    def prometheus_name(self) -> str:
        name = self.name
        suffix = _UNIT_SUFFIXES.get(self.unit, "")
        if suffix and not name.endswith(f"_{suffix}"):
            name = f"{name}_{suffix}"
        return f"{name}_total" if self.kind is Kind.COUNTER else name

    @property
    def all_labels(self) -> tuple[str, ...]:
        return (*COMMON_LABELS, *self.labels)

    def attributes(self, *values: object) -> dict[str, str]:
        """This metric's labels with `values`, in the order `labels` declares them."""
        return dict(zip(self.labels, map(str, values), strict=True))


ENTROPY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- routing, from the hooks ---------------------------------------------------------------
# Said of every count the hooks take: with `router_sample_rate` below 1 only a share of
# forwards is measured, and counts are scaled up to estimates rather than left raw.
SAMPLED_COUNT = (
    "Under router sampling, an estimate of every forward's: the measured forwards' count "
    "divided by observe_moe_router_sample_rate."
)
EXPERT_TOKENS = Metric(
    "observe_moe_expert_tokens",
    Kind.COUNTER,
    "{token}",
    "(token, expert) assignments each expert received, before any capacity drop; padding "
    'excluded. Always in the store; on /metrics unless prometheus_detail = "layer". '
    f"{SAMPLED_COUNT}",
    (LAYER, EXPERT),
)
ROUTING_ENTROPY = Metric(
    "observe_moe_routing_entropy",
    Kind.GAUGE,
    "1",
    "Mean normalised Shannon entropy of the router's distribution, H / log E, in [0, 1], "
    "over the last window.",
    (LAYER,),
)
ROUTING_ENTROPY_WINDOWS = Metric(
    "observe_moe_routing_entropy_windows",
    Kind.HISTOGRAM,
    "1",
    "Distribution of each window's mean normalised routing entropy.",
    (LAYER,),
    ENTROPY_BUCKETS,
)
EXPERT_ENTROPY_ASSIGNMENTS = Metric(
    "observe_moe_expert_entropy_assignments",
    Kind.COUNTER,
    "{token}",
    "Assignments per expert and routing-entropy slot (the expert capacity heatmap); "
    "`slot_le` is the slot's upper entropy bound. Always in the store; on /metrics only with "
    f'prometheus_detail = "expert_slot". {SAMPLED_COUNT}',
    (LAYER, EXPERT, SLOT_LE),
)
ENTROPY_ASSIGNMENTS = Metric(
    "observe_moe_entropy_assignments",
    Kind.COUNTER,
    "{token}",
    "Assignments per routing-entropy slot, summed over the layer's experts (the layer "
    "capacity heatmap); `slot_le` is the slot's upper entropy bound. Per expert in the store, "
    f'and on /metrics with prometheus_detail = "expert_slot". {SAMPLED_COUNT}',
    (LAYER, SLOT_LE),
)
# Quantiles of the experts' shares of a layer's assignments: least-loaded expert, tenth
# percentile, median, ninetieth percentile, most-loaded.
EXPERT_SHARE_QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)
EXPERT_SHARE = Metric(
    "observe_moe_expert_share",
    Kind.GAUGE,
    "1",
    "Quantiles of the experts' shares of the layer's assignments in the last window (0: the "
    "least-loaded expert, 1: the most-loaded); 1/E each is perfect balance. The per-layer "
    'summary of observe_moe_expert_tokens, which prometheus_detail = "layer" leaves out.',
    (LAYER, QUANTILE),
)
LOAD_IMBALANCE = Metric(
    "observe_moe_load_imbalance",
    Kind.GAUGE,
    "1",
    "Most-loaded expert's assignments over the mean per expert in the last window; 1 is "
    "perfect balance.",
    (LAYER,),
)
DEAD_EXPERTS = Metric(
    "observe_moe_dead_experts",
    Kind.GAUGE,
    "{expert}",
    "Experts that received no token in the last window. Under router sampling, none in the "
    "window's measured forwards: an expert may have had tokens in the others.",
    (LAYER,),
)
TOP1_PROBABILITY = Metric(
    "observe_moe_top1_probability",
    Kind.GAUGE,
    "1",
    "Mean probability of each token's most likely expert in the last window.",
    (LAYER,),
)
AUX_LOSS = Metric(
    "observe_moe_aux_loss",
    Kind.GAUGE,
    "1",
    "Load-balancing loss E·Σ fᵢ·Pᵢ, mean over the last window's router calls; 1 is balanced.",
    (LAYER,),
)
Z_LOSS = Metric(
    "observe_moe_z_loss",
    Kind.GAUGE,
    "1",
    "Router z-loss, mean logsumexp(logits)², over the last window's router calls.",
    (LAYER,),
)
DROPPED_TOKENS = Metric(
    "observe_moe_dropped_tokens",
    Kind.COUNTER,
    "{token}",
    "Real tokens' (token, expert) assignments dropped over an expert's capacity; padding "
    f"takes no capacity and is never counted. {SAMPLED_COUNT}",
    (LAYER,),
)
ROUTER_NONFINITE_TOKENS = Metric(
    "observe_moe_router_nonfinite_tokens",
    Kind.COUNTER,
    "{token}",
    "Tokens whose router logits held NaN or an infinity; every other routing figure leaves "
    f"them out. {SAMPLED_COUNT}",
    (LAYER,),
)
ROUTER_SAMPLE_RATE = Metric(
    "observe_moe_router_sample_rate",
    Kind.GAUGE,
    "1",
    "Share of forward passes whose routing the monitor measures (router_sample_rate). "
    "Below 1, routing counts are estimates scaled up from the measured forwards; means, "
    "ratios and losses are over the measured forwards.",
)
MONITOR_STEPS = Metric(
    "observe_monitor_steps",
    Kind.COUNTER,
    "{step}",
    "Training or serving steps the monitor has marked.",
)

# -- the workload's own figures --------------------------------------------------------------
TRAIN_LOSS = Metric(
    "observe_train_loss", Kind.GAUGE, "1", "Language-model loss of the last optimizer step."
)
TRAIN_TOKENS_PER_SECOND = Metric(
    "observe_train_tokens_per_second",
    Kind.GAUGE,
    "{token}/s",
    "Training throughput of the last optimizer step.",
)
INFERENCE_LATENCY = Metric(
    "observe_inference_latency",
    Kind.HISTOGRAM,
    "s",
    "Per-request latency from submission to response, cache hits included.",
    buckets=LATENCY_BUCKETS,
)
CACHE_HITS = Metric(
    "observe_inference_cache_hits",
    Kind.COUNTER,
    "{request}",
    "Requests answered from the response cache.",
)
CACHE_MISSES = Metric(
    "observe_inference_cache_misses",
    Kind.COUNTER,
    "{request}",
    "Requests the model had to generate.",
)

# -- the served model (`observe serve`) --------------------------------------------------------
SERVER_REQUESTS = Metric(
    "observe_server_requests",
    Kind.COUNTER,
    "{request}",
    "HTTP requests the server answered, by route and status code (429: its queue was full).",
    (ROUTE, STATUS_CODE),
)
SERVER_REQUEST_LATENCY = Metric(
    "observe_server_request_latency",
    Kind.HISTOGRAM,
    "s",
    "From a generation request's arrival to its last byte sent, time queued included.",
    (ROUTE,),
    buckets=LATENCY_BUCKETS,
)
SERVER_TIME_TO_FIRST_TOKEN = Metric(
    "observe_server_time_to_first_token",
    Kind.HISTOGRAM,
    "s",
    "From a streamed request's arrival to its first generated text sent.",
    (ROUTE,),
    buckets=LATENCY_BUCKETS,
)
SERVER_PROMPT_TOKENS = Metric(
    "observe_server_prompt_tokens",
    Kind.COUNTER,
    "{token}",
    "Prompt tokens of answered generation requests, as their `usage` counts them.",
    (ROUTE,),
)
SERVER_COMPLETION_TOKENS = Metric(
    "observe_server_completion_tokens",
    Kind.COUNTER,
    "{token}",
    "Generated tokens of answered generation requests, as their `usage` counts them.",
    (ROUTE,),
)

# -- drift -------------------------------------------------------------------------------------
SEMANTIC_DRIFT = Metric(
    "observe_drift_semantic_score",
    Kind.GAUGE,
    "1",
    "Drift of the last scored window's pooled hidden states from the reference baseline, "
    "in [0, 1]: for the classifier method max(0, 2·ROC AUC − 1), so 0.3 is AUC 0.65.",
    (LAYER, METHOD),
)
SEMANTIC_DRIFT_THRESHOLD = Metric(
    "observe_drift_semantic_threshold",
    Kind.GAUGE,
    "1",
    "The score above which the method calls a window drifted, calibrated on "
    "same-distribution windows of the baseline.",
    (LAYER, METHOD),
)
SEMANTIC_DRIFTED_WINDOWS = Metric(
    "observe_drift_semantic_drifted_windows",
    Kind.GAUGE,
    "{window}",
    "Scored windows in a row, up to the last, whose semantic drift was over its calibrated "
    "threshold: 0 once one is not.",
    (LAYER, METHOD),
)
# The lowest semantic drift threshold calibration gives the default (classifier) method, a
# ROC AUC of 0.65: calibration on the baseline may raise a window's threshold above it, never
# lower it. Dashboards draw it as the score's line.
SEMANTIC_DRIFT_ALERT = 0.3
# The drift alert pages when a layer's score is over its threshold in this many scored windows
# in a row. Counted in windows, not seconds: a window lasts from seconds to hours with the
# traffic. Calibration lets about 1 in 100 same-distribution windows over (at most 5 in 100,
# observe/drift/calibration.py), and each layer is scored: one window alone would page on
# unchanged traffic every few dozen windows, two in a row about once in 10,000 per layer.
SEMANTIC_DRIFT_ALERT_WINDOWS = 2
# Expected ranges, (low, high), defined here once: the alert rules fire outside them and
# the dashboards shade them. The cache miss rate is misses / (hits + misses) of the
# inference cache counters; routing entropy is `ROUTING_ENTROPY`, per layer.
CACHE_MISS_RATE_BAND = (0.1, 0.25)
ROUTING_ENTROPY_BAND = (0.65, 0.75)
# The other default alert lines, here for the same reason. Routing drift: a tenth of the way
# from the same expert load to loads that share no expert. Latency: a bucket bound of the
# latency histogram, so the p95 is read without interpolation error at the line.
ROUTING_DRIFT_ALERT = 0.1
LATENCY_P95_ALERT_S = 1.0
LOAD_IMBALANCE_ALERT = 2.0
DEAD_EXPERTS_ALERT = 0
KNOWLEDGE_STALE_AFTER_S = 30 * 86400
ROUTING_DRIFT = Metric(
    "observe_drift_routing",
    Kind.GAUGE,
    "1",
    "Jensen–Shannon divergence (base 2, in [0, 1]) of the last window's expert load from "
    "the baseline's expert distribution.",
    (LAYER,),
)
DRIFT_WINDOWS = Metric(
    "observe_drift_windows",
    Kind.COUNTER,
    "{window}",
    "Flush windows drift scored, or skipped because scoring fell behind.",
    (OUTCOME,),
)
KNOWLEDGE_FRESHNESS = Metric(
    "observe_knowledge_freshness",
    Kind.GAUGE,
    "s",
    "Time since the serving model's training data ended.",
)

# -- the pipeline's own health -------------------------------------------------------------
EXPORTS = Metric(
    "observe_pipeline_exports",
    Kind.COUNTER,
    "{export}",
    "Batches the pipeline tried to deliver, by exporter.",
    (EXPORTER,),
)
EXPORT_FAILURES = Metric(
    "observe_pipeline_export_failures",
    Kind.COUNTER,
    "{export}",
    "Delivery attempts that failed, by exporter; the batch stays spooled.",
    (EXPORTER,),
)
SPOOLED_SAMPLES = Metric(
    "observe_pipeline_spooled_samples",
    Kind.GAUGE,
    "{sample}",
    "Samples waiting in the on-disk spool for the store.",
)
DROPPED_SAMPLES = Metric(
    "observe_pipeline_dropped_samples",
    Kind.COUNTER,
    "{sample}",
    "Samples dropped because the spool was full, a label set went over the cap, or a label "
    "held text the store cannot keep (NUL, a lone surrogate).",
    (REASON,),
)

# Values of DROPPED_SAMPLES' `reason`.
SPOOL_FULL = "spool_full"
LABEL_LIMIT = "label_limit"
UNSTORABLE_LABEL = "unstorable_label"

CATALOGUE: tuple[Metric, ...] = (
    EXPERT_TOKENS,
    ROUTING_ENTROPY,
    ROUTING_ENTROPY_WINDOWS,
    EXPERT_ENTROPY_ASSIGNMENTS,
    ENTROPY_ASSIGNMENTS,
    EXPERT_SHARE,
    LOAD_IMBALANCE,
    DEAD_EXPERTS,
    TOP1_PROBABILITY,
    AUX_LOSS,
    Z_LOSS,
    DROPPED_TOKENS,
    ROUTER_NONFINITE_TOKENS,
    ROUTER_SAMPLE_RATE,
    MONITOR_STEPS,
    TRAIN_LOSS,
    TRAIN_TOKENS_PER_SECOND,
    INFERENCE_LATENCY,
    CACHE_HITS,
    CACHE_MISSES,
    SERVER_REQUESTS,
    SERVER_REQUEST_LATENCY,
    SERVER_TIME_TO_FIRST_TOKEN,
    SERVER_PROMPT_TOKENS,
    SERVER_COMPLETION_TOKENS,
    SEMANTIC_DRIFT,
    SEMANTIC_DRIFT_THRESHOLD,
    SEMANTIC_DRIFTED_WINDOWS,
    ROUTING_DRIFT,
    DRIFT_WINDOWS,
    KNOWLEDGE_FRESHNESS,
    EXPORTS,
    EXPORT_FAILURES,
    SPOOLED_SAMPLES,
    DROPPED_SAMPLES,
)
BY_NAME = {m.name: m for m in CATALOGUE}
