"""What the server reports, through the OpenTelemetry API like any library: requests by
route and status code, latency with time queued, time to first token, tokens in and out."""

from __future__ import annotations

from opentelemetry.metrics import MeterProvider

from observe import catalogue, instruments


class ServerFigures:
    def __init__(self, meter_provider: MeterProvider | None) -> None:
        meter = instruments.meter(meter_provider, "observe.workload.server")
        self._requests = instruments.counter(meter, catalogue.SERVER_REQUESTS)
        self._latency = instruments.histogram(meter, catalogue.SERVER_REQUEST_LATENCY)
        self._first_token = instruments.histogram(meter, catalogue.SERVER_TIME_TO_FIRST_TOKEN)
        self._prompt_tokens = instruments.counter(meter, catalogue.SERVER_PROMPT_TOKENS)
        self._completion_tokens = instruments.counter(meter, catalogue.SERVER_COMPLETION_TOKENS)

    def answered(self, route: str, status: int) -> None:
        self._requests.add(1, catalogue.SERVER_REQUESTS.attributes(route, status))

    def generated(
        self, route: str, latency_s: float, prompt_tokens: int, completion_tokens: int
    ) -> None:
        attributes = catalogue.SERVER_REQUEST_LATENCY.attributes(route)
        self._latency.record(latency_s, attributes)
        self._prompt_tokens.add(prompt_tokens, attributes)
        self._completion_tokens.add(completion_tokens, attributes)

    def first_token(self, route: str, seconds: float) -> None:
        self._first_token.record(seconds, catalogue.SERVER_TIME_TO_FIRST_TOKEN.attributes(route))
