"""External launcher: checks once, starts and stops nothing."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.stub import Stubber

from servebench.launchers.base import LaunchError, LaunchRequest
from servebench.launchers.external import ExternalLauncher
from servebench.launchers.readiness import free_port


def serve(routes: dict[str, int]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(routes.get(self.path, 404))
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def server_factory():
    started = []

    def make(routes):
        httpd, url = serve(routes)
        started.append(httpd)
        return url

    yield make
    for h in started:
        h.shutdown()
        h.server_close()


def test_healthy_url(server_factory):
    url = server_factory({"/health": 200})
    s = ExternalLauncher().start(LaunchRequest(engine="tgi", model="m", options={"base_url": url + "/"}))
    assert s.base_url == url and s.engine == "tgi" and s.adapter == "tgi" and s.pid is None
    assert s.info["health"] == "/health" and s.info["launcher"] == "external"


def test_openai_server_without_health_route_uses_models(server_factory):
    url = server_factory({"/v1/models": 200})
    s = ExternalLauncher().start(LaunchRequest(engine="vllm", model="m", options={"endpoint": url}))
    assert s.info["health"] == "/v1/models" and s.adapter == "openai-completions"
    # a non-OpenAI adapter does not get the fallback
    with pytest.raises(LaunchError, match=r"is not healthy: GET /health -> HTTP 404"):
        ExternalLauncher().start(LaunchRequest(engine="tgi", model="m", options={"endpoint": url}))


def test_openai_server_whose_models_route_fails_uses_health(server_factory):
    # transformers serve answers /health but 500s on /v1/models without a local hub cache
    url = server_factory({"/v1/models": 500, "/health": 200})
    s = ExternalLauncher().start(LaunchRequest(engine="openai", model="m", options={"endpoint": url}))
    assert s.info["health"] == "/health"


def test_unhealthy_and_unreachable_are_one_line_errors(server_factory):
    url = server_factory({"/health": 503})
    with pytest.raises(LaunchError, match=r"^endpoint http://127\.0\.0\.1:\d+ is not healthy: GET /health -> HTTP 503$"):
        ExternalLauncher().start(LaunchRequest(engine="tgi", model="m", options={"endpoint": url}))
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LaunchError, match=r"^endpoint .* is unreachable: ") as ei:
        ExternalLauncher(timeout_s=1).start(LaunchRequest(engine="vllm", model="m", options={"endpoint": dead}))
    assert "\n" not in str(ei.value)
    with pytest.raises(LaunchError, match="needs an endpoint"):
        ExternalLauncher().start(LaunchRequest(engine="vllm", model="m"))
    with pytest.raises(LaunchError, match="neither an http"):
        ExternalLauncher().start(LaunchRequest(engine="vllm", model="m", options={"endpoint": "localhost:8000"}))


def sm_client():
    return boto3.client("sagemaker", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")


def test_sagemaker_endpoint_in_service():
    sm = sm_client()
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", {
            "EndpointName": "llama", "EndpointArn": "arn:aws:sagemaker:us-west-2:1:endpoint/llama",
            "EndpointStatus": "InService", "CreationTime": "2024-01-01", "LastModifiedTime": "2024-01-01"},
            {"EndpointName": "llama"})
        s = ExternalLauncher(sagemaker_client=sm).start(
            LaunchRequest(engine="tgi", model="m", options={"endpoint": "sagemaker://llama"}))
        stub.assert_no_pending_responses()
    assert s.base_url == "sagemaker://llama" and s.adapter == "tgi"


def test_sagemaker_region_option_checks_there_and_rides_in_the_url(monkeypatch):
    made = []
    sm = sm_client()
    monkeypatch.setattr(boto3, "client", lambda service, region_name=None, **kw: made.append((service, region_name)) or sm)
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", {
            "EndpointName": "llama", "EndpointArn": "arn:aws:sagemaker:us-west-2:1:endpoint/llama",
            "EndpointStatus": "InService", "CreationTime": "2024-01-01", "LastModifiedTime": "2024-01-01"})
        s = ExternalLauncher().start(LaunchRequest(engine="tgi", model="m", options={
            "endpoint": "sagemaker://llama", "region": "us-west-2"}))
    assert made == [("sagemaker", "us-west-2")]
    assert s.base_url == "sagemaker://llama?region=us-west-2"  # what the load transport is built from


def test_sagemaker_endpoint_missing_or_not_ready():
    sm = sm_client()
    with Stubber(sm) as stub:
        stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint \"nope\".")
        stub.add_response("describe_endpoint", {
            "EndpointName": "x", "EndpointArn": "arn:aws:sagemaker:us-west-2:1:endpoint/x",
            "EndpointStatus": "Creating", "CreationTime": "2024-01-01", "LastModifiedTime": "2024-01-01"})
        ext = ExternalLauncher(sagemaker_client=sm)
        with pytest.raises(LaunchError, match=r"^SageMaker endpoint 'nope': Could not find endpoint"):
            ext.start(LaunchRequest(engine="tgi", model="m", options={"endpoint": "sagemaker://nope"}))
        with pytest.raises(LaunchError, match=r"is Creating, not InService"):
            ext.start(LaunchRequest(engine="tgi", model="m", options={"endpoint": "sagemaker://x"}))
