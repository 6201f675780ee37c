"""`servebench cleanup`: delete what a killed servebench run left behind.

SageMaker: every endpoint, endpoint config and model servebench tagged (`servebench:run`,
found with the Resource Groups Tagging API) or wrote to its ledger, in each region asked for
and each region a ledger names. Docker: every container labelled `servebench`. A resource whose
owner process still runs on this host is kept (that run is still using it); one owned by
another host is kept unless --all, since this host cannot tell whether that run is alive.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

from servebench.launchers.owner import from_labels, from_tags, ledgers, owner_alive, state_dir
from servebench.errors import folded
from servebench.launchers.sagemaker_teardown import Teardown, err_text

TYPES = {"endpoint": "sagemaker:endpoint", "endpoint-config": "sagemaker:endpoint-config", "model": "sagemaker:model"}
ORDER = ("model", "endpoint_config", "endpoint")  # creation order: Teardown deletes it backwards


@dataclass(slots=True)
class Found:
    kind: str  # endpoint | endpoint_config | model (| container)
    name: str
    owner: dict[str, str]
    where: str  # region, or "docker"


def _verdict(f: Found, everything: bool) -> str | None:
    """None: delete it; else why it is kept."""
    alive = owner_alive(f.owner)
    if alive:
        return f"its run {f.owner.get('run', '?')} (pid {f.owner.get('pid')}) is still running"
    if alive is None and not everything:
        return f"owned by run {f.owner.get('run', '?')} on host {f.owner.get('host', '?')}; --all deletes it"
    return None


def find_sagemaker(region: str, tagging: Any) -> list[Found]:
    """Tagged resources in one region, from the tagging API (one call per page, no per-resource calls)."""
    out = []
    pages = tagging.get_paginator("get_resources").paginate(
        TagFilters=[{"Key": "servebench:run"}], ResourceTypeFilters=list(TYPES.values()))
    for page in pages:
        for m in page.get("ResourceTagMappingList", []):
            kind, _, name = m["ResourceARN"].split(":", 5)[-1].partition("/")
            if kind in TYPES:
                out.append(Found(kind.replace("-", "_"), name, from_tags(m.get("Tags", [])), region))
    return out


def from_ledgers(region: str) -> list[Found]:
    out = []
    for _path, data in ledgers():
        for r in data.get("resources", []):
            if r.get("region") == region:
                out.append(Found(r["kind"], r["name"], data.get("owner", {}), region))
    return out


class _AnyLedger:
    """Teardown's ledger for cleanup: an entry is dropped from whichever run's file holds it."""

    def remove(self, kind: str, name: str) -> None:
        from servebench.launchers.owner import Ledger

        for path, data in ledgers():
            if any((r["kind"], r["name"]) == (kind, name) for r in data.get("resources", [])):
                Ledger(path).remove(kind, name)


def clean_sagemaker(region: str, sm: Any, tagging: Any, *, everything: bool, dry_run: bool,
                    say: Callable[[str], None], poll_s: float = 15.0, sleep: Callable[[float], None] | None = None) -> int:
    """Delete this region's leftovers; returns how many were (or, dry, would be) deleted."""
    import time

    found: dict[tuple[str, str], Found] = {}
    for f in from_ledgers(region) + find_sagemaker(region, tagging):
        found.setdefault((f.kind, f.name), f)
    doomed = []
    for f in found.values():
        why = _verdict(f, everything)
        if why:
            say(f"kept sagemaker {f.kind.replace('_', ' ')} {f.name} ({region}): {why}")
        else:
            doomed.append((f.kind, f.name))
    doomed.sort(key=lambda kn: ORDER.index(kn[0]))
    if dry_run:
        for kind, name in doomed:
            say(f"would delete sagemaker {kind.replace('_', ' ')} {name} ({region})")
        return len(doomed)
    created = list(doomed)
    Teardown(sm, created, _AnyLedger(), region, progress=say, sleep=sleep or time.sleep, poll_s=poll_s,
             wait_s=3600.0).run()
    return len(doomed) - len(created)


def clean_docker(client: Any, *, everything: bool, dry_run: bool, say: Callable[[str], None]) -> int:
    n = 0
    for c in client.containers.list(all=True, filters={"label": "servebench"}):
        f = Found("container", c.name, from_labels(getattr(c, "labels", None) or {}), "docker")
        why = _verdict(f, everything)
        if why:
            say(f"kept container {c.name}: {why}")
            continue
        n += 1
        if dry_run:
            say(f"would remove container {c.name}")
            continue
        try:
            c.remove(force=True)
            say(f"removed container {c.name}")
        except Exception as e:
            if type(e).__name__ != "NotFound":
                n -= 1
                say(f"WARNING: could not remove container {c.name}: {folded(str(e))}")
    return n


@dataclass(slots=True)
class CleanupOptions:
    region: tuple[str, ...] = ()
    sagemaker: bool = True
    docker: bool = True
    all: bool = False
    dry_run: bool = False


def _regions(opts: CleanupOptions) -> list[str]:
    if opts.region:
        return list(dict.fromkeys(opts.region))
    found = [r["region"] for _p, d in ledgers() for r in d.get("resources", []) if r.get("region")]
    import boto3

    default = boto3.session.Session().region_name
    return list(dict.fromkeys(found + ([default] if default else [])))


def run_cleanup(opts: CleanupOptions, say: Callable[[str], None]) -> list[str]:
    """Both kinds; returns the errors (one line each) of the parts that could not be checked."""
    import boto3

    errors = []
    if opts.sagemaker:
        regions = _regions(opts)
        if not regions:
            say("sagemaker: no region given (--region) or configured, and no ledger in "
                f"{state_dir() / 'sagemaker'}: skipped")
        for region in regions:
            try:
                n = clean_sagemaker(region, boto3.client("sagemaker", region_name=region),
                                    boto3.client("resourcegroupstaggingapi", region_name=region),
                                    everything=opts.all, dry_run=opts.dry_run, say=say)
                say(f"sagemaker {region}: {n} {'to delete' if opts.dry_run else 'deleted'}")
            except Exception as e:  # credentials, permissions, network: say which region
                errors.append(f"sagemaker in {region}: {type(e).__name__}: {err_text(e)}")
    if opts.docker:
        try:
            import docker

            client = docker.from_env()
            n = clean_docker(client, everything=opts.all, dry_run=opts.dry_run, say=say)
            say(f"docker: {n} {'to remove' if opts.dry_run else 'removed'}")
        except Exception as e:
            say(f"docker: not reachable ({folded(str(e)) or type(e).__name__}): skipped")
    return errors


@click.command()
@click.option("--region", multiple=True, help="AWS region to search (repeatable; default: the ledgers' and AWS_REGION's).")
@click.option("--sagemaker/--no-sagemaker", default=True, show_default=True)
@click.option("--docker/--no-docker", default=True, show_default=True)
@click.option("--all", "all", is_flag=True, help="Also delete what runs on other hosts left (their liveness is unknown here).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def cleanup(**opts) -> None:
    """Delete SageMaker endpoints/configs/models and containers that killed servebench runs left."""
    errors = run_cleanup(CleanupOptions(**opts), lambda m: click.echo(m, err=True))
    for e in errors:
        click.echo(f"error: {e}", err=True)
    if errors:
        sys.exit(1)
