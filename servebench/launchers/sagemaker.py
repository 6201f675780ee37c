"""SageMaker launcher: deploy the Hugging Face LLM inference container (TGI) with boto3.

An orphaned endpoint bills by the hour, so every resource is tagged with the run, written to
a ledger and remembered before its create call, and deleted by stop() on every exit path
(failure while waiting, Ctrl-C, atexit; sagemaker_teardown says how, through further Ctrl-Cs).
An existing endpoint given by name is only checked: never deployed or deleted.
The region is explicit everywhere: the launch option, else AWS_REGION / the profile's; never a
silent default, and it travels in the endpoint URL to the load clients.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import time
import uuid
from typing import Any, Callable

from servebench.engines.specs import EngineSpec, SpecError, load_spec
from servebench.launchers.base import LaunchError, LaunchRequest, Server
from servebench.launchers.owner import Ledger, aws_tags
from servebench.launchers.preflight import check_quota
from servebench.errors import folded
from servebench.launchers.readiness import redact_env
from servebench.launchers.sagemaker_teardown import Teardown, err_text
from servebench.launchers.timeouts import PROBE_S, option_s, ready_timeout, weights_gb
from servebench.signals import shielded
from servebench.transport.sagemaker import SCHEME, endpoint_url, parse_endpoint

PROVISION_S = 900.0  # instance provisioning and image pull, before the container starts
_FAILED = ("Failed", "OutOfService", "Deleting", "RollingBack")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class SageMakerLauncher:
    name = "sagemaker"

    def __init__(self, *, sagemaker_client: Any = None, runtime_client: Any = None,
                 progress: Callable[[str], None] = _stderr, poll_s: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep, delete_wait_s: float = 3600.0,
                 ledger: Ledger | None = None, quotas_client: Any = None) -> None:
        self._sm, self._rt = sagemaker_client, runtime_client
        # Service Quotas: made here only for the real account (injected SageMaker fakes bring their own)
        self._quotas, self._own_quotas = quotas_client, sagemaker_client is None
        self.progress, self.poll_s, self.sleep = progress, poll_s, sleep
        self.delete_wait_s = delete_wait_s
        self.created: list[tuple[str, str]] = []  # (kind, name) in creation order
        self.region: str | None = None
        self.ledger = ledger or Ledger()
        self.probe_timeout_s = PROBE_S

    def _pick_region(self, given: str | None) -> str | None:
        """The region asked for, else an injected client's, else AWS_REGION / the profile's."""
        if given:
            return given
        injected = getattr(getattr(self._sm, "meta", None), "region_name", None)
        if injected:
            return injected
        import boto3

        return boto3.session.Session().region_name

    def _client(self, service: str, **kw: Any) -> Any:
        import boto3

        return boto3.client(service, region_name=self.region, **kw)

    @property
    def sm(self) -> Any:
        if self._sm is None:
            self._sm = self._client("sagemaker")
        return self._sm

    @property
    def runtime(self) -> Any:
        if self._rt is None:
            from botocore.config import Config

            # the probe is the first generation: slow (compilation), and never retried unseen
            self._rt = self._client("sagemaker-runtime", config=Config(
                read_timeout=self.probe_timeout_s, retries={"total_max_attempts": 1, "mode": "standard"}))
        return self._rt

    def container_env(self, spec: EngineSpec, req: LaunchRequest) -> dict[str, str]:
        assert spec.sagemaker is not None
        values = {**req.options, "model": req.model}
        known = spec.flags.quantize_values  # as docker and process check it: before anything bills
        if values.get("quantize") is not None and known and values["quantize"] not in known:
            raise LaunchError(f"{spec.name} does not know quantization {values['quantize']!r} (known: {', '.join(known)})")
        if req.gpus and "num_gpus" not in values:
            values["num_gpus"] = len(req.gpus)
        env = dict(spec.sagemaker.env)
        env.update({var: str(values[key]) for key, var in spec.sagemaker.option_env.items() if values.get(key) is not None})
        env.update({k: os.environ[k] for k in spec.passthrough_env if k in os.environ})
        env.update(req.env)
        return env

    def plan(self, spec: EngineSpec, req: LaunchRequest) -> dict[str, Any]:
        """The three create calls' arguments (and the waits), without calling anything."""
        o = req.options
        if spec.sagemaker is None:
            raise LaunchError(f"{spec.name} has no sagemaker section in {spec.source} (only the TGI container is deployable)")
        for need in ("instance_type", "role_arn"):
            if not o.get(need):
                raise LaunchError(f"sagemaker deploy needs --{need.replace('_', '-')} (run: --launcher-opt {need}=...; "
                                  f"sweep: launcher_options.{need}) or an existing endpoint name")
        region = self.region
        if not region:
            raise LaunchError("sagemaker deploy needs a region: --region (run/sweep: launcher option region=...) "
                              "or AWS_REGION")
        name = o.get("name") or _resource_name(spec.name, req.model)
        startup = ready_timeout(req)
        env = self.container_env(spec, req)
        tags = aws_tags()
        return {
            "name": name, "region": region, "startup_s": startup, "weights_gb": weights_gb(req.model),
            "create_wait_s": option_s(req, "create_timeout_s", startup + PROVISION_S),
            "probe_timeout_s": option_s(req, "probe_timeout_s", PROBE_S),
            "model": {"ModelName": name, "ExecutionRoleArn": o["role_arn"], "Tags": tags, "PrimaryContainer": {
                "Image": (o.get("image_uri") or spec.sagemaker.image_uri).format(region=region), "Environment": env}},
            "endpoint_config": {"EndpointConfigName": name, "Tags": tags, "ProductionVariants": [{
                "VariantName": "AllTraffic", "ModelName": name, "InstanceType": o["instance_type"],
                "InitialInstanceCount": int(o.get("instance_count", 1)),
                # SageMaker's own limit on the container's start-up (weights download + load): 60-3600 s
                "ContainerStartupHealthCheckTimeoutInSeconds": int(min(max(startup, 60), 3600))}]},
            "endpoint": {"EndpointName": name, "EndpointConfigName": name, "Tags": tags},
        }

    def dry_run(self, req: LaunchRequest) -> str:
        """The configuration start() would create, as JSON (secret values redacted)."""
        spec = self._spec(req)
        self.region = self._pick_region(req.options.get("region"))
        p = self.plan(spec, req)
        p["model"]["PrimaryContainer"]["Environment"] = redact_env(p["model"]["PrimaryContainer"]["Environment"])
        return json.dumps(p, indent=2)

    def _spec(self, req: LaunchRequest) -> EngineSpec:
        try:
            return load_spec(req.engine)
        except SpecError as e:
            raise LaunchError(str(e)) from None

    def start(self, req: LaunchRequest) -> Server:
        o = req.options
        spec = self._spec(req)
        existing = o.get("endpoint_name") or o.get("endpoint")
        if existing:
            url = existing if existing.startswith(SCHEME) else SCHEME + existing
            try:
                name, url_region = parse_endpoint(url)
            except ValueError as e:
                raise LaunchError(str(e)) from None
            self.region = self._pick_region(o.get("region") or url_region)
            return self._existing(spec, name, o)
        self.region = self._pick_region(o.get("region"))
        p = self.plan(spec, req)
        name, self.probe_timeout_s = p["name"], p["probe_timeout_s"]
        self._preflight(p)
        t0 = time.monotonic()
        atexit.register(self.stop)
        try:
            for kind in ("model", "endpoint_config", "endpoint"):
                self._create(kind, name, ours=not o.get("name"), **p[kind])
            self._wait_in_service(name, t0 + p["create_wait_s"], p)
            self._probe(name)
        except BaseException as e:
            self.stop()
            if isinstance(e, LaunchError) or not isinstance(e, Exception):
                raise
            raise LaunchError(f"sagemaker deploy of {name} failed: {type(e).__name__}: {err_text(e)}") from None
        variant = p["endpoint_config"]["ProductionVariants"][0]
        env = p["model"]["PrimaryContainer"]["Environment"]
        return Server(base_url=endpoint_url(name, self.region), engine=spec.name, adapter=o.get("adapter") or spec.adapter,
                      time_to_ready_s=time.monotonic() - t0, info={
                          "launcher": self.name, "endpoint": name, "model": name, "endpoint_config": name,
                          "image": p["model"]["PrimaryContainer"]["Image"], "instance_type": variant["InstanceType"],
                          "region": self.region, "env": redact_env(env), "deployed": True,
                          "served_model_name": req.model})

    def _preflight(self, p: dict[str, Any]) -> None:
        """Before anything bills: the instance type's endpoint quota, where the API tells."""
        variant = p["endpoint_config"]["ProductionVariants"][0]
        if self._quotas is None and self._own_quotas:
            self._quotas = self._client("service-quotas")
        note = ("quota: not checked (no Service Quotas client)" if self._quotas is None else
                check_quota(self._quotas, variant["InstanceType"], variant["InitialInstanceCount"]))
        self.progress(f"preflight {note}; region {p['region']}; start-up wait {p['startup_s']:.0f}s")

    def _create(self, kind: str, name: str, ours: bool, **kwargs: Any) -> None:
        """Remembered before the call: a Ctrl-C or lost connection mid-call may still have
        created it, and deleting one that does not exist is harmless. A refusal by the service
        created nothing, and the name may be someone else's, so it is forgotten; but a name
        servebench made for this deploy (`ours`) that "already exists" is this call's own,
        created by a try whose answer was lost and then retried by botocore: it stays."""
        from botocore.exceptions import ClientError

        self.created.append((kind, name))
        self.ledger.add(kind, name, self.region)
        try:
            getattr(self.sm, f"create_{kind}")(**kwargs)
        except ClientError as e:
            if not (ours and "already exist" in err_text(e).lower()):
                self.created.pop()
                self.ledger.remove(kind, name)
            raise

    def _existing(self, spec: EngineSpec, name: str, o: dict[str, Any]) -> Server:
        try:
            status = self.sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
        except Exception as e:
            raise LaunchError(f"SageMaker endpoint {name!r}: {err_text(e)}") from None
        if status != "InService":
            raise LaunchError(f"SageMaker endpoint {name!r} is {status}, not InService")
        return Server(base_url=endpoint_url(name, self.region), engine=spec.name,
                      adapter=o.get("adapter") or spec.adapter,
                      info={"launcher": self.name, "endpoint": name, "deployed": False, "region": self.region})

    def _wait_in_service(self, name: str, deadline: float, p: dict[str, Any]) -> None:
        last = None
        while True:
            d = self.sm.describe_endpoint(EndpointName=name)
            status = d["EndpointStatus"]
            if status != last:
                self.progress(f"sagemaker endpoint {name}: {status}")
                last = status
            if status == "InService":
                return
            if status in _FAILED:
                raise LaunchError(f"sagemaker endpoint {name} is {status}: {folded(d.get('FailureReason') or '')}")
            if time.monotonic() >= deadline:
                gb = f"~{p['weights_gb']:.0f} GB of weights, " if p["weights_gb"] else ""
                raise LaunchError(
                    f"sagemaker endpoint {name}: phase creating (instance, image, {gb}container start-up) timed out "
                    f"after {p['create_wait_s']:.0f}s (last: {status}); raise --ready-timeout or launcher option "
                    f"ready_timeout_s (or create_timeout_s)")
            self.sleep(self.poll_s)

    def _probe(self, name: str) -> None:
        """One real generation, so the container's first request is not part of the measurement."""
        from botocore.exceptions import ReadTimeoutError

        body = json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
        try:
            r = self.runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json")
            r["Body"].read()
        except ReadTimeoutError:
            raise LaunchError(f"sagemaker endpoint {name}: phase InService (first generation) timed out after "
                              f"{self.probe_timeout_s:.0f}s; raise launcher option probe_timeout_s") from None

    def stop(self) -> None:
        """Idempotent. Further Ctrl-Cs are held (and said) until every resource is deleted;
        atexit stays registered until then, so an interrupted stop() is finished at exit."""
        if self.created:
            td = Teardown(self.sm, self.created, self.ledger, self.region, progress=self.progress,
                          sleep=self.sleep, poll_s=self.poll_s, wait_s=self.delete_wait_s)
            with shielded(self._held):
                td.run()
        if not self.created:
            atexit.unregister(self.stop)

    def _held(self, _signum: int) -> None:
        self.progress("interrupt held: deleting the SageMaker endpoint, config and model first (an endpoint bills "
                      "until deleted); if servebench is killed, `servebench cleanup` deletes what is left")


def _resource_name(engine: str, model: str) -> str:
    """SageMaker names: [a-zA-Z0-9-], at most 63 characters, unique per deploy; lower case, as
    in the ARNs the tagging API returns (so `servebench cleanup` deletes by the same name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.rsplit("/", 1)[-1].lower()).strip("-")[:30]
    return f"servebench-{engine}-{slug}-{uuid.uuid4().hex[:8]}"[:63]
