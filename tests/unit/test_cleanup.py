"""`servebench cleanup`: what a killed run left (ledger, tags, labels) is deleted; what a live
run or another host owns is kept. botocore Stubber for SageMaker and the tagging API; the
fake docker client of the docker launcher's tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from servebench.launchers import cleanup as cl
from servebench.launchers.owner import Ledger, ledgers
from tests.unit.test_launch_docker import FakeContainer, FakeDocker
from tests.unit.test_sagemaker_launcher import describe

ARN = "arn:aws:sagemaker:us-west-2:123456789012:{}/{}"


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEBENCH_STATE_DIR", str(tmp_path))
    return tmp_path


def dead_owner(host=None):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return {"run": "r-dead", "host": host or socket.gethostname(), "pid": str(p.pid), "started": "1"}


def live_owner():
    import psutil

    return {"run": "r-live", "host": socket.gethostname(), "pid": str(os.getpid()),
            "started": str(int(psutil.Process().create_time()))}


def tags(o):
    return [{"Key": f"servebench:{k}", "Value": v} for k, v in o.items()]


def clients():
    kw = dict(region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    return boto3.client("sagemaker", **kw), boto3.client("resourcegroupstaggingapi", **kw)


def tagged(*items):
    return {"ResourceTagMappingList": [{"ResourceARN": ARN.format(kind, name), "Tags": tags(o)} for kind, name, o in items]}


def test_killed_runs_resources_deleted_live_and_foreign_kept(state):
    dead, live, foreign = dead_owner(), live_owner(), dead_owner(host="other-host")
    sm, tg = clients()
    msgs: list[str] = []
    with Stubber(sm) as s, Stubber(tg) as t:
        t.add_response("get_resources", tagged(
            ("endpoint", "sb-dead", dead), ("endpoint-config", "sb-dead", dead), ("model", "sb-dead", dead),
            ("endpoint", "sb-live", live), ("endpoint", "sb-remote", foreign)))
        s.add_response("delete_endpoint", {}, {"EndpointName": "sb-dead"})
        s.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "sb-dead"})
        s.add_response("delete_model", {}, {"ModelName": "sb-dead"})
        n = cl.clean_sagemaker("us-west-2", sm, tg, everything=False, dry_run=False, say=msgs.append, poll_s=0)
        s.assert_no_pending_responses()
        t.assert_no_pending_responses()
    assert n == 3
    assert "deleted sagemaker endpoint sb-dead" in msgs and "deleted sagemaker model sb-dead" in msgs
    assert any(m.startswith("kept sagemaker endpoint sb-live (us-west-2): its run r-live") for m in msgs)
    assert any(m.startswith("kept sagemaker endpoint sb-remote (us-west-2): owned by run r-dead on host other-host; "
                            "--all deletes it") for m in msgs)


def test_ledger_of_a_sigkilled_run_finds_what_tags_missed_and_is_emptied(state):
    """Killed between create_endpoint and the tags becoming searchable: the ledger knows."""
    ledger = Ledger(state / "sagemaker" / "r-dead.json")
    for kind in ("model", "endpoint_config", "endpoint"):
        ledger.add(kind, "sb-dead", "us-west-2")
    data = ledgers()[0][1]
    data["owner"] = dead_owner()
    ledger._write(data)
    sm, tg = clients()
    msgs: list[str] = []
    with Stubber(sm) as s, Stubber(tg) as t:
        t.add_response("get_resources", {"ResourceTagMappingList": []})
        s.add_client_error("delete_endpoint", "ValidationException", "Cannot delete in-progress endpoint")
        s.add_response("describe_endpoint", describe("Creating"))
        s.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "sb-dead"})
        s.add_client_error("delete_model", "ValidationException", 'Could not find model "sb-dead".')
        s.add_response("describe_endpoint", describe("Creating"))
        s.add_response("describe_endpoint", describe("InService"))
        s.add_response("delete_endpoint", {}, {"EndpointName": "sb-dead"})
        n = cl.clean_sagemaker("us-west-2", sm, tg, everything=False, dry_run=False, say=msgs.append, poll_s=0,
                               sleep=lambda s: None)
        s.assert_no_pending_responses()
    assert n == 3 and ledgers() == []


def test_dry_run_deletes_nothing(state):
    sm, tg = clients()
    msgs: list[str] = []
    with Stubber(sm) as s, Stubber(tg) as t:
        t.add_response("get_resources", tagged(("endpoint", "sb-dead", dead_owner())))
        n = cl.clean_sagemaker("us-west-2", sm, tg, everything=False, dry_run=True, say=msgs.append)
        s.assert_no_pending_responses()
    assert n == 1 and msgs == ["would delete sagemaker endpoint sb-dead (us-west-2)"]


def test_docker_leftovers_removed_live_kept():
    client = FakeDocker()
    port = {"8000/tcp": ("127.0.0.1", 1)}
    dead = FakeContainer({"name": "sb-dead", "ports": port, "labels": {
        "servebench": "1", **{f"servebench.{k}": v for k, v in dead_owner().items()}}}, "exited")
    live = FakeContainer({"name": "sb-live", "ports": port, "labels": {
        "servebench": "1", **{f"servebench.{k}": v for k, v in live_owner().items()}}}, "exited")
    old = FakeContainer({"name": "sb-unlabelled", "ports": port, "labels": {"servebench": "1"}}, "exited")
    client.others = [dead, live, old]
    msgs: list[str] = []
    assert cl.clean_docker(client, everything=False, dry_run=False, say=msgs.append) == 1
    assert dead.remove_calls == [{"force": True}] and not live.remove_calls and not old.remove_calls
    assert cl.clean_docker(client, everything=True, dry_run=False, say=msgs.append) == 1  # live still kept
    assert old.remove_calls == [{"force": True}] and not live.remove_calls


def test_cli_is_registered_and_reports_errors_in_one_line(monkeypatch):
    from servebench.cli import main

    sm, tg = clients()
    Stubber(tg).activate()  # nothing queued: the call fails as an API error would
    made = []

    def no_creds(service, region_name=None, **_kw):
        made.append((service, region_name))
        return tg if service == "resourcegroupstaggingapi" else sm

    monkeypatch.setattr(boto3, "client", no_creds)
    r = CliRunner().invoke(main, ["cleanup", "--region", "eu-west-1", "--no-docker"])
    assert r.exit_code == 1
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: sagemaker in eu-west-1: UnStubbedResponseError")
    assert made == [("sagemaker", "eu-west-1"), ("resourcegroupstaggingapi", "eu-west-1")]  # the region asked for
