"""Ctrl-C, twice and three times, in every phase of a SageMaker deploy leaves no endpoint,
endpoint config or model (botocore Stubber sequences; the signals are real SIGINTs raised
in this process while the delete calls run, as a user's Ctrl-Cs would land)."""

from __future__ import annotations

import io
import json
import signal

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from servebench.launchers.owner import ledgers
from servebench.launchers.sagemaker import SageMakerLauncher
from tests.unit.test_sagemaker_launcher import clients, describe, expect_create, expect_delete, request


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEBENCH_STATE_DIR", str(tmp_path))
    return tmp_path


def ctrl_c_on(client, operation: str, times: int) -> list[str]:
    """Deliver `times` SIGINTs to this process whenever `operation` is called (before the stub answers)."""
    seen: list[str] = []

    def hit(**_kw):
        seen.append(operation)
        for _ in range(times):
            signal.raise_signal(signal.SIGINT)

    client.meta.events.register_first(f"before-parameter-build.sagemaker.{operation}", hit)
    return seen


def interrupt_once():
    """A sleep the user's first Ctrl-C interrupts (later ones are signals, as in real life)."""
    n = []

    def sleep(_s):
        n.append(1)
        if len(n) == 1:
            raise KeyboardInterrupt
    return sleep


def make(sm, rt, msgs, sleep=lambda s: None):
    return SageMakerLauncher(sagemaker_client=sm, runtime_client=rt, progress=msgs.append, sleep=sleep, poll_s=0)


def assert_nothing_left(state, msgs):
    assert ledgers(state / "sagemaker") == []  # the ledger is emptied as each one goes
    for what in ("endpoint", "endpoint config", "model"):
        assert f"deleted sagemaker {what} bench-1" in msgs or (what == "endpoint" and "deleting sagemaker endpoint bench-1" in msgs)


@pytest.mark.parametrize("presses", [2, 3])
def test_ctrl_c_while_creating_then_more_during_deletion(state, presses):
    sm, rt = clients()
    msgs: list[str] = []
    with Stubber(sm) as s:
        expect_create(s)
        s.add_response("describe_endpoint", describe("Creating"))
        s.add_client_error("delete_endpoint", "ValidationException", "Cannot delete in-progress endpoint")
        s.add_response("describe_endpoint", describe("Creating"))
        expect_delete(s, ["endpoint_config", "model"])
        s.add_response("describe_endpoint", describe("Creating"))
        s.add_response("describe_endpoint", describe("InService"))  # became ready meanwhile: deleted all the same
        expect_delete(s, ["endpoint"])
        hits = ctrl_c_on(sm, "DeleteEndpoint", presses - 1)
        with pytest.raises(KeyboardInterrupt):  # the first Ctrl-C, while waiting for InService
            make(sm, rt, msgs, sleep=interrupt_once()).start(request())
        s.assert_no_pending_responses()
    assert hits.count("DeleteEndpoint") == 2
    assert_nothing_left(state, msgs)
    assert any(m.startswith("interrupt held: deleting the SageMaker endpoint") for m in msgs)


def test_third_ctrl_c_during_the_wait_for_creating_to_end(state):
    """The deletion wait sleeps between polls; Ctrl-Cs landing there are held too."""
    sm, rt = clients()
    msgs: list[str] = []
    calls = {"n": 0}

    def sleep(_s):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # the user's first Ctrl-C, while Creating
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    with Stubber(sm) as s:
        expect_create(s)
        s.add_response("describe_endpoint", describe("Creating"))
        s.add_client_error("delete_endpoint", "ValidationException", "Cannot delete in-progress endpoint")
        s.add_response("describe_endpoint", describe("Creating"))
        expect_delete(s, ["endpoint_config", "model"])
        for _ in range(3):
            s.add_response("describe_endpoint", describe("Creating"))
        s.add_response("describe_endpoint", describe("Failed", "model deleted"))
        expect_delete(s, ["endpoint"])
        with pytest.raises(KeyboardInterrupt):
            make(sm, rt, msgs, sleep=sleep).start(request())
        s.assert_no_pending_responses()
    assert calls["n"] == 4
    assert_nothing_left(state, msgs)


@pytest.mark.parametrize("presses", [2, 3])
def test_ctrl_c_in_service_during_the_first_generation(state, presses):
    sm, rt = clients()
    msgs: list[str] = []

    class Runtime:  # the first generation, interrupted by the user's first Ctrl-C
        def invoke_endpoint(self, **_kw):
            raise KeyboardInterrupt

    rt = Runtime()
    with Stubber(sm) as s:
        expect_create(s)
        s.add_response("describe_endpoint", describe("InService"))
        expect_delete(s)
        ctrl_c_on(sm, "DeleteEndpoint", presses - 1)
        ctrl_c_on(sm, "DeleteEndpointConfig", 1)
        with pytest.raises(KeyboardInterrupt):
            make(sm, rt, msgs).start(request())
        s.assert_no_pending_responses()
    assert_nothing_left(state, msgs)


@pytest.mark.parametrize("presses", [2, 3])
def test_ctrl_c_during_the_load_then_during_deletion(state, presses):
    """The load runs between start() and stop(): the caller stops on Ctrl-C (as ServerSession
    does); the further presses land inside the delete calls."""
    sm, rt = clients()
    msgs: list[str] = []
    with Stubber(sm) as s, Stubber(rt) as r:
        expect_create(s)
        s.add_response("describe_endpoint", describe("InService"))
        body = b'[{"generated_text":" hi"}]'
        r.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(body), len(body))},
                       {"EndpointName": "bench-1", "Body": ANY, "ContentType": "application/json"})
        la = make(sm, rt, msgs)
        la.start(request())
        files = ledgers(state / "sagemaker")
        assert [(x["kind"], x["name"], x["region"]) for x in files[0][1]["resources"]] == [
            ("model", "bench-1", "us-west-2"), ("endpoint_config", "bench-1", "us-west-2"),
            ("endpoint", "bench-1", "us-west-2")]  # what `servebench cleanup` finds after a SIGKILL
        expect_delete(s)
        for op in ("DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"):
            ctrl_c_on(sm, op, presses - 1)
        try:  # the first Ctrl-C ended the load; the stop is the answer to it
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            la.stop()
        s.assert_no_pending_responses()
    assert_nothing_left(state, msgs)
    assert la.created == []


def test_tags_name_the_run_on_every_resource(state):
    sm, rt = clients()
    sent: list[dict] = []
    for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        sm.meta.events.register_first(f"before-parameter-build.sagemaker.{op}", lambda params, **_: sent.append(params))
    with Stubber(sm) as s:
        expect_create(s)
        s.add_response("describe_endpoint", describe("Failed", "x"))
        expect_delete(s)
        with pytest.raises(Exception):
            make(sm, rt, []).start(request())
    keys = [sorted(t["Key"] for t in p["Tags"]) for p in sent]
    assert keys == [["servebench:host", "servebench:pid", "servebench:run", "servebench:started"]] * 3
    assert json.dumps(sent[0]["Tags"]).count("servebench:run") == 1
