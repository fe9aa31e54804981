#!/usr/bin/env python3
"""Chat serving speed: HybrIE against raw transformers `generate` and `transformers serve`, in one run.

Figures (all on the same weights and dtype, on this machine):
- raw `generate`: time to first token (prefill + one token) and decode tokens/s at batch 1; aggregate tokens/s at batch 8;
- `hybrie serve`: time to first token and decode tokens/s of one stream; aggregate tokens/s at 1, 4 and 8 concurrent streams;
- `transformers serve --continuous-batching` (the peer to beat): the same through its OpenAI API.
Every request generates exactly --tokens tokens (`ignore_eos` for HybrIE, `min_new_tokens` for generate); the peer has
no such switch, so its tokens are counted as received. Writes JSON to benchmarks/results/.

    python benchmarks/bench_chat.py [--tokens 128] [--device cpu] [--dtype bfloat16] [--skip-peer]
"""
import argparse, asyncio, json, os, platform, socket, statistics, subprocess, sys, time
from pathlib import Path
import httpx, torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'tests'))
PROMPTS = ['Write a long story about a lighthouse keeper.', 'Explain how rain forms, in detail.',
           'Describe a walk through a busy market.', 'Write an essay about the history of bread.',
           'Tell me about the planets of the solar system.', 'Describe how a bicycle works.',
           'Write a letter to a friend about a summer holiday.', 'Explain why the sky is blue.']
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'PYTHONUNBUFFERED': '1'}


def msgs(i): return [{'role': 'user', 'content': PROMPTS[i % len(PROMPTS)]}]


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def wait_healthy(url, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f'server exited with {proc.returncode}')
        try:
            if httpx.get(url, timeout=1).status_code == 200: return
        except httpx.HTTPError: pass
        time.sleep(0.3)
    raise RuntimeError('server did not start')


# ---------------------------------------------------------------- raw transformers generate
def bench_generate(path, dtype, device, n_tokens, reps):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path); tok.padding_side = 'left'
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    def enc(batch):
        texts = [tok.apply_chat_template(msgs(i), tokenize=False, add_generation_prompt=True) for i in range(batch)]
        return tok(texts, return_tensors='pt', padding=True, add_special_tokens=False).to(device)
    def gen(x, n):
        if device.startswith('cuda'): torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        if device.startswith('cuda'): torch.cuda.synchronize()
        return time.perf_counter() - t
    x1, x8 = enc(1), enc(8)
    gen(x1, 4); gen(x8, 4)  # warm-up
    ttft = statistics.median(gen(x1, 1) for _ in range(reps))
    full = statistics.median(gen(x1, n_tokens) for _ in range(reps))
    agg8 = statistics.median(8 * n_tokens / gen(x8, n_tokens) for _ in range(reps))
    del model
    return {'ttft_s': ttft, 'decode_tok_s': (n_tokens - 1) / (full - ttft), 'aggregate_tok_s': {'1': n_tokens / full, '8': agg8}}


# ---------------------------------------------------------------- an OpenAI-compatible server
async def one_stream(client, url, model, i, n_tokens, extra):
    body = {'model': model, 'messages': msgs(i), 'max_tokens': n_tokens, 'temperature': 0, 'stream': True,
            'stream_options': {'include_usage': True}, **extra}
    t0 = time.perf_counter(); first = last = None; chunks = 0; usage = None
    async with client.stream('POST', url + '/v1/chat/completions', json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith('data: ') or line == 'data: [DONE]': continue
            d = json.loads(line[6:])
            if d.get('usage'): usage = d['usage']
            if d.get('choices') and d['choices'][0]['delta'].get('content'):
                now = time.perf_counter(); chunks += 1
                first = first or now; last = now
    tokens = (usage or {}).get('completion_tokens') or chunks
    return {'ttft': first - t0, 'tokens': tokens, 'decode': (tokens - 1) / (last - first) if last > first else 0, 'end': last}


async def bench_server(url, model, n_tokens, reps, extra, concurrency=(1, 4, 8)):
    async with httpx.AsyncClient(timeout=600) as c:
        await one_stream(c, url, model, 0, 8, extra)  # warm-up
        singles = [await one_stream(c, url, model, 0, n_tokens, extra) for _ in range(reps)]
        agg = {}
        for k in concurrency:
            vals = []
            for _ in range(reps):
                t0 = time.perf_counter()
                rs = await asyncio.gather(*[one_stream(c, url, model, i, n_tokens, extra) for i in range(k)])
                vals.append(sum(r['tokens'] for r in rs) / (time.perf_counter() - t0))
            agg[str(k)] = statistics.median(vals)
            if k == 8: agg['8_ttft_p50_s'] = statistics.median(r['ttft'] for r in rs)
    return {'ttft_s': statistics.median(s['ttft'] for s in singles), 'decode_tok_s': statistics.median(s['decode'] for s in singles),
            'tokens_per_request': singles[0]['tokens'], 'aggregate_tok_s': agg}


def run_server(cmd, health, model, n_tokens, reps, extra, **kw):
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(health, proc)
        return asyncio.run(bench_server(health.rsplit('/', 1)[0], model, n_tokens, reps, extra, **kw))
    finally:
        proc.terminate(); proc.wait(30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default='smollm2-135m-instruct'); ap.add_argument('--tokens', type=int, default=128)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--dtype', default='bfloat16')
    ap.add_argument('--reps', type=int, default=3); ap.add_argument('--skip-peer', action='store_true')
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    from hybrie.config import Catalog, Settings
    from hybrie.loader import gguf_cache, DTYPES
    res = Catalog().resolve(a.model)
    path = gguf_cache(res, Settings().cache_dir) if res.gguf_file else res.path
    sha = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    out = {'benchmark': 'chat', 'git_sha': sha, 'model': a.model, 'device': a.device, 'dtype': a.dtype, 'tokens_per_request': a.tokens,
           'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'torch': torch.__version__,
                       'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None},
           'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    print('raw generate ...', flush=True)
    out['generate'] = bench_generate(str(path), DTYPES[a.dtype], a.device, a.tokens, a.reps)
    print(json.dumps(out['generate']), flush=True)
    port = free_port()
    print('hybrie serve ...', flush=True)
    out['hybrie'] = run_server([str(Path(sys.executable).parent/'hybrie'), 'serve', '--port', str(port), '--model', a.model,
                                '--device', a.device, '--dtype', a.dtype], f'http://127.0.0.1:{port}/health', a.model, a.tokens,
                               a.reps, {'ignore_eos': True})
    print(json.dumps(out['hybrie']), flush=True)
    if not a.skip_peer:
        port = free_port()
        print('transformers serve --continuous-batching ...', flush=True)
        out['transformers_serve_cb'] = run_server([str(Path(sys.executable).parent/'transformers'), 'serve', '--continuous-batching',
                                                   '--dtype', a.dtype, '--device', a.device, '--port', str(port), str(path)],
                                                  f'http://localhost:{port}/health', str(path), a.tokens, a.reps, {})
        print(json.dumps(out['transformers_serve_cb']), flush=True)
    g, h, p = out['generate'], out['hybrie'], out.get('transformers_serve_cb')
    out['ratios'] = {'hybrie_vs_generate_decode_1': h['decode_tok_s'] / g['decode_tok_s'],
                     'hybrie_vs_generate_aggregate_8': h['aggregate_tok_s']['8'] / g['aggregate_tok_s']['8'],
                     'hybrie_8_vs_1_aggregate': h['aggregate_tok_s']['8'] / h['aggregate_tok_s']['1']}
    if p: out['ratios'] |= {'hybrie_vs_transformers_serve_aggregate_8': h['aggregate_tok_s']['8'] / p['aggregate_tok_s']['8'],
                            'hybrie_vs_transformers_serve_decode_1': h['decode_tok_s'] / p['decode_tok_s']}
    dst = Path(a.out) if a.out else ROOT/'benchmarks'/'results'/f'chat-{a.device.split(":")[0]}.json'
    dst.write_text(json.dumps(out, indent=2) + '\n')
    print(json.dumps(out['ratios'], indent=2)); print('wrote', dst)


if __name__ == '__main__': main()
