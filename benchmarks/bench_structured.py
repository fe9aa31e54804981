#!/usr/bin/env python3
"""Constrained decoding (`response_format` json_schema, llguidance) against the same requests unconstrained, in one run.

Figures, each beside its anchor, interleaved rep by rep on one `hybrie serve` (bundled SmolLM2, the dtype it picks),
driven by the official `openai` SDK (streamed, `stream_options.include_usage`), temperature > 0 with per-request seeds:
- decode tokens/s of one stream: the same prompt with a JSON Schema (a character sheet: strings, a bounded int, an enum,
  an array) against no `response_format`. A grammar ends the answer when the object closes, so the lengths differ:
  tokens/s is (usage.completion_tokens - 1) / (last content chunk - first content chunk). Target: ratio >= 0.9.
- time to first token with a schema never seen (a distinct property name per rep: validate + compile + first mask), the
  same schema again (cached), and no schema, at `--ttft-tokens` tokens per request.
- 8 concurrent streams, 4 constrained + 4 unconstrained, against 8 unconstrained (target: aggregate >= 0.9x):
  `sustained`: 8 slots kept busy for `--window` s (a slot sends its next request as soon as its stream ends, so early
  finishing constrained answers do not shrink the batch); tokens in the window are counted from each stream's content
  chunk times (its usage.completion_tokens spread over its chunks), over the window after the first `--warmup` s.
  `burst`: 8 requests sent together, total completion tokens / wall time until the last ends (as bench_chat does; here
  the constrained ones usually end first and leave the batch at 4 rows, which by itself lowers the mixed figure).
  Also the unconstrained streams' own tokens/s in the mixed run against the all-unconstrained run (the cost constrained
  neighbours impose on others).
Writes JSON (git sha, machine, load average, settings, every raw sample) to benchmarks/results/structured-<device>.json.

    python benchmarks/bench_structured.py [--reps 5] [--tokens 96] [--window 10] [--device cpu]
"""
import argparse, asyncio, copy, json, os, platform, statistics, time
from pathlib import Path
from openai import AsyncOpenAI
from common import ROOT, git_sha, start_server

MODEL = 'smollm2-135m-instruct'
SCHEMA = {'type': 'object', 'properties': {
    'name': {'type': 'string'},
    'age': {'type': 'integer', 'minimum': 0, 'maximum': 120},
    'occupation': {'type': 'string'},
    'mood': {'type': 'string', 'enum': ['happy', 'sad', 'curious', 'tired', 'angry']},
    'hobbies': {'type': 'array', 'items': {'type': 'string'}, 'minItems': 1, 'maxItems': 5},
    'biography': {'type': 'string'}},
    'required': ['name', 'age', 'occupation', 'mood', 'hobbies', 'biography'], 'additionalProperties': False}
PLACES = ['a lighthouse town', 'a busy market city', 'a mountain village', 'a space station', 'a desert caravan',
          'a river port', 'an old university', 'a fishing island']


def messages(i):
    return [{'role': 'user', 'content': f'Invent a character for a novel set in {PLACES[i % len(PLACES)]} and describe them: '
                                        'name, age, occupation, mood, hobbies and a short biography.'}]


def response_format(schema, name='character'):
    return {'type': 'json_schema', 'json_schema': {'name': name, 'schema': schema, 'strict': True}}


def cold_schema(tag):
    "SCHEMA with one more property whose name no earlier request used: a grammar the server has never compiled."
    s = copy.deepcopy(SCHEMA)
    s['properties'][f'note_{tag}'] = {'type': 'string'}
    s['required'].append(f'note_{tag}')
    return s


async def stream(client, i, seed, max_tokens, rf=None):
    "One streamed completion of prompt `i`: times of its request, of every content chunk, its completion tokens, its finish."
    kw = {'response_format': rf} if rf else {}
    t0 = time.perf_counter(); times = []; usage = None; finish = None
    s = await client.chat.completions.create(model=MODEL, messages=messages(i), max_tokens=max_tokens, temperature=0.8, top_p=0.95,
                                             seed=seed, stream=True, stream_options={'include_usage': True}, **kw)
    async for ch in s:
        if ch.usage: usage = ch.usage
        if ch.choices:
            if ch.choices[0].delta.content: times.append(time.perf_counter())
            finish = ch.choices[0].finish_reason or finish
    tokens = usage.completion_tokens if usage else len(times)
    return {'t0': t0, 'ttft': times[0] - t0, 'tokens': tokens, 'finish': finish, 'chunk_times': times,
            'decode_tok_s': (tokens - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None,
            'constrained': rf is not None}


def slim(r, t_ref=None):
    "A sample for the JSON: chunk times relative to its request (or to `t_ref`), rounded."
    o = {k: v for k, v in r.items() if k not in ('chunk_times', 't0')}
    base = r['t0'] if t_ref is None else t_ref
    if t_ref is not None: o['start_s'] = round(r['t0'] - t_ref, 4)
    o['chunk_times_s'] = [round(t - base, 4) for t in r['chunk_times']]
    return o


async def burst(client, constrained, max_tokens, seed0):
    "8 requests sent together (`constrained[k]`: slot k under the schema); total tokens / wall, per-class decode tok/s."
    t0 = time.perf_counter()
    rs = await asyncio.gather(*[stream(client, k, seed0 + k, max_tokens, response_format(SCHEMA) if c else None)
                                for k, c in enumerate(constrained)])
    wall = time.perf_counter() - t0
    return {'aggregate_tok_s': sum(r['tokens'] for r in rs) / wall, 'wall_s': wall,
            'free_decode_tok_s': statistics.median(r['decode_tok_s'] for r in rs if not r['constrained']),
            'constrained_decode_tok_s': statistics.median([r['decode_tok_s'] for r in rs if r['constrained']] or [0]) or None,
            'streams': [slim(r, t0) for r in rs]}


async def sustained(client, constrained, max_tokens, seed0, window, warmup):
    "8 slots kept busy for `window` s; tokens/s inside [warmup, window], overall and per stream class."
    t0 = time.perf_counter(); done = []

    async def slot(k, c):
        j = 0
        while time.perf_counter() - t0 < window:
            done.append(await stream(client, k, seed0 + 1000 * j + k, max_tokens, response_format(SCHEMA) if c else None))
            j += 1
    await asyncio.gather(*[slot(k, c) for k, c in enumerate(constrained)])
    A, B = t0 + warmup, t0 + window
    def in_window(r):  # its completion tokens spread over its content chunks
        n = len(r['chunk_times'])
        return r['tokens'] * sum(A <= t <= B for t in r['chunk_times']) / n if n else 0
    cls = lambda want: sum(in_window(r) for r in done if r['constrained'] == want) / (B - A)
    n_free, n_con = sum(not c for c in constrained), sum(constrained)
    return {'aggregate_tok_s': cls(True) + cls(False), 'free_per_stream_tok_s': cls(False) / n_free,
            'constrained_per_stream_tok_s': cls(True) / n_con if n_con else None, 'requests': len(done),
            'constrained_finish': [r['finish'] for r in done if r['constrained']],
            'streams': [slim(r, t0) for r in done]}


def med(xs): xs = [x for x in xs if x is not None]; return statistics.median(xs) if xs else None


async def run(url, a):
    client = AsyncOpenAI(base_url=url, api_key='none', max_retries=0, timeout=600)
    # warm-up: the first constrained request ever builds llguidance's view of the tokenizer; kept apart from the cold figures
    first = await stream(client, 0, 1, a.ttft_tokens, response_format(cold_schema('warmup')))
    await stream(client, 0, 1, 8); await stream(client, 0, 1, 8, response_format(SCHEMA))
    await burst(client, [True] * 4 + [False] * 4, 16, 0)
    raw = {'single': [], 'ttft': [], 'sustained': [], 'burst': []}
    mixed = [k % 2 == 0 for k in range(8)]  # slots 0, 2, 4, 6 constrained
    for rep in range(a.reps):
        t_rep = time.perf_counter()
        for j in range(a.singles):  # one stream, same prompt and seed both ways; the order alternates
            seed = 100 * rep + j
            pair = [('constrained', response_format(SCHEMA)), ('free', None)][::1 if (rep + j) % 2 == 0 else -1]
            for kind, rf in pair:
                raw['single'].append({'rep': rep, 'kind': kind, **slim(await stream(client, j, seed, a.tokens, rf))})
        for j in range(a.ttft_pairs):
            tag = f'r{rep}j{j}-{os.getpid()}'
            s = {'rep': rep}
            s['cold'] = (await stream(client, j, rep, a.ttft_tokens, response_format(cold_schema(tag))))['ttft']
            s['cached'] = (await stream(client, j, rep, a.ttft_tokens, response_format(cold_schema(tag))))['ttft']
            s['none'] = (await stream(client, j, rep, a.ttft_tokens))['ttft']
            raw['ttft'].append(s)
        order = [('mixed', mixed), ('free', [False] * 8)][::1 if rep % 2 == 0 else -1]
        for kind, cons in order:
            raw['sustained'].append({'rep': rep, 'kind': kind, **await sustained(client, cons, a.tokens, 10_000 * rep, a.window, a.warmup)})
        for kind, cons in order:
            raw['burst'].append({'rep': rep, 'kind': kind, **await burst(client, cons, a.tokens, 10_000 * rep + 500)})
        su = {r['kind']: r for r in raw['sustained'] if r['rep'] == rep}
        si = {k: med(r['decode_tok_s'] for r in raw['single'] if r['rep'] == rep and r['kind'] == k) for k in ('constrained', 'free')}
        print(f'rep {rep + 1}/{a.reps} ({time.perf_counter() - t_rep:.0f} s, load {os.getloadavg()[0]:.1f}): one stream '
              f'{si["constrained"]:.1f} vs {si["free"]:.1f} tok/s; ttft cold/cached/none {raw["ttft"][-1]["cold"] * 1e3:.0f}/'
              f'{raw["ttft"][-1]["cached"] * 1e3:.0f}/{raw["ttft"][-1]["none"] * 1e3:.0f} ms; 8 streams sustained mixed '
              f'{su["mixed"]["aggregate_tok_s"]:.1f} vs free {su["free"]["aggregate_tok_s"]:.1f} tok/s', flush=True)
    return first, raw


def summarize(first, raw):
    single = {k: {'decode_tok_s': med(r['decode_tok_s'] for r in raw['single'] if r['kind'] == k),
                  'ttft_ms': 1e3 * med(r['ttft'] for r in raw['single'] if r['kind'] == k),
                  'tokens_median': med(r['tokens'] for r in raw['single'] if r['kind'] == k)} for k in ('constrained', 'free')}
    ttft = {k: 1e3 * med(s[k] for s in raw['ttft']) for k in ('cold', 'cached', 'none')}
    agg = {}
    for mode in ('sustained', 'burst'):
        for kind in ('mixed', 'free'):
            rs = [r for r in raw[mode] if r['kind'] == kind]
            agg[f'{mode}_{kind}'] = {'aggregate_tok_s': med(r['aggregate_tok_s'] for r in rs),
                                     'free_stream_tok_s': med(r['free_per_stream_tok_s' if mode == 'sustained' else 'free_decode_tok_s'] for r in rs),
                                     'constrained_stream_tok_s': med(r['constrained_per_stream_tok_s' if mode == 'sustained' else 'constrained_decode_tok_s'] for r in rs)}
    # per-rep ratios too (each pair ran back to back), so the spread of the ratio itself shows
    def rep_ratios(mode, key):
        out = []
        for rep in sorted({r['rep'] for r in raw[mode]}):
            d = {r['kind']: r for r in raw[mode] if r['rep'] == rep}
            out.append(d['mixed'][key] / d['free'][key])
        return out
    ratios = {
        'decode_1_constrained_vs_free': single['constrained']['decode_tok_s'] / single['free']['decode_tok_s'],
        'ttft_cold_vs_none': ttft['cold'] / ttft['none'], 'ttft_cached_vs_none': ttft['cached'] / ttft['none'],
        'ttft_cold_vs_cached': ttft['cold'] / ttft['cached'],
        'aggregate_8_sustained_mixed_vs_free': agg['sustained_mixed']['aggregate_tok_s'] / agg['sustained_free']['aggregate_tok_s'],
        'aggregate_8_burst_mixed_vs_free': agg['burst_mixed']['aggregate_tok_s'] / agg['burst_free']['aggregate_tok_s'],
        'free_stream_sustained_mixed_vs_free': agg['sustained_mixed']['free_stream_tok_s'] / agg['sustained_free']['free_stream_tok_s'],
        'free_stream_burst_mixed_vs_free': agg['burst_mixed']['free_stream_tok_s'] / agg['burst_free']['free_stream_tok_s'],
        'per_rep': {'aggregate_8_sustained': rep_ratios('sustained', 'aggregate_tok_s'),
                    'free_stream_sustained': rep_ratios('sustained', 'free_per_stream_tok_s'),
                    'aggregate_8_burst': rep_ratios('burst', 'aggregate_tok_s')}}
    return {'single': single, 'ttft_ms': ttft, 'first_constrained_request_ttft_ms': 1e3 * first['ttft'], 'concurrent_8': agg,
            'ratios': ratios, 'targets': {'decode_1_constrained_vs_free': 0.9, 'aggregate_8_mixed_vs_free': 0.9}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--reps', type=int, default=5); ap.add_argument('--tokens', type=int, default=96)
    ap.add_argument('--singles', type=int, default=2, help='one-stream pairs per rep')
    ap.add_argument('--ttft-pairs', type=int, default=2, help='cold/cached/none triples per rep')
    ap.add_argument('--ttft-tokens', type=int, default=4); ap.add_argument('--window', type=float, default=10)
    ap.add_argument('--warmup', type=float, default=1.5); ap.add_argument('--device', default='cpu')
    ap.add_argument('--dtype', default='auto'); ap.add_argument('--out')
    a = ap.parse_args()
    import torch, llguidance, openai
    load0 = os.getloadavg(); t_start = time.time()
    with start_server('--model', MODEL, '--device', a.device, *(['--dtype', a.dtype] if a.dtype != 'auto' else [])) as s:
        first, raw = asyncio.run(run(s.url, a))
    out = {'benchmark': 'structured', 'git_sha': git_sha(short=True), 'model': MODEL, 'device': a.device,
           'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t_start)), 'duration_s': round(time.time() - t_start, 1),
           'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'torch': torch.__version__,
                       'llguidance': getattr(llguidance, '__version__', None), 'openai': openai.__version__,
                       'load_avg_start': load0, 'load_avg_end': os.getloadavg(),
                       'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None},
           'settings': {'reps': a.reps, 'max_tokens': a.tokens, 'singles_per_rep': a.singles, 'ttft_triples_per_rep': a.ttft_pairs,
                        'ttft_max_tokens': a.ttft_tokens, 'sustained_window_s': a.window, 'sustained_warmup_s': a.warmup,
                        'temperature': 0.8, 'top_p': 0.95, 'dtype': a.dtype, 'schema': SCHEMA,
                        'mixed_slots': 'slots 0, 2, 4, 6 constrained, 1, 3, 5, 7 free'},
           **summarize(first, raw), 'raw': raw}
    dst = Path(a.out) if a.out else ROOT/'benchmarks'/'results'/f'structured-{a.device.split(":")[0]}.json'
    dst.write_text(json.dumps(out, indent=1) + '\n')
    print(json.dumps({k: out[k] for k in ('single', 'ttft_ms', 'first_constrained_request_ttft_ms', 'concurrent_8', 'ratios')}, indent=1))
    print('wrote', dst)


if __name__ == '__main__': main()
