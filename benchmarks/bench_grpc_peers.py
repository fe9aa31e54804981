#!/usr/bin/env python3
"""gRPC against HTTP, and one compute-peer hop against calling the peer directly: added latency and throughput, in one run.

Targets, all answering the same chat request (`gpt-4.1-mini`, "Say something.", 20 words):
- `direct`:   a fast loopback upstream with canned OpenAI answers (the one `bench_cloud_overhead.py` uses);
- `http`:     `hybrie serve --no-local` in cloud mode in front of it, over HTTP (aiohttp client; SSE for streams);
- `grpc`:     the same process over gRPC (`grpc.aio` client; `ChatCompletion` / `ChatCompletionStream`);
- `hop`:      a second `hybrie serve --no-local` with the first as its compute peer `b`, asked over HTTP with
              `x-hybrie-preferred-peer-id: b`: one peer hop in front of `http`.
For full and streamed requests at 1 and 8 concurrent clients, rounds interleave the targets (each round runs
--requests requests per target), and each target's latencies are pooled: p50/p99, and requests/s while it ran.
Added latency: `http` and `grpc` minus `direct`; the hop: `hop` minus `http`. Then the bundled local model
(`hybrie serve` with gRPC) answers a greedy 16-token request over HTTP and gRPC, interleaved, at 1 and 8 concurrent
streams: p50 latency and generated tokens/s, and their ratio. Targets: gRPC's added p50 <= HTTP's; one hop <= 2 ms p50.
Writes benchmarks/results/grpc_peers.json.

Run: python benchmarks/bench_grpc_peers.py [--rounds 8] [--requests 25] [--model-rounds 2 (0: no local model part)]
"""
import argparse, asyncio, json, multiprocessing, os, platform, statistics, time
import aiohttp, grpc
from google.protobuf import json_format
from common import ROOT, free_port, git_sha, start_server
from bench_cloud_overhead import MODEL, CHUNKS, run_upstream
from hybrie.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg

LOCAL = 'smollm2-135m-instruct'


def pct(xs, p): return sorted(xs)[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else None


class Target:
    "One way of asking: `call(stream)` does one request and returns (seconds, tokens)."
    def __init__(self, name): self.name, self.lat, self.busy, self.n, self.tokens = name, [], 0.0, 0, 0


async def http_call(session, url, body, headers, stream):
    t0 = time.perf_counter(); tokens = 0
    async with session.post(url + '/v1/chat/completions', data=json.dumps(body | {'stream': stream}), headers=headers) as r:
        assert r.status == 200, (url, r.status, await r.text())
        if stream:
            async for line in r.content:
                if line.startswith(b'data: {') and b'"content"' in line: tokens += 1
        else: tokens = (await r.json())['usage']['completion_tokens']
    return time.perf_counter() - t0, tokens


async def grpc_call(stub, req, stream):
    t0 = time.perf_counter(); tokens = 0
    if stream:
        async for c in stub.ChatCompletionStream(req):
            if c.choices and c.choices[0].delta.content: tokens += 1
    else: tokens = (await stub.ChatCompletion(req)).usage.completion_tokens
    return time.perf_counter() - t0, tokens


async def run(target, fn, n, conc):
    "`n` requests through `fn`, `conc` at a time; latencies and busy time go to `target`."
    left = list(range(n))
    async def worker():
        while left:
            left.pop()
            dt, tok = await fn()
            target.lat.append(dt); target.tokens += tok; target.n += 1
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    target.busy += time.perf_counter() - t0


def summary(t):
    return {'p50_ms': round(pct(t.lat, 50) * 1000, 3), 'p99_ms': round(pct(t.lat, 99) * 1000, 3), 'requests': t.n,
            'rps': round(t.n / t.busy, 1), 'tokens_per_s': round(t.tokens / t.busy, 1)}


async def bench_front(a, upstream, g, hop):
    body = {'model': MODEL, 'messages': [{'role': 'user', 'content': 'Say something.'}]}
    req = json_format.ParseDict(body, pb.ChatCompletionRequest())
    out = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s, grpc.aio.insecure_channel(g.grpc) as ch:
        stub = pbg.InferenceStub(ch)
        calls = {'direct': lambda st: http_call(s, f'http://127.0.0.1:{upstream}', body, {'content-type': 'application/json'}, st),
                 'http': lambda st: http_call(s, g.root, body, {'content-type': 'application/json'}, st),
                 'grpc': lambda st: grpc_call(stub, req, st),
                 'hop': lambda st: http_call(s, hop.root, body, {'content-type': 'application/json', 'x-hybrie-preferred-peer-id': 'b'}, st)}
        for stream in (False, True):
            for conc in (1, 8):
                for st in calls.values(): await run(Target('warm'), lambda f=st: f(stream), 3 * conc, conc)  # connections, caches
                ts = {k: Target(k) for k in calls}
                for r in range(a.rounds):
                    order = list(calls) if r % 2 == 0 else list(calls)[::-1]
                    for k in order: await run(ts[k], lambda f=calls[k]: f(stream), a.requests * conc, conc)
                res = {k: summary(t) for k, t in ts.items()}
                d = res['direct']['p50_ms']
                res['added_p50_ms'] = {'http': round(res['http']['p50_ms'] - d, 3), 'grpc': round(res['grpc']['p50_ms'] - d, 3),
                                       'hop': round(res['hop']['p50_ms'] - res['http']['p50_ms'], 3)}
                res['grpc_over_http_rps'] = round(res['grpc']['rps'] / res['http']['rps'], 2)
                out[f'{"stream" if stream else "full"}_c{conc}'] = res
                print(f'{"stream" if stream else "full"} c={conc}:', json.dumps(res['added_p50_ms']), 'rps',
                      {k: res[k]['rps'] for k in calls}, flush=True)
    return out


async def bench_model(a, l, hop):
    body = {'model': LOCAL, 'messages': [{'role': 'user', 'content': 'Write a long story about a lighthouse keeper.'}],
            'max_tokens': 16, 'temperature': 0, 'ignore_eos': True}
    req = json_format.ParseDict(body, pb.ChatCompletionRequest())
    out = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s, grpc.aio.insecure_channel(l.grpc) as ch:
        stub = pbg.InferenceStub(ch)
        calls = {'http': lambda: http_call(s, l.root, body, {'content-type': 'application/json'}, True),
                 'grpc': lambda: grpc_call(stub, req, True),
                 'hop': lambda: http_call(s, hop.root, body, {'content-type': 'application/json', 'x-hybrie-preferred-peer-id': 'l'}, True)}
        for conc in (1, 8):
            names = list(calls) if conc == 1 else ['http', 'grpc']
            for k in names: await run(Target('warm'), calls[k], conc, conc)
            ts = {k: Target(k) for k in names}
            for r in range(a.model_rounds):
                for k in (names if r % 2 == 0 else names[::-1]): await run(ts[k], calls[k], conc, conc)
            res = {k: summary(t) for k, t in ts.items()}
            res['grpc_over_http_tokens_per_s'] = round(res['grpc']['tokens_per_s'] / res['http']['tokens_per_s'], 3)
            res['grpc_minus_http_p50_ms'] = round(res['grpc']['p50_ms'] - res['http']['p50_ms'], 2)
            if 'hop' in res: res['hop_minus_http_p50_ms'] = round(res['hop']['p50_ms'] - res['http']['p50_ms'], 2)
            out[f'stream_c{conc}'] = res
            print(f'local model c={conc}:', {k: (res[k]['p50_ms'], res[k]['tokens_per_s']) for k in names}, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=8); ap.add_argument('--requests', type=int, default=25)
    ap.add_argument('--model-rounds', type=int, default=2, help='rounds with the bundled model (0: leave that part out)')
    a = ap.parse_args()
    upstream = free_port()
    up = multiprocessing.Process(target=run_upstream, args=(upstream,), daemon=True); up.start()
    cloud = {'OPENAI_API_KEY': 'sk-bench', 'OPENAI_BASE_URL': f'http://127.0.0.1:{upstream}/v1', 'HYBRIE_EXECUTION_MODE': 'cloud',
             'HYBRIE_CLOUD_PROVIDER': 'openai', 'HYBRIE_CLOUD_MAX_RETRIES': '0'}
    gport, lport = free_port(), free_port()
    t_start = time.time()
    try:
        with start_server('--no-local', '--grpc-port', str(gport), '--peer-id', 'b', '--log-level', 'warning', env=cloud) as g:
            g.grpc = f'127.0.0.1:{gport}'
            with start_server('--no-local', '--peer-id', 'a', '--peer', f'b={g.root}', '--log-level', 'warning', env=cloud) as hop:
                front = asyncio.run(bench_front(a, upstream, g, hop))
        model = {}
        if a.model_rounds:  # the bundled model: slow on a busy CPU, so it can be left out (--model-rounds 0)
            with start_server('--grpc-port', str(lport), '--peer-id', 'l', '--log-level', 'warning') as l:
                l.grpc = f'127.0.0.1:{lport}'
                with start_server('--no-local', '--peer-id', 'a', '--peer', f'l={l.root}', '--log-level', 'warning') as hop:
                    model = asyncio.run(bench_model(a, l, hop))
    finally: up.terminate()
    f1, s1 = front['full_c1'], front['stream_c1']
    result = {
        'benchmark': 'grpc_peers', 'git': git_sha(), 'when': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t_start)),
        'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'load_avg_at_end': os.getloadavg()},
        'params': {'rounds': a.rounds, 'requests_per_round_per_client': a.requests, 'model_rounds': a.model_rounds,
                   'upstream_chunks': CHUNKS, 'local_model': LOCAL, 'local_max_tokens': 16,
                   'clients': 'aiohttp (HTTP, SSE) and grpc.aio (gRPC), one process, asyncio'},
        'front_end': front, 'local_model': model,
        'summary': {
            'grpc_added_p50_ms_full_c1': f1['added_p50_ms']['grpc'], 'http_added_p50_ms_full_c1': f1['added_p50_ms']['http'],
            'grpc_added_p50_ms_stream_c1': s1['added_p50_ms']['grpc'], 'http_added_p50_ms_stream_c1': s1['added_p50_ms']['http'],
            'grpc_added_le_http_full_c1': f1['added_p50_ms']['grpc'] <= f1['added_p50_ms']['http'],
            'grpc_added_le_http_stream_c1': s1['added_p50_ms']['grpc'] <= s1['added_p50_ms']['http'],
            'grpc_over_http_rps': {k: v['grpc_over_http_rps'] for k, v in front.items()},
            'peer_hop_added_p50_ms_full_c1': f1['added_p50_ms']['hop'], 'peer_hop_added_p50_ms_stream_c1': s1['added_p50_ms']['hop'],
            'peer_hop_le_2ms_full_c1': f1['added_p50_ms']['hop'] <= 2.0,
            'local_model_grpc_over_http_tokens_per_s': {k: v['grpc_over_http_tokens_per_s'] for k, v in model.items()},
            'local_model_hop_minus_http_p50_ms_c1': model.get('stream_c1', {}).get('hop_minus_http_p50_ms')}}
    out = ROOT/'benchmarks'/'results'/'grpc_peers.json'
    out.write_text(json.dumps(result, indent=1) + '\n')
    print(json.dumps(result['summary'], indent=1)); print('wrote', out)


if __name__ == '__main__': main()
