#!/usr/bin/env python3
"""What each decode-loop choice buys, in-process on the bundled model (no server): one table, one run.

Rows: the model's forward in a hand-written greedy decode loop at batch 1 and 8, with
- dtype float32 vs bfloat16 (the loader's `auto` picks bf16 on CPUs where it is faster),
- transformers' `DynamicCache` (concatenates every step) vs HybrIE's `GrowingCache` (writes into a doubling buffer),
and the same through `LocalEngine` (scheduler thread, sampling, detokenizing, stop checks), so the engine's own cost
per step shows as the ratio to the bare loop. Writes benchmarks/results/decode-steps-<device>.json.

    python benchmarks/bench_decode_steps.py [--tokens 128] [--prompt-repeat 8]
"""
import argparse, asyncio, json, os, platform, statistics, time
import torch
from common import ROOT, git_sha


def loop(m, ids, cache, n):
    B = ids.shape[0]; mask = torch.ones_like(ids)
    with torch.inference_mode():
        out = m(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
        tok = out.logits[:, -1:].argmax(-1)
        t = time.perf_counter()
        for _ in range(n):
            mask = torch.cat([mask, mask.new_ones(B, 1)], 1)
            out = m(input_ids=tok, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
            tok = out.logits[:, -1:].argmax(-1)
    return B * n / (time.perf_counter() - t)


async def engine_rate(eng, lm, B, n, text):
    from hybrie.protocol import ChatRequest, SamplingParams
    async def one(i):
        req = ChatRequest(lm.id, [{'role': 'user', 'content': text + f' ({i})'}], SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))
        async for _ in eng.chat(req): pass
    await one(0)
    t = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(B)])
    return B * n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--tokens', type=int, default=128); ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--prompt-repeat', type=int, default=8); ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    from transformers import DynamicCache
    from hybrie.config import Catalog, EngineSettings
    from hybrie.loader import load_model, cpu_bf16_speedup
    from hybrie.kvcache import GrowingCache
    from hybrie.engine import LocalEngine
    res = {}
    text = 'Tell me about the sea and the ships that sail on it. ' * a.prompt_repeat
    for dt in ('float32', 'bfloat16'):
        lm = load_model(Catalog().resolve('smollm2-135m-instruct'), a.device, dt)
        for B in (1, 8):
            ids = torch.tensor([lm.tokenizer.encode(text)] * B, device=a.device)
            loop(lm.model, ids, DynamicCache(), 4)
            for name, cls in (('DynamicCache', DynamicCache), ('GrowingCache', GrowingCache)):
                res[f'{dt}/batch{B}/{name}'] = statistics.median(loop(lm.model, ids, cls(), a.tokens) for _ in range(a.reps))
        eng = LocalEngine(lm, EngineSettings(max_batch_size=16))
        for B in (1, 8):
            res[f'{dt}/batch{B}/LocalEngine'] = statistics.median(asyncio.run(engine_rate(eng, lm, B, a.tokens, text)) for _ in range(a.reps))
        eng.close(); del lm
    r = lambda k1, k2: res[k1] / res[k2]
    sha = git_sha(short=True)
    out = {'benchmark': 'decode-steps', 'git_sha': sha, 'model': 'smollm2-135m-instruct', 'device': a.device, 'tokens': a.tokens,
           'prompt_tokens_approx': len(text) // 4, 'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'torch': torch.__version__},
           'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'cpu_bf16_matmul_speedup': cpu_bf16_speedup(),
           'tok_s': res,
           'ratios': {'bf16_vs_fp32_batch1': r('bfloat16/batch1/GrowingCache', 'float32/batch1/GrowingCache'),
                      'bf16_vs_fp32_batch8': r('bfloat16/batch8/GrowingCache', 'float32/batch8/GrowingCache'),
                      'growing_vs_dynamic_cache_batch1': r('bfloat16/batch1/GrowingCache', 'bfloat16/batch1/DynamicCache'),
                      'growing_vs_dynamic_cache_batch8': r('bfloat16/batch8/GrowingCache', 'bfloat16/batch8/DynamicCache'),
                      'engine_vs_bare_loop_batch1': r('bfloat16/batch1/LocalEngine', 'bfloat16/batch1/GrowingCache'),
                      'engine_vs_bare_loop_batch8': r('bfloat16/batch8/LocalEngine', 'bfloat16/batch8/GrowingCache')}}
    dst = ROOT/'benchmarks'/'results'/f'decode-steps-{a.device}.json'
    dst.write_text(json.dumps(out, indent=2) + '\n')
    print(json.dumps(out, indent=2)); print('wrote', dst)


if __name__ == '__main__': main()
