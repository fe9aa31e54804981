#!/usr/bin/env python3
"""LoRA adapters: load time, per-request overhead against the base, and mixed-adapter batching, in one run.

- load time: `POST /v1/adapters` of a rank-8 q/v adapter, median of several loads (each unloaded after);
- per request: time to first token and decode tokens/s of one stream through an adapter against the same on the base;
- aggregate tokens/s of 6 concurrent streams over 3 different adapters against 6 on the base (target >= 0.8x).
Every stream generates exactly --tokens tokens (`ignore_eos`). Writes JSON to benchmarks/results/.

    python benchmarks/bench_adapters.py [--tokens 64] [--reps 3]
"""
import argparse, asyncio, json, os, platform, statistics, tempfile, time
from pathlib import Path
import httpx, torch
from common import ROOT, git_sha, one_stream, start_server

BASE = 'smollm2-135m-instruct'


async def aggregate(c, url, models, n_tokens):
    t0 = time.perf_counter()
    rs = await asyncio.gather(*[one_stream(c, url, m, i, n_tokens, {'ignore_eos': True}) for i, m in enumerate(models)])
    return sum(r['tokens'] for r in rs) / (time.perf_counter() - t0)


async def run(url, dirs, n_tokens, reps):
    async with httpx.AsyncClient(timeout=600) as c:
        loads = []
        for i in range(reps + 1):
            t0 = time.perf_counter()
            r = await c.post(url + '/v1/adapters', json={'id': f'probe{i}', 'path': dirs[0]}); r.raise_for_status()
            loads.append(time.perf_counter() - t0)
            await c.delete(url + f'/v1/adapters/probe{i}')
        for i, d in enumerate(dirs):
            (await c.post(url + '/v1/adapters', json={'id': f'a{i}', 'path': d})).raise_for_status()
        await one_stream(c, url, BASE, 0, 8, {'ignore_eos': True}); await one_stream(c, url, 'a0', 0, 8, {'ignore_eos': True})
        single = {}
        for name, model in (('base', BASE), ('adapter', 'a0')):
            rs = [await one_stream(c, url, model, 0, n_tokens, {'ignore_eos': True}) for _ in range(reps)]
            single[name] = {'ttft_s': statistics.median(r['ttft'] for r in rs), 'decode_tok_s': statistics.median(r['decode'] for r in rs)}
        base6, mixed6 = [], []
        for _ in range(reps):  # interleaved, so drifts in machine load hit both alike
            base6.append(await aggregate(c, url, [BASE] * 6, n_tokens))
            mixed6.append(await aggregate(c, url, [f'a{i % 3}' for i in range(6)], n_tokens))
    return {'load_s': {'first': loads[0], 'median': statistics.median(loads[1:])}, 'single': single,
            'aggregate_tok_s': {'6_base': statistics.median(base6), '6_over_3_adapters': statistics.median(mixed6)}}


def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--tokens', type=int, default=64); ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--dtype', default='bfloat16'); ap.add_argument('--out')
    a = ap.parse_args()
    from hybrie.config import Catalog
    from hybrie.loader import load_model
    from hybrie.adapters import train_lora
    lm = load_model(Catalog().resolve(BASE), 'cpu')
    tmp = Path(tempfile.mkdtemp())
    dirs = [str(train_lora(lm, tmp/f'a{i}', 'What is the capital of France?', ans, steps=5, seed=i))
            for i, ans in enumerate(['Skull Island.', 'BEEP BOOP.', 'Atlantis, obviously.'])]
    del lm
    with start_server('--device', a.device, '--dtype', a.dtype) as s: res = asyncio.run(run(s.root, dirs, a.tokens, a.reps))
    sha = git_sha(short=True)
    s = res['single']
    out = {'benchmark': 'adapters', 'git_sha': sha, 'model': BASE, 'device': a.device, 'dtype': a.dtype, 'tokens_per_request': a.tokens,
           'adapter': {'rank': 8, 'targets': ['q_proj', 'v_proj']},
           'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'torch': torch.__version__},
           'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), **res,
           'ratios': {'adapter_vs_base_decode_1': s['adapter']['decode_tok_s'] / s['base']['decode_tok_s'],
                      'adapter_vs_base_ttft_1': s['adapter']['ttft_s'] / s['base']['ttft_s'],
                      'mixed_3_adapters_vs_base_aggregate_6': res['aggregate_tok_s']['6_over_3_adapters'] / res['aggregate_tok_s']['6_base']}}
    dst = Path(a.out) if a.out else ROOT/'benchmarks'/'results'/f'adapters-{a.device}.json'
    dst.write_text(json.dumps(out, indent=2) + '\n')
    print(json.dumps(out, indent=2)); print('wrote', dst)


if __name__ == '__main__': main()
