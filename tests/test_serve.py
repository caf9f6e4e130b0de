"""`observe serve`: a real uvicorn on a free loopback port, called with the official
`openai` client, its figures read back from /metrics; its refusals, its queue bound, and
its end on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from cli_runner import invoke
from prometheus_client.parser import text_string_to_metric_families
from served_process import SERVE, served_url

from observe import catalogue
from observe.hooks import MonitorConfig
from observe.jobs import record_baseline
from observe.pipeline import MonitoringSession
from observe.settings import Settings
from observe.store.writer import Store
from observe.workload.checkpoint import save_checkpoint
from observe.workload.config import get_config
from observe.workload.inference import InferenceEngine
from observe.workload.model import MoETransformer
from observe.workload.server import http
from observe.workload.server.app import Service, Slots, create_app
from observe.workload.server.figures import ServerFigures
from observe.workload.server.openai_api import ServedModel

MODEL = "tiny-served"
# The demo trains and replays traffic before it serves: minutes on a loaded machine.
DEMO_BOUND_S = 600.0
# A bound on any wait here: past it the server hung.
BOUND_S = 60.0


@dataclass
class Served:
    url: str
    session: MonitoringSession
    service: Service

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="none", max_retries=0, timeout=BOUND_S
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.session.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=BOUND_S) as response:
            text = response.read().decode()
        return {
            (
                s.name,
                tuple(sorted((k, v) for k, v in s.labels.items() if k in KEPT_LABELS)),
            ): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


KEPT_LABELS = {catalogue.ROUTE, catalogue.STATUS_CODE}


def tiny_model() -> MoETransformer:
    torch.manual_seed(0)
    return MoETransformer(get_config("tiny"))


@contextlib.contextmanager
def serving(
    tmp: Path, max_queue: int = 64, gate: threading.Event | None = None
) -> Iterator[Served]:
    """The tiny model served in this process, monitored by a session of its own. With a
    `gate`, each forward of the model waits until it is set: requests stay generating."""
    settings = Settings(
        db_url=f"sqlite:///{tmp / 'observe.db'}",
        prometheus_port=0,
        prometheus_linger_s=0,
        spool_dir=tmp / "spool",
    )
    model = tiny_model()
    if gate is not None:

        def held(*_: object) -> None:
            gate.wait(BOUND_S)

        model.register_forward_pre_hook(held)
    with MonitoringSession(settings, model=MODEL) as session:
        monitor = session.attach(model)
        with InferenceEngine(
            model, on_batch=monitor.step, meter_provider=session.meter_provider
        ) as engine:
            served = ServedModel(MODEL, model.config.max_seq_len, int(time.time()))
            figures = ServerFigures(session.meter_provider)
            service = Service(engine, served, figures, Slots(max_queue))
            sock = http.bind("127.0.0.1", 0)
            server = http.Server(create_app(service), drain_s=5)
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
            thread.start()
            try:
                deadline = time.monotonic() + BOUND_S
                while not server.started:
                    assert time.monotonic() < deadline and thread.is_alive(), "never started"
                    time.sleep(0.01)
                yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", session, service)
            finally:
                server.stop()
                thread.join(BOUND_S)
                sock.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("serve")) as running:
        yield running


def greedy(**kwargs: Any) -> dict[str, Any]:
    return {"model": MODEL, "temperature": 0, "max_tokens": 12, **kwargs}


def test_models_health_and_readiness(served: Served) -> None:
    assert [m.id for m in served.client().models.list()] == [MODEL]
    assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{served.url}/readyz").json()["status"] == "ready"


def test_a_completion_counts_its_tokens_and_a_repeat_comes_from_the_cache(
    served: Served,
) -> None:
    client = served.client()
    first = client.completions.create(**greedy(prompt="hello"))
    [choice] = first.choices
    assert first.model == MODEL and first.object == "text_completion"
    assert first.usage is not None
    assert first.usage.prompt_tokens == len(b"hello") + 1  # and BOS
    assert 1 <= first.usage.completion_tokens <= 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert choice.finish_reason in ("stop", "length")
    hits = served.service.engine.cache.hits
    again = client.completions.create(**greedy(prompt="hello"))
    assert again.choices[0].text == choice.text and again.usage == first.usage
    assert served.service.engine.cache.hits == hits + 1


def test_chat_answers_as_the_assistant(served: Served) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    chat = served.client().chat.completions.create(**greedy(messages=messages))
    [choice] = chat.choices
    assert chat.object == "chat.completion" and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    prompt = "system: Be brief.\nuser: hi\nassistant:"
    assert chat.usage is not None and chat.usage.prompt_tokens == len(prompt.encode()) + 1


@pytest.mark.parametrize("chat", [False, True])
def test_a_stream_says_what_the_whole_answer_says(served: Served, chat: bool) -> None:
    client = served.client()
    request = greedy(max_tokens=20, seed=3)
    if chat:
        request["messages"] = [{"role": "user", "content": f"stream {chat}"}]
        whole = client.chat.completions.create(**request)
        text, finish = whole.choices[0].message.content, whole.choices[0].finish_reason
        chunks = list(
            client.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        request["prompt"] = f"stream {chat}"
        whole = client.completions.create(**request)
        text, finish = whole.choices[0].text, whole.choices[0].finish_reason
        chunks = list(
            client.completions.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
        )
        streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert streamed == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish
    assert chunks[-1].usage == whole.usage


def test_a_fresh_stream_arrives_in_pieces_and_is_timed(served: Served) -> None:
    before = served.metrics()
    chunks = list(
        served.client().completions.create(**greedy(prompt="pieces", max_tokens=24), stream=True)
    )
    texts = [c.choices[0].text for c in chunks if c.choices[0].text]
    assert len(texts) > 1  # generated as it went, not sent whole at the end
    after = served.metrics()
    key = (
        catalogue.SERVER_TIME_TO_FIRST_TOKEN.prometheus_name + "_count",
        ((catalogue.ROUTE, "/v1/completions"),),
    )
    assert after[key] == before.get(key, 0) + 1


def test_seeds_make_sampling_repeatable(served: Served) -> None:
    client = served.client()
    sampled = {
        "model": MODEL,
        "prompt": "seeded",
        "max_tokens": 16,
        "temperature": 1.0,
        "top_p": 0.95,
    }
    texts = [client.completions.create(**sampled, seed=s).choices[0].text for s in (7, 7, 8)]
    assert texts[0] == texts[1] != texts[2]


def test_a_stop_sequence_ends_the_text_before_it(served: Served) -> None:
    client = served.client()
    text = client.completions.create(**greedy(prompt="stops", max_tokens=24)).choices[0].text
    # A character of the text that a stop sequence can name: ASCII, not at the very start.
    index, char = next((i, c) for i, c in enumerate(text) if i and c.isascii() and c.isprintable())
    stopped = client.completions.create(**greedy(prompt="stops", max_tokens=24, stop=[char]))
    [choice] = stopped.choices
    assert choice.text == text[: text.index(char)] and choice.finish_reason == "stop"
    assert index >= text.index(char)


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"prompt": "x"}, 400, "model", "missing_field"),
        ({"model": MODEL}, 400, "prompt", "missing_field"),
        ({"model": MODEL, "prompt": "x", "max_tokens": "many"}, 400, "max_tokens", "invalid_value"),
        ({"model": MODEL, "prompt": 7}, 400, "prompt", "invalid_value"),
        ({"model": "gpt-4", "prompt": "x"}, 404, "model", "model_not_found"),
        ({"model": MODEL, "prompt": "x" * 5000}, 400, "prompt", "context_length_exceeded"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 10**6}, 400, "max_tokens",
         "context_length_exceeded"),
        ({"model": MODEL, "prompt": "x", "n": 2}, 400, "n", "unsupported_parameter"),
        ({"model": MODEL, "prompt": "x", "temperature": 3}, 400, "temperature", "invalid_value"),
        ({"model": MODEL, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop",
         "invalid_value"),
        ({"model": MODEL, "prompt": "x", "stop": [""]}, 400, "stop", "invalid_value"),
        ({"model": MODEL, "prompt": ["a", "b"]}, 400, "prompt", "invalid_value"),
    ],
)  # fmt: skip
def test_bad_completions_are_refused_with_an_openai_error(
    served: Served, body: dict[str, Any], status: int, param: str, code: str
) -> None:
    response = httpx.post(f"{served.url}/v1/completions", json=body, timeout=BOUND_S)
    assert response.status_code == status, response.text
    found = error(response)
    assert (found["param"], found["code"]) == (param, code), found
    assert found["message"]


def test_the_client_raises_what_the_server_refuses(served: Served) -> None:
    client = served.client()
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x" * 5000}]
        )
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL, messages=[])


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("POST", "/v1/completions", b"{not json", 400, "invalid_json"),
        ("POST", "/v1/completions", b"[1, 2]", 400, "invalid_body"),
        ("POST", "/v1/chat/completions", b"", 400, "invalid_body"),
        ("GET", "/v1/completions", b"", 405, "method_not_allowed"),
        ("POST", "/v1/embeddings", b"{}", 404, "unknown_url"),
    ],
)
def test_malformed_requests_are_refused_and_the_server_stays_up(
    served: Served, method: str, path: str, content: bytes, status: int, code: str
) -> None:
    response = httpx.request(
        method,
        f"{served.url}{path}",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=BOUND_S,
    )
    assert response.status_code == status, response.text
    assert error(response)["code"] == code
    assert httpx.get(f"{served.url}/healthz").status_code == 200


def test_concurrent_requests_are_all_answered_and_counted(served: Served) -> None:
    before = served.metrics()
    client = served.client()

    def ask(i: int) -> Any:
        return client.completions.create(**greedy(prompt=f"request {i}", max_tokens=8))

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, range(32)))
    after = served.metrics()
    route = ((catalogue.ROUTE, "/v1/completions"),)

    def grew(metric: catalogue.Metric, labels: tuple[tuple[str, str], ...]) -> float:
        key = (metric.prometheus_name, labels)
        return after[key] - before.get(key, 0)

    ok = ((catalogue.ROUTE, "/v1/completions"), (catalogue.STATUS_CODE, "200"))
    assert grew(catalogue.SERVER_REQUESTS, ok) == 32
    assert grew(catalogue.SERVER_PROMPT_TOKENS, route) == sum(
        a.usage.prompt_tokens for a in answers
    )
    assert grew(catalogue.SERVER_COMPLETION_TOKENS, route) == sum(
        a.usage.completion_tokens for a in answers
    )
    latency = catalogue.SERVER_REQUEST_LATENCY.prometheus_name + "_count"
    assert after[(latency, route)] - before.get((latency, route), 0) == 32


def test_a_full_queue_is_429_and_a_client_gone_mid_stream_frees_its_slot(
    tmp_path: Path,
) -> None:
    gate = threading.Event()
    with serving(tmp_path, max_queue=1, gate=gate) as one:
        client = one.client()
        url = f"{one.url}/v1/completions"
        with httpx.stream("POST", url, json=greedy(prompt="held", stream=True), timeout=BOUND_S):
            # Generating, held at the gate: the one slot stays taken.
            deadline = time.monotonic() + BOUND_S
            while not one.service.slots.held:
                assert time.monotonic() < deadline, "the stream never took its slot"
                time.sleep(0.01)
            refused = httpx.post(url, json=greedy(prompt="more"), timeout=BOUND_S)
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "1"
            assert error(refused)["code"] == "queue_full"
        # The client went away mid-stream, its generation still held: its slot is free again.
        while one.service.slots.held:
            assert time.monotonic() < deadline, "the stream's slot was never freed"
            time.sleep(0.01)
        gate.set()
        assert client.completions.create(**greedy(prompt="more")).choices
        counted = one.metrics()
        key = (
            catalogue.SERVER_REQUESTS.prometheus_name,
            ((catalogue.ROUTE, "/v1/completions"), (catalogue.STATUS_CODE, "429")),
        )
        assert counted[key] == 1


@pytest.mark.slow
def test_sigterm_finishes_the_stream_in_flight_and_ends_the_run(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ckpt", tiny_model(), step=1, domain="general")
    db = tmp_path / "observe.db"
    env = {
        **os.environ,
        "OBSERVE_DB_URL": f"sqlite:///{db}",
        "OBSERVE_SPOOL_DIR": str(tmp_path / "spool"),
        "OBSERVE_PROMETHEUS_PORT": "0",
    }
    command = [*SERVE, "--checkpoint", str(tmp_path / "ckpt"), "--port", "0", "--no-drift"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = served_url(process, BOUND_S)
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=BOUND_S)
        with client.completions.create(
            model="ckpt", prompt="last words", max_tokens=40, temperature=0, stream=True
        ) as stream:
            pieces = iter(stream)
            first = next(pieces)
            process.send_signal(signal.SIGTERM)
            rest = list(pieces)  # the request in flight is finished, not cut off
        assert rest and rest[-1].choices[0].finish_reason in ("stop", "length")
        assert first.choices[0].text is not None
        process.wait(BOUND_S)
        stderr = process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(url.removesuffix("/v1") + "/healthz", timeout=5)
    with sqlite3.connect(db) as connection:
        [(status, ended)] = connection.execute("select status, ended from runs").fetchall()
    assert status == "finished" and ended is not None


@pytest.mark.slow
def test_drift_and_alert_status_show_the_live_service(tmp_path: Path) -> None:
    model = tiny_model()
    save_checkpoint(tmp_path / "ckpt", model, step=1, domain="general")
    db_url = f"sqlite:///{tmp_path / 'observe.db'}"
    store = Store.open(db_url)
    prompts = [f"reference prompt number {i}" for i in range(160)]
    record_baseline(model, prompts, MonitorConfig(), name="ckpt").save(store)
    store.close()
    env = {
        **os.environ,
        "OBSERVE_DB_URL": db_url,
        "OBSERVE_SPOOL_DIR": str(tmp_path / "spool"),
        "OBSERVE_PROMETHEUS_PORT": "0",
        "OBSERVE_MONITOR_FLUSH_EVERY": "2",
    }
    command = [*SERVE, "--checkpoint", str(tmp_path / "ckpt"), "--port", "0"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = served_url(process, BOUND_S)
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=BOUND_S)
        for i in range(6):  # a step each: three windows
            client.completions.create(model="ckpt", prompt=f"live {i}", max_tokens=16)
        deadline = time.monotonic() + BOUND_S
        while True:
            code, output = invoke("drift", "status", "--json", "--db-url", db_url)
            if code == 0 and json.loads(output):
                break
            assert time.monotonic() < deadline, output
            time.sleep(0.5)
        [run] = json.loads(invoke("runs", "--json", "--db-url", db_url)[1])
        assert run["status"] == "running"
        scores = json.loads(output)
        assert {row["run"] for row in scores} == {run["id"]}, scores
        code, output = invoke("alerts", "status", "--json", "--db-url", db_url)
        assert code == 0, output
        assert {row["rule"] for row in json.loads(output)} >= {"ObserveSemanticDrift"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(BOUND_S)
    assert process.returncode == 0


def test_a_taken_port_is_an_error_that_says_so(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ckpt", tiny_model(), step=1, domain="general")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*SERVE, "--checkpoint", str(tmp_path / "ckpt"), "--port", str(port)],
            env={
                **os.environ,
                "OBSERVE_DB_URL": f"sqlite:///{tmp_path / 'o.db'}",
                "OBSERVE_PROMETHEUS_PORT": "0",
            },
            capture_output=True,
            text=True,
            timeout=BOUND_S,
        )
    assert result.returncode == 2, result.stderr
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_demo_can_end_by_serving_its_model(tmp_path: Path) -> None:
    command = [
        *SERVE[:-1], "demo", "--model-size", "tiny", "--steps", "2", "--requests", "6",
        "--no-progress", "--out", str(tmp_path / "demo"), "--serve", "--port", "0",
    ]  # fmt: skip
    env = {
        **os.environ,
        "OBSERVE_DB_URL": f"sqlite:///{tmp_path / 'observe.db'}",
        "OBSERVE_SPOOL_DIR": str(tmp_path / "spool"),
        "OBSERVE_PROMETHEUS_PORT": "0",
        "OBSERVE_PROMETHEUS_LINGER_S": "0",
    }
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = served_url(process, DEMO_BOUND_S)
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=BOUND_S)
        assert [m.id for m in client.models.list()] == ["demo"]
        assert client.completions.create(model="demo", prompt="Hi", max_tokens=4).choices
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(BOUND_S)
    assert process.returncode == 0
