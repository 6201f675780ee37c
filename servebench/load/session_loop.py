"""The session loop: conversations, each turn built after the previous answer came back.

Turn k's request is the whole conversation so far (user texts and the assistant texts the
server actually returned) plus turn k's user text, sent through the chat endpoint once the
previous answer ended (its end_ns) and the turn's think time passed. So, unlike loop.py, no
request exists before t0: each is encoded during the think time before it (never between its
scheduled time and its send, where it would land in the send error). The reply's text is
decoded from the raw reads as soon as the turn ends (analysis.decode).

Load shapes: `--concurrency C` keeps C sessions live (a session that ends frees its slot for the
next); `--rate R` starts sessions at R per second (poisson or constant; `--concurrency` then
caps the live ones); neither: every session at t0. A turn that fails ends its session; the
turns after it are never released (not_released). One process: no --workers split.
"""

from __future__ import annotations

import asyncio
import gc
import json
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Callable

from servebench.analysis.decode import decode_record, reply_text
from servebench.load.loop import (LoadStats, _lag_probe, _sleep_until, _spill_lags, _ticker, new_loop, realtime_off,
                                  realtime_on)
from servebench.load.schedule import release_offsets_ns
from servebench.records import RequestRecord

T0_MARGIN_NS = 20_000_000


@dataclass
class SessionJob:
    """What the loop needs; the records are the caller's, so a Ctrl-C keeps what was measured."""

    base_url: str
    adapter: Any  # openai-chat (build_chat)
    served: str
    extra: dict | None
    load: Any  # config.LoadConfig
    workload: Any  # load.workload.Workload with .sessions
    stats: LoadStats
    connect_ns: list[int]
    progress: Callable[[int, int], None] | None = None
    # each finished turn, decoded, is handed here (store/spool.py: its bytes and texts go to
    # disk off the loop); None: kept in memory
    on_done: Callable[[RequestRecord], None] | None = None


def session_records(workload, warmup: int) -> list[RequestRecord]:
    """Warm-up records, then one per turn of every conversation, in order."""
    recs = [RequestRecord(index=i - warmup, warmup=True, output_tokens=p.output_tokens)
            for i, p in enumerate(workload.prompts[:warmup])]
    for conv in workload.sessions:
        for k, turn in enumerate(conv.turns, 1):
            recs.append(RequestRecord(index=len(recs) - warmup, output_tokens=turn.output_tokens,
                                      session=conv.number, turn=k))
    return recs


def run_sessions(job: SessionJob, records: list[RequestRecord], tokenizer=None) -> None:
    """Warm up, then every conversation; fills `records` in place. Afterwards (outside the
    measurement) each turn's input_tokens: the conversation under the tokenizer's own chat
    template, to set beside the server's count."""
    runner = asyncio.Runner(loop_factory=new_loop)
    try:
        runner.run(_run(job, records))
    finally:
        runner.close()
        if tokenizer is not None:
            client_counts(tokenizer, records)


async def _run(job: SessionJob, records: list[RequestRecord]) -> None:
    from servebench.transport import transport_class

    load = job.load
    tr = transport_class("http")(job.base_url, timeout_s=load.request_timeout_s)
    w = load.warmup
    try:
        await tr.prepare(1)
        for p, rec in zip(job.workload.prompts[:w], records[:w]):  # one-turn chats, one at a time
            rec.scheduled_ns = rec.slot_ns = perf_counter_ns()
            await tr.send(tr.encode(job.adapter.build_chat([{"role": "user", "content": p.text}], p.output_tokens,
                                                           model=job.served, extra=job.extra), rec.index), rec)
        convs = job.workload.sessions
        live = min(len(convs), load.concurrency or len(convs))
        await tr.prepare(live)
        await _drive(_Ctx(job, tr, records[w:]), live)
    finally:
        job.connect_ns.extend(tr.connect_ns)
        await tr.close()


class _Ctx:
    def __init__(self, job: SessionJob, tr, records: list[RequestRecord]) -> None:
        self.job, self.tr, self.stats = job, tr, job.stats
        self.turns: list[list[RequestRecord]] = [[] for _ in job.workload.sessions]
        for r in records:
            self.turns[r.session].append(r)
        self.end_ns: int | None = None


async def _drive(ctx: _Ctx, live: int) -> None:
    job, stats, load = ctx.job, ctx.stats, ctx.job.load
    convs = job.workload.sessions
    total = sum(len(t) for t in ctx.turns)
    helpers = [asyncio.create_task(_lag_probe(stats))]
    if job.progress is not None:
        helpers.append(asyncio.create_task(_ticker(stats, total, job.progress)))
    lags = getattr(ctx.tr, "read_lag_ns", None)
    if job.on_done is not None and lags is not None:  # a session run reports no read lag: bounded, not kept
        helpers.append(asyncio.create_task(_spill_lags(lags, lambda _: None)))
    stats.scheduling = realtime_on() if load.realtime else "normal (--no-realtime)"
    gc_was = gc.isenabled()
    gc.disable()  # as loop.drive: a full collection stalls every stream's reads
    t0 = stats.t0_ns = perf_counter_ns() + T0_MARGIN_NS
    ctx.end_ns = t0 + int(load.duration_s * 1e9) if load.duration_s else None
    offsets = release_offsets_ns(load, len(convs))
    tasks: list[asyncio.Task] = []
    try:
        await _sleep_until(t0)
        if offsets is None:
            it = iter(convs)
            tasks = [asyncio.create_task(_slot(ctx, it)) for _ in range(live)]
        else:
            sem = asyncio.Semaphore(load.concurrency) if load.concurrency else None
            for conv, off in zip(convs, offsets):
                if ctx.end_ns is not None and t0 + off >= ctx.end_ns:
                    break
                await _sleep_until(t0 + off)
                tasks.append(asyncio.create_task(_arrive(ctx, conv, t0 + off, sem)))
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if gc_was:
            gc.enable()
        if load.realtime:
            realtime_off()
        for h in helpers:
            h.cancel()
        if job.progress is not None:
            job.progress(stats.done, total)


async def _slot(ctx: _Ctx, it) -> None:
    for conv in it:  # a shared iterator: a slot whose session ended takes the next one
        now = perf_counter_ns()
        if ctx.end_ns is not None and now >= ctx.end_ns:
            return
        await _converse(ctx, conv, now, now)


async def _arrive(ctx: _Ctx, conv, at_ns: int, sem: asyncio.Semaphore | None) -> None:
    if sem is None:
        await _converse(ctx, conv, at_ns, at_ns)
        return
    async with sem:
        await _converse(ctx, conv, at_ns, perf_counter_ns())


async def _converse(ctx: _Ctx, conv, first_ns: int, slot_ns: int) -> None:
    """One conversation, turn after turn; stops at a failed turn or the --duration end."""
    job, stats = ctx.job, ctx.stats
    messages: list[dict[str, str]] = []
    for k, (turn, rec) in enumerate(zip(conv.turns, ctx.turns[conv.number])):
        messages.append({"role": "user", "content": turn.user})
        wire = ctx.tr.encode(job.adapter.build_chat(messages, turn.output_tokens, model=job.served, extra=job.extra),
                             rec.index)
        rec.prompt_text = json.dumps(messages, ensure_ascii=False)
        if k:
            at = ctx.turns[conv.number][k - 1].end_ns + round(conv.think_s[k - 1] * 1e9)
            if ctx.end_ns is not None and at >= ctx.end_ns:
                return
            await _sleep_until(at)
            rec.scheduled_ns = rec.slot_ns = at
        else:
            rec.scheduled_ns, rec.slot_ns = first_ns, slot_ns
        stats.released += 1
        await ctx.tr.send(wire, rec)
        stats.done += 1
        decode_record(job.adapter, rec)  # the writer's decode_records skips it
        reply = rec.reply_text = reply_text(job.adapter, rec)
        if job.on_done is not None:  # from here the spool's thread may take its bytes and texts
            job.on_done(rec)
        if not rec.ok:
            return
        messages.append({"role": "assistant", "content": reply})


def client_counts(tokenizer, records: list[RequestRecord]) -> None:
    """input_tokens of each sent turn: its messages under the tokenizer's chat template (the
    server's own count, usage.prompt_tokens, is server_input_tokens; summary.json says how
    many disagree). Without a template: the texts' tokens alone."""
    for rec in records:
        if rec.prompt_text is None or not rec.sent_ns:
            continue
        messages = json.loads(rec.prompt_text)
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            rec.input_tokens = len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        except Exception:  # noqa: BLE001 - no chat template (or a broken one): the content alone
            rec.input_tokens = sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in messages)
