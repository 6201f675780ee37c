"""Sweep config -> plan: server groups, cells, seeds, filters, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from servebench.sweep.config import SweepConfig, SweepConfigError, load_config
from servebench.sweep.plan import expand, only, run_config


def cfg(**kw) -> SweepConfig:
    base = {"name": "t", "matrix": {"engine": ["vllm", "tgi"], "model": ["tiny", "small"]},
            "load": {"concurrency": [1, 4], "requests": 10}}
    base.update(kw)
    return SweepConfig.model_validate(base)


def test_matrix_is_crossed_in_order_with_one_group_per_server():
    plan = expand(cfg())
    assert [(g.server.engine, g.server.model) for g in plan.groups] == [
        ("vllm", "tiny"), ("vllm", "small"), ("tgi", "tiny"), ("tgi", "small")]
    assert [g.id for g in plan.groups] == ["g00", "g01", "g02", "g03"]
    assert [c.id for c in plan.groups[0].cells] == ["g00-c0001-r0", "g00-c0004-r0"]
    assert len(plan.cells) == 8


def test_exclude_explicit_servers_engine_overrides_and_duplicates():
    plan = expand(cfg(
        exclude=[{"engine": "tgi", "model": "small"}],
        servers=[{"engine": "vllm", "model": "tiny"}, {"engine": "vllm", "model": "tiny", "quantization": "gptq"}],
        engines={"vllm": {"server_args": ["--max-num-seqs", "8"]}},
        defaults={"hardware": "a10g", "gpu_count": 4},
    ))
    labels = [g.server.label for g in plan.groups]
    assert "tgi/small/a10gx4" not in labels and "tgi/tiny/a10gx4" in labels
    # the explicit vllm/tiny equals a crossed one (same fields after merging): kept once
    assert sum(1 for g in plan.groups if g.server.engine == "vllm" and g.server.model == "tiny"
               and g.server.quantization is None) == 1
    vllm = [g for g in plan.groups if g.server.engine == "vllm"]
    assert all(g.server.server_args == ["--max-num-seqs", "8"] for g in vllm)
    assert all(g.server.server_args == [] for g in plan.groups if g.server.engine == "tgi")
    assert any(g.server.quantization == "gptq" for g in plan.groups)


def test_seeds_are_shared_across_servers_and_differ_across_levels_and_repeats():
    plan = expand(cfg(load={"concurrency": [1, 4], "rate": [2.0], "burst": True, "repeats": 2}))
    by_server = [[c.load.seed for c in g.cells] for g in plan.groups]
    assert all(s == by_server[0] for s in by_server)  # byte-identical prompts for every engine
    seeds = by_server[0]
    assert len(set(seeds)) == len(seeds) == 8  # 4 load points x 2 repeats, no two alike
    assert [c.load.mode for c in plan.groups[0].cells] == ["concurrency"] * 4 + ["rate"] * 2 + ["burst"] * 2


def test_no_load_points_means_a_burst():
    plan = expand(cfg(load={"requests": 1000, "input_tokens": 512}))
    assert [c.load.mode for c in plan.groups[0].cells] == ["burst"]


def test_only_filters_without_renumbering_and_rejects_unknown_keys():
    full = expand(cfg())
    sub = only(full, "engine=tgi,concurrency=4")
    assert [c.id for c in sub.cells] == ["g02-c0004-r0", "g03-c0004-r0"]
    assert only(full, "group=g01").groups[0].id == "g01"
    with pytest.raises(SweepConfigError, match="unknown key"):
        only(full, "colour=red")
    with pytest.raises(SweepConfigError, match="key=value"):
        only(full, "tgi")


def test_run_config_of_a_cell(tmp_path):
    c = cfg(servers=[{"engine": "vllm", "model": "tiny", "quantization": "awq", "gpus": [0, 1],
                      "launcher_options": {"dtype": "float32"}}], matrix={})
    plan = expand(c)
    cell = plan.groups[0].cells[1]
    rc = run_config(c, plan.groups[0].server, cell.load, tmp_path, cell.id)
    assert rc.backend == "vllm" and rc.gpus == [0, 1] and rc.load.concurrency == 4
    assert rc.launcher_options == {"dtype": "float32", "quantize": "awq"}
    assert rc.load.seed == cell.load.seed and rc.workload.input_tokens == 512
    assert rc.results_dir == tmp_path and rc.name == cell.id


def test_config_errors_name_field_and_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nmatrix:\n  engine: [vllm]\nload:\n  concurrency: [1, 0]\n")
    with pytest.raises(SweepConfigError, match=r"s.yaml: load.concurrency \(line 5\): .*>= 1"):
        load_config(p)
    p.write_text("name: x\nmatrix:\n  engine: [vllm]\n  colour: [red]\n")
    with pytest.raises(SweepConfigError, match=r"matrix \(line 3\).*unknown server field.*colour"):
        load_config(p)
    p.write_text("name: x\nload: {requests: 5}\n")
    with pytest.raises(SweepConfigError, match="no servers"):
        load_config(p)
    p.write_text("name: [unclosed\n")
    with pytest.raises(SweepConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("name: x\nmatrix: {engine: [vllm]}\nload: {rate: [.inf]}\n")
    with pytest.raises(SweepConfigError, match="finite"):
        load_config(p)


def test_name_defaults_to_the_file_stem(tmp_path):
    p = tmp_path / "my-study.yaml"
    p.write_text("matrix: {engine: [vllm]}\n")
    c, text = load_config(p)
    assert c.name == "my-study" and "vllm" in text


def test_matrix_bundles_set_fields_together_and_instances_reach_the_launcher(tmp_path):
    c = SweepConfig.model_validate({
        "name": "t", "defaults": {"engine": "tgi", "launcher": "sagemaker"},
        "matrix": {"variant": [{"model": "m-7b"}, {"model": "m-7b-gptq", "quantization": "gptq"}],
                   "instance_type": ["ml.g5.2xlarge", "ml.g5.12xlarge"]},
        "exclude": [{"quantization": "gptq", "instance_type": "ml.g5.12xlarge"}],
        "load": {"concurrency": [1]}})
    plan = expand(c)
    assert [g.server.label for g in plan.groups] == ["tgi/m-7b/ml.g5.2xlarge", "tgi/m-7b/ml.g5.12xlarge",
                                                     "tgi/m-7b-gptq/gptq/ml.g5.2xlarge"]
    g = plan.groups[2]
    rc = run_config(c, g.server.model_copy(update={"gpu_count": 4}), g.cells[0].load, tmp_path, "x")
    assert rc.launcher_options == {"quantize": "gptq", "instance_type": "ml.g5.2xlarge", "num_gpus": "4"}
    with pytest.raises(ValueError, match="variant.colour"):
        SweepConfig.model_validate({"name": "t", "matrix": {"variant": [{"colour": "red"}]}})


STUDIES = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_shipped_studies_expand_to_launchable_servers(path):
    from servebench.launchers import LAUNCHERS
    from servebench.engines.specs import load_spec

    c, _ = load_config(path)
    plan = expand(c)
    assert plan.groups and all(g.cells for g in plan.groups)
    for g in plan.groups:
        spec = load_spec(g.server.engine)  # every engine has a spec
        assert g.server.launcher in LAUNCHERS
        if g.server.quantization and spec.flags.quantize_values:
            assert g.server.quantization in spec.flags.quantize_values, (g.server.label, spec.flags.quantize_values)
    labels = [g.server.label for g in plan.groups]
    assert len(labels) == len(set(labels))  # every server distinguishable in tables


def test_studies_match_the_published_matrices():
    by = {p.stem: expand(load_config(p)[0]) for p in STUDIES}
    hf = by["hf-sagemaker-llama2"]
    assert {g.server.instance_type for g in hf.groups} == {"ml.g5.2xlarge", "ml.g5.12xlarge", "ml.g5.48xlarge",
                                                           "ml.p4d.24xlarge"}
    assert {c.load.concurrency for c in hf.cells} == {1, 5, 10, 20}
    assert {c.load.output_tokens for c in hf.cells} == {50} and {c.load.duration_s for c in hf.cells} == {90}
    arxiv = by["arxiv-2311.03687"]
    assert {g.server.engine for g in arxiv.groups} == {"tgi", "vllm", "lightllm"} and len(arxiv.groups) == 27  # x 3 platforms
    assert all(c.load.mode == "burst" and c.load.requests == 1000 and c.load.input_tokens == 512 for c in arxiv.cells)
    assert len({c.load.output_tokens for c in arxiv.cells}) == 1  # the same output length for every engine


def test_spec_yaml_engines_are_labelled_by_their_folder_and_shared_labels_are_refused():
    plan = expand(cfg(matrix={}, servers=[{"engine": "backends/emu-fast/spec.yaml", "model": "tiny"},
                                          {"engine": "backends/emu-slow/spec.yaml", "model": "tiny"},
                                          {"engine": "my-engine.yaml", "model": "tiny"}]))
    assert [g.server.label for g in plan.groups] == ["emu-fast/tiny", "emu-slow/tiny", "my-engine/tiny"]
    with pytest.raises(SweepConfigError, match="server groups g00 and g01 are both labelled 'emu/tiny': give them "
                                               "different names"):
        expand(cfg(matrix={}, servers=[{"engine": "a/emu/spec.yaml", "model": "tiny"},
                                       {"engine": "b/emu/spec.yaml", "model": "tiny"}]))
    named = expand(cfg(matrix={}, servers=[{"engine": "a/emu/spec.yaml", "model": "tiny", "name": "emu-a"},
                                           {"engine": "b/emu/spec.yaml", "model": "tiny"}]))
    assert [g.server.label for g in named.groups] == ["emu-a", "emu/tiny"]


def test_only_compares_numbers_as_numbers():
    full = expand(cfg(matrix={"engine": ["vllm"]}, load={"rate": [2, 4.5], "concurrency": [1], "requests": 4}))
    for expr, ids in (("rate=2", ["g00-rate2-r0"]), ("rate=2.0", ["g00-rate2-r0"]), ("rate=4.5", ["g00-rate4.5-r0"]),
                      ("concurrency=1", ["g00-c0001-r0"]), ("concurrency=01", ["g00-c0001-r0"]), ("rate=x", []),
                      ("engine=vllm,rate=2", ["g00-rate2-r0"])):
        assert [c.id for c in only(full, expr).cells] == ids, expr
