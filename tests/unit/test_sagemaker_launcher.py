"""SageMaker launcher: the control-plane calls in order (botocore Stubber, which also validates
every request against the real service model), and deletion on every exit path."""

from __future__ import annotations

import io
import json
from datetime import datetime

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from servebench.launchers.base import LaunchError, LaunchRequest
from servebench.launchers.sagemaker import SageMakerLauncher

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
ARN = "arn:aws:sagemaker:us-west-2:123456789012:{}/bench-1"
IMAGE = ("763104351884.dkr.ecr.us-west-2.amazonaws.com/huggingface-pytorch-tgi-inference:"
         "2.4.0-tgi3.0.1-gpu-py311-cu124-ubuntu22.04-v2.0")
T = datetime(2024, 1, 1)


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """The ledger of created resources goes here, never into the user's home."""
    monkeypatch.setenv("SERVEBENCH_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def clients():
    kw = dict(region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    return boto3.client("sagemaker", **kw), boto3.client("sagemaker-runtime", **kw)


def describe(status, reason=None):
    r = {"EndpointName": "bench-1", "EndpointArn": ARN.format("endpoint"), "EndpointStatus": status,
         "CreationTime": T, "LastModifiedTime": T}
    if reason:
        r["FailureReason"] = reason
    return r


def expect_create(stub, env=ANY, startup=3600):
    stub.add_response("create_model", {"ModelArn": ARN.format("model")}, {
        "ModelName": "bench-1", "ExecutionRoleArn": ROLE, "PrimaryContainer": {"Image": IMAGE, "Environment": env},
        "Tags": ANY})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": ARN.format("endpoint-config")}, {
        "EndpointConfigName": "bench-1", "Tags": ANY, "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": "bench-1", "InstanceType": "ml.g5.12xlarge",
            "InitialInstanceCount": 1, "ContainerStartupHealthCheckTimeoutInSeconds": startup}]})
    stub.add_response("create_endpoint", {"EndpointArn": ARN.format("endpoint")},
                      {"EndpointName": "bench-1", "EndpointConfigName": "bench-1", "Tags": ANY})


def expect_delete(stub, what=("endpoint", "endpoint_config", "model")):
    keys = {"endpoint": "EndpointName", "endpoint_config": "EndpointConfigName", "model": "ModelName"}
    for kind in what:
        stub.add_response(f"delete_{kind}", {}, {keys[kind]: "bench-1"})


def request(**opts):
    o = {"name": "bench-1", "instance_type": "ml.g5.12xlarge", "role_arn": ROLE, "region": "us-west-2", **opts}
    return LaunchRequest(engine="tgi", model="meta-llama/Llama-2-7b-hf", gpus=[0, 1, 2, 3], ready_timeout_s=3600,
                         options=o)


def launcher(sm, rt, msgs, sleep=lambda s: None):
    return SageMakerLauncher(sagemaker_client=sm, runtime_client=rt, progress=msgs.append, sleep=sleep, poll_s=0)


def test_deploy_wait_probe_then_delete_in_order(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_s3cret")
    sm, rt = clients()
    msgs: list[str] = []
    with Stubber(sm) as s, Stubber(rt) as r:
        expect_create(s, env={"HF_MODEL_ID": "meta-llama/Llama-2-7b-hf", "SM_NUM_GPUS": "4", "HF_MODEL_QUANTIZE": "gptq",
                              "MAX_INPUT_TOKENS": "1024", "MAX_TOTAL_TOKENS": "2048", "HF_TOKEN": "hf_s3cret"})
        s.add_response("describe_endpoint", describe("Creating"), {"EndpointName": "bench-1"})
        s.add_response("describe_endpoint", describe("Creating"), {"EndpointName": "bench-1"})
        s.add_response("describe_endpoint", describe("InService"), {"EndpointName": "bench-1"})
        body = b'[{"generated_text":" hi"}]'
        r.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(body), len(body))},
                       {"EndpointName": "bench-1", "Body": ANY, "ContentType": "application/json"})
        la = launcher(sm, rt, msgs)
        server = la.start(request(quantize="gptq", max_input_tokens=1024, max_total_tokens=2048))
        s.assert_no_pending_responses()
        r.assert_no_pending_responses()
        # the region travels with the URL to the load clients (transport.sagemaker)
        assert server.base_url == "sagemaker://bench-1?region=us-west-2"
        assert server.adapter == "tgi" and server.time_to_ready_s >= 0
        assert server.info["env"]["HF_TOKEN"] == "<redacted>" and "hf_s3cret" not in json.dumps(server.info)
        assert server.info["image"] == IMAGE and server.info["deployed"] is True
        assert msgs == ["preflight quota: not checked (no Service Quotas client); region us-west-2; start-up wait 3600s",
                        "sagemaker endpoint bench-1: Creating", "sagemaker endpoint bench-1: InService"]
        expect_delete(s)
        la.stop()
        n = len(msgs)
        la.stop()  # idempotent: nothing more is deleted or attempted
        s.assert_no_pending_responses()
        assert len(msgs) == n == 6


def test_failure_during_wait_deletes_everything():
    sm, rt = clients()
    with Stubber(sm) as s:
        expect_create(s)
        s.add_response("describe_endpoint", describe("Failed", "CUDA out of memory.\nmore"), {"EndpointName": "bench-1"})
        expect_delete(s)
        msgs: list[str] = []
        with pytest.raises(LaunchError, match=r"^sagemaker endpoint bench-1 is Failed: CUDA out of memory\. more$"):
            launcher(sm, rt, msgs).start(request())
        s.assert_no_pending_responses()
    assert msgs[-3:] == ["deleted sagemaker endpoint bench-1", "deleted sagemaker endpoint config bench-1",
                         "deleted sagemaker model bench-1"]


def test_failure_at_create_deletes_what_exists():
    sm, rt = clients()
    with Stubber(sm) as s:
        s.add_response("create_model", {"ModelArn": ARN.format("model")})
        s.add_client_error("create_endpoint_config", "ResourceLimitExceeded", "account-level service limit")
        expect_delete(s, ["model"])
        with pytest.raises(LaunchError, match=r"^sagemaker deploy of bench-1 failed: ResourceLimitExceeded: account-level service limit$"):
            launcher(sm, rt, []).start(request())
        s.assert_no_pending_responses()


def test_name_taken_by_someone_else_is_never_deleted():
    sm, rt = clients()
    with Stubber(sm) as s:
        s.add_client_error("create_model", "ValidationException", 'Cannot create already existing model "bench-1".')
        msgs: list[str] = []
        with pytest.raises(LaunchError, match="already existing model"):
            launcher(sm, rt, msgs).start(request())
        s.assert_no_pending_responses()
    assert [m for m in msgs if not m.startswith("preflight")] == []  # no delete attempted (stop() reports each)


def test_a_generated_name_already_existing_is_this_deploys_own_and_is_deleted():
    # botocore retries a create whose answer was lost; the retry is told "already existing",
    # and a name servebench made for this deploy can be no one else's: it keeps billing unless deleted
    sm, rt = clients()
    req = request()
    req.options.pop("name")
    msgs: list[str] = []
    with Stubber(sm) as s:
        s.add_response("create_model", {"ModelArn": ARN.format("model")})
        s.add_response("create_endpoint_config", {"EndpointConfigArn": ARN.format("endpoint-config")})
        s.add_client_error("create_endpoint", "ValidationException", 'Cannot create already existing endpoint "x".')
        for kind in ("endpoint", "endpoint_config", "model"):
            s.add_response(f"delete_{kind}", {})
        with pytest.raises(LaunchError, match="already existing endpoint"):
            launcher(sm, rt, msgs).start(req)
        s.assert_no_pending_responses()
    assert sum(m.startswith("deleted sagemaker") or m.startswith("deleting sagemaker endpoint") for m in msgs) == 3


def test_a_quantization_the_engine_does_not_know_is_refused_before_anything_bills():
    sm, rt = clients()
    with Stubber(sm) as s:  # no call expected: any would fail the stub
        with pytest.raises(LaunchError, match=r"tgi does not know quantization 'gptqq'"):
            launcher(sm, rt, []).start(request(quantize="gptqq"))
        s.assert_no_pending_responses()


def test_ctrl_c_while_waiting_deletes_everything():
    sm, rt = clients()

    def interrupted(_s):
        raise KeyboardInterrupt

    with Stubber(sm) as s:
        expect_create(s)
        s.add_response("describe_endpoint", describe("Creating"))
        expect_delete(s)
        with pytest.raises(KeyboardInterrupt):
            launcher(sm, rt, [], sleep=interrupted).start(request())
        s.assert_no_pending_responses()


def test_timeout_deletes_config_and_model_at_once_and_the_endpoint_as_soon_as_allowed():
    sm, rt = clients()
    msgs: list[str] = []
    with Stubber(sm) as s:
        expect_create(s, startup=60)
        s.add_response("describe_endpoint", describe("Creating"))
        # SageMaker refuses to delete an endpoint that is still being created
        s.add_client_error("delete_endpoint", "ValidationException", "Cannot delete in-progress endpoint")
        s.add_response("describe_endpoint", describe("Creating"))
        expect_delete(s, ["endpoint_config", "model"])  # not held back by the endpoint
        s.add_response("describe_endpoint", describe("Creating"))
        s.add_response("describe_endpoint", describe("Failed"))
        expect_delete(s, ["endpoint"])
        with pytest.raises(LaunchError, match=r"phase creating \(instance, image, ~14 GB of weights, container start-up\) "
                                              r"timed out after 0s \(last: Creating\)"):
            launcher(sm, rt, msgs).start(_with_timeout(request(create_timeout_s="0"), 0))
        s.assert_no_pending_responses()
    assert msgs[-4:] == ["deleted sagemaker endpoint config bench-1", "deleted sagemaker model bench-1",
                         "sagemaker endpoint bench-1 is still Creating; checking every 0s",
                         "deleted sagemaker endpoint bench-1"]


def _with_timeout(req, t):
    req.ready_timeout_s = t
    return req


def test_delete_failure_is_reported_with_the_manual_command():
    sm, rt = clients()
    msgs: list[str] = []
    with Stubber(sm) as s:
        s.add_response("create_model", {"ModelArn": ARN.format("model")})
        s.add_client_error("create_endpoint_config", "ResourceLimitExceeded", "limit")
        s.add_client_error("delete_model", "AccessDeniedException", "not authorized")
        with pytest.raises(LaunchError):
            launcher(sm, rt, msgs).start(request())
    assert msgs[-1] == ("WARNING: could not delete sagemaker model bench-1: not authorized -- it may still bill: "
                        "run `servebench cleanup --region us-west-2` later, or by hand: "
                        "aws sagemaker delete-model --model-name bench-1 --region us-west-2")


def test_existing_endpoint_is_neither_deployed_nor_deleted():
    sm, rt = clients()
    msgs: list[str] = []
    with Stubber(sm) as s:
        s.add_response("describe_endpoint", describe("InService"), {"EndpointName": "bench-1"})
        la = launcher(sm, rt, msgs)
        server = la.start(LaunchRequest(engine="tgi", model="m", options={"endpoint": "sagemaker://bench-1"}))
        la.stop()
        s.assert_no_pending_responses()
    assert msgs == []  # nothing deleted or attempted
    assert server.base_url == "sagemaker://bench-1?region=us-west-2" and server.info["deployed"] is False


def test_bad_requests_make_no_calls():
    sm, rt = clients()
    with Stubber(sm):
        with pytest.raises(LaunchError, match=r"^sagemaker deploy needs --instance-type"):
            launcher(sm, rt, []).start(LaunchRequest(engine="tgi", model="m", options={"role_arn": ROLE}))
        with pytest.raises(LaunchError, match=r"^vllm has no sagemaker section"):
            launcher(sm, rt, []).start(LaunchRequest(engine="vllm", model="m"))


def test_quota_below_the_instance_count_stops_before_anything_is_created():
    sm, rt = clients()
    quotas = boto3.client("service-quotas", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    msgs: list[str] = []
    with Stubber(sm) as s, Stubber(quotas) as q:
        q.add_response("list_service_quotas", {"Quotas": [
            {"QuotaName": "ml.g5.2xlarge for endpoint usage", "Value": 2.0},
            {"QuotaName": "ml.g5.12xlarge for endpoint usage", "Value": 0.0}]}, {"ServiceCode": "sagemaker"})
        la = SageMakerLauncher(sagemaker_client=sm, runtime_client=rt, quotas_client=quotas, progress=msgs.append)
        with pytest.raises(LaunchError, match=r"^the account's quota 'ml.g5.12xlarge for endpoint usage' is 0 \(need 1\)"):
            la.start(request())
        s.assert_no_pending_responses()  # no create call was made
    assert la.created == []


def test_quota_api_refused_is_a_note_not_a_failure():
    sm, rt = clients()
    quotas = boto3.client("service-quotas", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    msgs: list[str] = []
    with Stubber(sm) as s, Stubber(quotas) as q:
        q.add_client_error("list_service_quotas", "AccessDeniedException", "no")
        s.add_client_error("create_model", "ValidationException", "Could not access model data")
        la = SageMakerLauncher(sagemaker_client=sm, runtime_client=rt, quotas_client=quotas, progress=msgs.append)
        with pytest.raises(LaunchError, match="Could not access model data"):
            la.start(request())
    assert msgs[0].startswith("preflight quota: not checked (AccessDeniedException)")
