"""SageMaker launcher: deploy the Hugging Face LLM inference container (TGI) with boto3.

An orphaned endpoint bills by the hour, so every resource is remembered as its create call
is made and deleted by stop() on every exit path (failure while waiting, Ctrl-C, atexit).
An existing endpoint given by name is only checked: never deployed or deleted.
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

from servebench.errors import folded
from servebench.launchers.base import LaunchError, LaunchRequest, Server
from servebench.launchers.readiness import redact_env
from servebench.engines.specs import EngineSpec, SpecError, load_spec

SCHEME = "sagemaker://"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _err(e: Exception) -> str:
    resp = getattr(e, "response", None) or {}
    return folded(resp.get("Error", {}).get("Message") or str(e))


class SageMakerLauncher:
    name = "sagemaker"

    def __init__(self, *, sagemaker_client: Any = None, runtime_client: Any = None,
                 progress: Callable[[str], None] = _stderr, poll_s: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep, delete_wait_s: float = 3600.0) -> None:
        self._sm, self._rt = sagemaker_client, runtime_client
        self.progress, self.poll_s, self.sleep = progress, poll_s, sleep
        self.delete_wait_s = delete_wait_s
        self.created: list[tuple[str, str]] = []  # (kind, name) in creation order
        self.region: str | None = None

    def _client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=self.region) if self.region else boto3.client(service)

    @property
    def sm(self) -> Any:
        if self._sm is None:
            self._sm = self._client("sagemaker")
        return self._sm

    @property
    def runtime(self) -> Any:
        if self._rt is None:
            self._rt = self._client("sagemaker-runtime")
        return self._rt

    def container_env(self, spec: EngineSpec, req: LaunchRequest) -> dict[str, str]:
        assert spec.sagemaker is not None
        values = {**req.options, "model": req.model}
        if req.gpus and "num_gpus" not in values:
            values["num_gpus"] = len(req.gpus)
        env = dict(spec.sagemaker.env)
        env.update({var: str(values[key]) for key, var in spec.sagemaker.option_env.items() if values.get(key) is not None})
        env.update({k: os.environ[k] for k in spec.passthrough_env if k in os.environ})
        env.update(req.env)
        return env

    def start(self, req: LaunchRequest) -> Server:
        o = req.options
        self.region = o.get("region")
        try:
            spec = load_spec(req.engine)
        except SpecError as e:
            raise LaunchError(str(e)) from None
        if spec.sagemaker is None:
            raise LaunchError(f"{spec.name} has no sagemaker section in {spec.source} (only the TGI container is deployable)")
        existing = o.get("endpoint_name") or (o.get("endpoint") or "").removeprefix(SCHEME) or None
        if existing:
            return self._existing(spec, existing, o)
        for need in ("instance_type", "role_arn"):
            if not o.get(need):
                raise LaunchError(f"sagemaker deploy needs --{need.replace('_', '-')} (servebench run: "
                                  f"--launcher-opt {need}=...) or an existing endpoint name")
        region = self.region or getattr(self.sm.meta, "region_name", None) or "us-east-1"
        image = o.get("image_uri") or spec.sagemaker.image_uri.format(region=region)
        name = o.get("name") or _resource_name(spec.name, req.model)
        env = self.container_env(spec, req)
        t0 = time.monotonic()
        atexit.register(self.stop)
        try:
            self._create("model", name, ModelName=name, ExecutionRoleArn=o["role_arn"],
                         PrimaryContainer={"Image": image, "Environment": env})
            self._create("endpoint_config", name, EndpointConfigName=name, ProductionVariants=[{
                "VariantName": "AllTraffic", "ModelName": name, "InstanceType": o["instance_type"],
                "InitialInstanceCount": int(o.get("instance_count", 1)),
                "ContainerStartupHealthCheckTimeoutInSeconds": int(o.get("startup_timeout_s", 900))}])
            self._create("endpoint", name, EndpointName=name, EndpointConfigName=name)
            self._wait_in_service(name, t0 + req.ready_timeout_s)
            self._probe(name)
        except BaseException as e:
            self.stop()
            if isinstance(e, LaunchError) or not isinstance(e, Exception):
                raise
            raise LaunchError(f"sagemaker deploy of {name} failed: {type(e).__name__}: {_err(e)}") from None
        return Server(base_url=SCHEME + name, engine=spec.name, adapter=o.get("adapter") or spec.adapter,
                      time_to_ready_s=time.monotonic() - t0, info={
                          "launcher": self.name, "endpoint": name, "model": name, "endpoint_config": name,
                          "image": image, "instance_type": o["instance_type"], "region": region,
                          "env": redact_env(env), "deployed": True, "served_model_name": req.model})

    def _create(self, kind: str, name: str, **kwargs: Any) -> None:
        """Remembered before the call: a Ctrl-C or lost connection mid-call may still have
        created it, and deleting one that does not exist is harmless. A refusal by the service
        created nothing, and the name may be someone else's, so it is forgotten."""
        from botocore.exceptions import ClientError

        self.created.append((kind, name))
        try:
            getattr(self.sm, f"create_{kind}")(**kwargs)
        except ClientError:
            self.created.pop()
            raise

    def _existing(self, spec: EngineSpec, name: str, o: dict[str, Any]) -> Server:
        try:
            status = self.sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
        except Exception as e:
            raise LaunchError(f"SageMaker endpoint {name!r}: {_err(e)}") from None
        if status != "InService":
            raise LaunchError(f"SageMaker endpoint {name!r} is {status}, not InService")
        return Server(base_url=SCHEME + name, engine=spec.name, adapter=o.get("adapter") or spec.adapter,
                      info={"launcher": self.name, "endpoint": name, "deployed": False, "region": self.region})

    def _wait_in_service(self, name: str, deadline: float) -> None:
        last = None
        while True:
            d = self.sm.describe_endpoint(EndpointName=name)
            status = d["EndpointStatus"]
            if status != last:
                self.progress(f"sagemaker endpoint {name}: {status}")
                last = status
            if status == "InService":
                return
            if status in ("Failed", "OutOfService", "Deleting", "RollingBack"):
                raise LaunchError(f"sagemaker endpoint {name} is {status}: {folded(d.get('FailureReason') or '')}")
            if time.monotonic() >= deadline:
                raise LaunchError(f"sagemaker endpoint {name} not InService before the ready timeout (last: {status})")
            self.sleep(self.poll_s)

    def _probe(self, name: str) -> None:
        """One real generation, so the container's first request is not part of the measurement."""
        body = json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
        r = self.runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json")
        r["Body"].read()

    def stop(self) -> None:
        atexit.unregister(self.stop)
        while self.created:  # newest first: the endpoint holds the config, the config the model
            kind, name = self.created.pop()
            method, key = _DELETE[kind]
            try:
                if kind == "endpoint":
                    self._delete_endpoint(name)
                else:
                    getattr(self.sm, method)(**{key: name})
                self.progress(f"deleted sagemaker {kind.replace('_', ' ')} {name}")
            except Exception as e:  # keep deleting the rest; say loudly what may still bill
                if "Could not find" not in _err(e):
                    self.progress(f"WARNING: could not delete sagemaker {kind} {name}: {_err(e)} -- delete it by hand: "
                                  f"aws sagemaker {method.replace('_', '-')} --{_kebab(key)} {name}")

    def _delete_endpoint(self, name: str) -> None:
        """SageMaker refuses to delete an endpoint while it is still Creating/Updating (it can
        sit there up to an hour): wait for that to end, then delete, rather than orphan it."""
        try:
            self.sm.delete_endpoint(EndpointName=name)
            return
        except Exception as e:
            if "Could not find" in _err(e):
                raise
            first = e
        deadline = time.monotonic() + self.delete_wait_s
        while True:
            status = self.sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
            if status == "Deleting":
                return
            if status not in _BUSY:
                self.sm.delete_endpoint(EndpointName=name)
                return
            if time.monotonic() >= deadline:
                raise first
            self.progress(f"sagemaker endpoint {name} is {status}; it can be deleted only after that ends, waiting")
            self.sleep(self.poll_s)


_DELETE = {"endpoint": ("delete_endpoint", "EndpointName"),
           "endpoint_config": ("delete_endpoint_config", "EndpointConfigName"),
           "model": ("delete_model", "ModelName")}
_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed")


def _kebab(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"-\1", key).lower()


def _resource_name(engine: str, model: str) -> str:
    """SageMaker names: [a-zA-Z0-9-], at most 63 characters, unique per deploy."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", model.rsplit("/", 1)[-1]).strip("-")[:30]
    return f"servebench-{engine}-{slug}-{uuid.uuid4().hex[:8]}"[:63]
