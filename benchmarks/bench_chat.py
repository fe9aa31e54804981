#!/usr/bin/env python3
"""Chat serving speed: HybrIE against raw transformers `generate` and `transformers serve`, in one run.

Figures (all on the same weights and dtype, on this machine):
- raw `generate`: time to first token (prefill + one token) and decode tokens/s at batch 1; aggregate tokens/s at batch 8;
- `hybrie serve`: time to first token and decode tokens/s of one stream; aggregate tokens/s at 1, 4 and 8 concurrent streams;
- `transformers serve --continuous-batching` (the peer to beat): the same through its OpenAI API.
Every request generates exactly --tokens tokens (`ignore_eos` for HybrIE, `min_new_tokens` for generate); the peer has
no such switch, so its tokens are counted as received. `hybrie serve` runs as a user runs it: with its own dtype choice
unless --dtype is given; generate and the peer use the dtype it chose. Both servers stay up for the whole run and the
three contenders take turns measurement by measurement, so a slow spell of a shared machine hits all of them alike;
figures are medians over --reps. Writes JSON to benchmarks/results/.

    python benchmarks/bench_chat.py [--tokens 128] [--reps 5] [--device cpu] [--dtype auto] [--skip-peer]
"""
import argparse, asyncio, json, os, platform, re, statistics, subprocess, time
from pathlib import Path
import httpx, torch
from common import BIN, ENV, ROOT, free_port, git_sha, msgs, one_stream, wait_healthy


# ---------------------------------------------------------------- raw transformers generate
class Generate:
    "Raw transformers `generate` on the same weights, in this process."
    def __init__(self, path, dtype, device):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.device = device
        self.tok = AutoTokenizer.from_pretrained(path); self.tok.padding_side = 'left'
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        self.x = {}
        for b in (1, 8): self.run(b, 4)  # warm-up

    def inputs(self, batch):
        if batch not in self.x:
            texts = [self.tok.apply_chat_template(msgs(i), tokenize=False, add_generation_prompt=True) for i in range(batch)]
            self.x[batch] = self.tok(texts, return_tensors='pt', padding=True, add_special_tokens=False).to(self.device)
        return self.x[batch]

    def run(self, batch, n):
        "Seconds to generate `n` tokens for each of `batch` prompts."
        x = self.inputs(batch)
        if self.device.startswith('cuda'): torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            self.model.generate(**x, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
        if self.device.startswith('cuda'): torch.cuda.synchronize()
        return time.perf_counter() - t

    def single(self, n):
        ttft = self.run(1, 1); full = self.run(1, n)
        return {'ttft': ttft, 'decode': (n - 1) / (full - ttft), 'tokens': n}

    def aggregate(self, k, n): return k * n / self.run(k, n)


# ---------------------------------------------------------------- an OpenAI-compatible server
class Server:
    "An OpenAI-compatible server process, measured through its streaming chat API."
    def __init__(self, cmd, url, model, extra):
        self.url, self.model, self.extra = url, model, extra
        self.log = open(f'/tmp/bench-chat-{Path(cmd[0]).name}.log', 'w+')
        self.proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_healthy(url + '/health', self.proc)
        self.client = httpx.AsyncClient(timeout=600)
        asyncio.get_event_loop().run_until_complete(one_stream(self.client, url, model, 0, 8, extra))  # warm-up

    def stderr(self): self.log.seek(0); return self.log.read()

    def single(self, n):
        return asyncio.get_event_loop().run_until_complete(one_stream(self.client, self.url, self.model, 0, n, self.extra))

    def aggregate(self, k, n):
        "Tokens/s over `k` concurrent streams, and their median time to first token."
        async def go():
            t0 = time.perf_counter()
            rs = await asyncio.gather(*[one_stream(self.client, self.url, self.model, i, n, self.extra) for i in range(k)])
            return sum(r['tokens'] for r in rs) / (time.perf_counter() - t0), statistics.median(r['ttft'] for r in rs)
        return asyncio.get_event_loop().run_until_complete(go())

    def close(self): self.proc.terminate(); self.proc.wait(30)


def summarize(singles, aggs):
    out = {'ttft_s': statistics.median(s['ttft'] for s in singles), 'decode_tok_s': statistics.median(s['decode'] for s in singles),
           'tokens_per_request': singles[0]['tokens'], 'aggregate_tok_s': {}}
    for k, vals in aggs.items():
        out['aggregate_tok_s'][str(k)] = statistics.median(v[0] if isinstance(v, tuple) else v for v in vals)
        if isinstance(vals[0], tuple): out['aggregate_tok_s'][f'{k}_ttft_p50_s'] = statistics.median(v[1] for v in vals)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default='smollm2-135m-instruct'); ap.add_argument('--tokens', type=int, default=128)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--dtype', default='auto')
    ap.add_argument('--reps', type=int, default=5); ap.add_argument('--skip-peer', action='store_true')
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    from hybrie.config import Catalog, Settings
    from hybrie.loader import gguf_cache, DTYPES
    res = Catalog().resolve(a.model)
    path = gguf_cache(res, Settings().cache_dir) if res.gguf_file else res.path
    sha = git_sha(short=True)
    asyncio.set_event_loop(asyncio.new_event_loop())
    port = free_port()
    print('hybrie serve ...', flush=True)
    cmd = [str(BIN/'hybrie'), 'serve', '--port', str(port), '--grpc-port', '0', '--model', a.model, '--device', a.device]
    contenders = {'hybrie': Server(cmd + (['--dtype', a.dtype] if a.dtype != 'auto' else []), f'http://127.0.0.1:{port}',
                                   a.model, {'ignore_eos': True})}
    dtype = re.search(r'\((\w+)\) in', contenders['hybrie'].stderr()).group(1)  # "loaded M on cpu (bfloat16) in 0.5s"
    print('generate in', dtype, '...', flush=True)
    contenders['generate'] = Generate(str(path), DTYPES[dtype], a.device)
    if not a.skip_peer:
        port = free_port()
        print('transformers serve --continuous-batching ...', flush=True)
        contenders['transformers_serve_cb'] = Server([str(BIN/'transformers'), 'serve', '--continuous-batching', '--dtype', dtype,
                                                      '--device', a.device, '--port', str(port), str(path)],
                                                     f'http://localhost:{port}', str(path), {})
    singles, aggs = {c: [] for c in contenders}, {c: {} for c in contenders}
    try:
        for rep in range(a.reps):
            for c, x in contenders.items(): singles[c].append(x.single(a.tokens))
            for k in (1, 4, 8):
                for c, x in contenders.items(): aggs[c].setdefault(k, []).append(x.aggregate(k, a.tokens))
            print(f'rep {rep+1}/{a.reps}:', {c: round(singles[c][-1]['decode'], 1) for c in contenders},
                  {c: round(aggs[c][8][-1][0] if isinstance(aggs[c][8][-1], tuple) else aggs[c][8][-1], 1) for c in contenders}, flush=True)
    finally:
        for x in contenders.values():
            if isinstance(x, Server): x.close()
    out = {'benchmark': 'chat', 'git_sha': sha, 'model': a.model, 'device': a.device, 'dtype': dtype, 'tokens_per_request': a.tokens,
           'reps': a.reps, 'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(), 'torch': torch.__version__,
                                      'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None},
           'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    for c in contenders: out[c] = summarize(singles[c], aggs[c])
    g, h, p = out['generate'], out['hybrie'], out.get('transformers_serve_cb')
    out['ratios'] = {'hybrie_vs_generate_decode_1': h['decode_tok_s'] / g['decode_tok_s'],
                     'hybrie_vs_generate_aggregate_8': h['aggregate_tok_s']['8'] / g['aggregate_tok_s']['8'],
                     'hybrie_8_vs_1_aggregate': h['aggregate_tok_s']['8'] / h['aggregate_tok_s']['1']}
    if p: out['ratios'] |= {'hybrie_vs_transformers_serve_aggregate_8': h['aggregate_tok_s']['8'] / p['aggregate_tok_s']['8'],
                            'hybrie_vs_transformers_serve_decode_1': h['decode_tok_s'] / p['decode_tok_s']}
    dst = Path(a.out) if a.out else ROOT/'benchmarks'/'results'/f'chat-{a.device.split(":")[0]}.json'
    dst.write_text(json.dumps(out, indent=2) + '\n')
    print(json.dumps({c: out[c] for c in contenders}, indent=1)); print(json.dumps(out['ratios'], indent=2)); print('wrote', dst)


if __name__ == '__main__': main()
