"""Length mixes: parsing, seeded draws, clipping counted, requested vs achieved in the summary
(servebench.load.lengths, servebench.load.workload)."""

from __future__ import annotations

import json
import random
import statistics

import pytest
from pydantic import ValidationError

from servebench.config import RunConfig
from servebench.engines.presets import resolve_model
from servebench.load import workload
from servebench.load.lengths import parse_length
from servebench.load.prompts import WorkloadError, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(resolve_model("tiny"))


def test_fixed_and_uniform():
    assert parse_length("512").fixed == 512 and parse_length(64).sample(3, random.Random(0)) == [64] * 3
    xs = parse_length("uniform:128-2048").sample(5000, random.Random(1))
    assert min(xs) >= 128 and max(xs) <= 2048 and min(xs) < 200 and max(xs) > 1950


@pytest.mark.parametrize("spec", ["lognormal:mean=1000,sd=800", "normal:mean=500,sd=50"])
def test_mean_and_sd_are_the_lengths_not_the_parameters(spec):
    d = parse_length(spec)
    xs = d.sample(20000, random.Random(7))
    assert statistics.mean(xs) == pytest.approx(d.params["mean"], rel=0.05)
    assert statistics.pstdev(xs) == pytest.approx(d.params["sd"], rel=0.1)
    assert min(xs) >= 1


def test_seeded_and_reproducible():
    d = parse_length("lognormal:mean=300,sd=200")
    assert d.sample(50, random.Random("0:input")) == d.sample(50, random.Random("0:input"))
    assert d.sample(50, random.Random("0:input")) != d.sample(50, random.Random("1:input"))


def test_empirical_from_a_column_and_from_a_trace(tmp_path):
    col = tmp_path / "lens.txt"
    col.write_text("length\n10\n20\n\n30\n")
    d = parse_length(f"empirical:{col}")
    assert d.values == (10, 20, 30) and set(d.sample(100, random.Random(0))) == {10, 20, 30}
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,5,7\n2023-01-01 00:00:01,6,8\n")
    assert parse_length(f"empirical:{trace}").values == (5, 6)
    assert parse_length(f"empirical:{trace}", "--output-tokens", "output").values == (7, 8)


@pytest.mark.parametrize("spec,pattern", [
    ("lognormal:mean=10", "both mean= and sd="), ("normal:mean=-1,sd=2", "mean must be > 0"),
    ("uniform:50-10", "uniform:LOW-HIGH"), ("zipf:1", "expected a number of tokens"),
    ("lognormal:mu=1,sd=2", "lognormal:mean=M,sd=S"), ("empirical:/no/such/file", "cannot read")])
def test_bad_specs(spec, pattern):
    with pytest.raises(WorkloadError, match=pattern):
        parse_length(spec)


def test_empirical_bad_line_names_file_and_line(tmp_path):
    f = tmp_path / "lens.txt"
    f.write_text("10\n-4\n")
    with pytest.raises(WorkloadError, match=r"lens\.txt:2: length '-4'"):
        parse_length(f"empirical:{f}")


def test_config_rejects_a_non_length():
    with pytest.raises(ValidationError, match="expected a number of tokens or a distribution"):
        RunConfig(workload=dict(input_tokens="lots"))
    with pytest.raises(ValidationError, match="at least 1"):
        RunConfig(workload=dict(output_tokens=0))


def test_workload_prompts_follow_the_mix_exactly_and_clip_to_context(tok):
    cfg = RunConfig(load=dict(requests=60, warmup=2, seed=3),
                    workload=dict(input_tokens="lognormal:mean=900,sd=700", output_tokens="uniform:4-40",
                                  max_output_tokens=30))
    wl = workload.build(cfg, tok)
    assert len(wl.prompts) == 62
    assert [len(tok(p.text)["input_ids"]) for p in wl.prompts] == [p.input_tokens for p in wl.prompts]
    assert all(p.input_tokens + p.output_tokens <= 2048 and p.output_tokens <= 30 for p in wl.prompts)
    info = wl.info
    assert info["clipped"]["context"] == 2048 and info["clipped"]["output"] > 0
    assert info["lengths"]["input"]["spec"]["kind"] == "lognormal"
    assert info["lengths"]["input"]["requested"]["n"] == 60
    again = workload.build(RunConfig(**cfg.model_dump()), tok)
    assert [p.text for p in again.prompts] == [p.text for p in wl.prompts]


def test_measured_lengths_of_a_seed_do_not_move_with_the_warm_ups(tok):
    def lengths(warmup):
        cfg = RunConfig(load=dict(requests=20, warmup=warmup, seed=3),
                        workload=dict(input_tokens="uniform:20-400", output_tokens="uniform:4-40"))
        wl = workload.build(cfg, tok)
        return [(p.input_tokens, p.output_tokens) for p in wl.prompts[warmup:]]

    assert lengths(0) == lengths(2) == lengths(5)


def test_fixed_lengths_keep_the_plain_prompts(tok):
    from servebench.load.prompts import synthetic

    cfg = RunConfig(load=dict(requests=5, warmup=0), workload=dict(input_tokens=32, output_tokens=4))
    assert workload.build(cfg, tok).prompts == synthetic(tok, 5, 32, 4, seed=0)


def test_a_trace_prompt_text_is_neither_clipped_nor_counted_clipped_and_its_output_fits(tok, tmp_path):
    long_text = " ".join(["hello"] * 300)  # over --max-input-tokens 200, and over 2048 with its 900 out
    rows = [{"time_s": 0.0, "input_tokens": 100, "output_tokens": 8},
            {"time_s": 0.5, "input_tokens": 300, "output_tokens": 8},
            {"time_s": 1.0, "prompt": long_text, "output_tokens": 900},
            {"time_s": 1.5, "input_tokens": 50, "output_tokens": 8}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RunConfig(load=dict(warmup=0), workload=dict(trace=dict(source=str(path)), max_input_tokens=200))
    wl = workload.build(cfg, tok)
    sent = wl.prompts[2]
    assert sent.text == long_text and sent.input_tokens == len(tok(long_text)["input_ids"]) > 2048 - 900
    assert wl.info["clipped"]["input"] == 1  # the 300-token request only
    assert sent.input_tokens + sent.output_tokens == 2048 and wl.info["clipped"]["output"] == 1


def test_session_warm_ups_share_no_text_with_the_measured_turns(tok):
    from servebench.load import sessions

    cfg = RunConfig(api="openai-chat", load=dict(warmup=3, seed=4),
                    workload=dict(sessions=dict(source="synthetic", count=2, turns=2), input_tokens=40, output_tokens=8))
    convs, warm, _ = sessions.build(cfg, tok)
    users = {t.user for c in convs for t in c.turns}
    assert len(warm) == 3 and not users & {w.text for w in warm}
    # as long as the first turns they stand in for, and as long an answer
    first = convs[0].turns[0]
    assert len(tok(warm[0].text)["input_ids"]) == len(tok(first.user)["input_ids"]) == 40 + 1  # BOS
    assert warm[0].output_tokens == first.output_tokens


def test_a_fixed_length_over_the_context_is_refused_before_any_server(tok):
    cfg = RunConfig(workload=dict(input_tokens=2040, output_tokens=128))
    with pytest.raises(WorkloadError, match=r"--input-tokens 2040 \+ --output-tokens 128 = 2168 tokens: over the "
                                            r"model's context of 2048"):
        workload.build(cfg, tok)
    assert len(workload.build(RunConfig(load=dict(requests=2, warmup=0),
                                        workload=dict(input_tokens=2000, output_tokens=48)), tok).prompts) == 2
