"""External launcher: a server that is already up (URL or SageMaker endpoint). Starts and
stops nothing; checks once that it answers so a typo fails before any load is generated."""

from __future__ import annotations

from typing import Any

import httpx

from servebench.errors import folded
from servebench.launchers.base import LaunchError, LaunchRequest, Server
from servebench.launchers.readiness import served_name
from servebench.engines.specs import SpecError, load_spec
from servebench.transport.sagemaker import endpoint_url, parse_endpoint

SAGEMAKER_SCHEME = "sagemaker://"


class ExternalLauncher:
    name = "external"

    def __init__(self, *, sagemaker_client: Any = None, timeout_s: float = 5.0) -> None:
        self._sm = sagemaker_client
        self.timeout_s = timeout_s

    def start(self, req: LaunchRequest) -> Server:
        target = (req.options.get("base_url") or req.options.get("endpoint") or "").rstrip("/")
        if not target:
            raise LaunchError("external launcher needs an endpoint: a URL or sagemaker://<endpoint-name>")
        try:
            spec = load_spec(req.engine)
        except SpecError as e:
            raise LaunchError(str(e)) from None
        adapter = req.options.get("adapter") or spec.adapter
        info = {"launcher": self.name, "served_model_name": served_name(req)}
        if target.startswith(SAGEMAKER_SCHEME):
            try:
                name, url_region = parse_endpoint(target)
            except ValueError as e:
                raise LaunchError(str(e)) from None
            region = req.options.get("region") or url_region
            info["endpoint_status"] = self._check_sagemaker(name, region)
            # the region rides in the URL, so the load clients call where the check did
            return Server(base_url=endpoint_url(name, region), engine=spec.name, adapter=adapter, info=info)
        if not target.startswith(("http://", "https://")):
            raise LaunchError(f"endpoint {target!r} is neither an http(s) URL nor sagemaker://<name>")
        info["health"] = self._check_http(target, spec.health_path, adapter)
        return Server(base_url=target, engine=spec.name, adapter=adapter, info=info)

    def _check_http(self, base_url: str, health_path: str, adapter: str) -> str:
        paths = [health_path]
        if adapter.startswith("openai"):
            # OpenAI-compatible servers without a /health route answer /v1/models; some answer
            # /health but fail /v1/models (transformers serve without a local hub cache)
            paths += [p for p in ("/v1/models", "/health") if p != health_path]
        last, answered = "", False
        # no keep-alive: a server that answered 500 may close the connection under the next request
        with httpx.Client(timeout=self.timeout_s, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for path in paths:
                try:
                    r = client.get(base_url + path)
                except httpx.ConnectError as e:  # nothing listens: no other path will answer
                    raise LaunchError(f"endpoint {base_url} is unreachable: {folded(e) or type(e).__name__}") from None
                except httpx.HTTPError as e:
                    last = f"GET {path} -> {folded(e) or type(e).__name__}"
                    continue
                answered = True
                if r.status_code == 200:
                    return path
                last = f"GET {path} -> HTTP {r.status_code}"
        what = "is not healthy" if answered else "is unreachable"
        raise LaunchError(f"endpoint {base_url} {what}: {last}")

    def _check_sagemaker(self, name: str, region: str | None) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            sm = self._sm or _boto_client("sagemaker", region)
            status = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
        except ClientError as e:
            raise LaunchError(f"SageMaker endpoint {name!r}: {folded(e.response['Error'].get('Message', str(e)))}") from None
        except BotoCoreError as e:
            raise LaunchError(f"SageMaker endpoint {name!r}: {folded(e)}") from None
        if status != "InService":
            raise LaunchError(f"SageMaker endpoint {name!r} is {status}, not InService")
        return status

    def dry_run(self, req: LaunchRequest) -> str:
        target = req.options.get("base_url") or req.options.get("endpoint") or "(no endpoint given)"
        return f"external: nothing is started; {target} would be checked once"

    def stop(self) -> None:
        """Nothing was started."""


def _boto_client(service: str, region: str | None) -> Any:
    import boto3

    return boto3.client(service, region_name=region) if region else boto3.client(service)
