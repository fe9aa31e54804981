#!/usr/bin/env python3
"""Translation overhead of the Responses, Messages and legacy completions APIs against chat completions.

Every API is a translation onto the same internal request and chunks, so what each adds over chat completions is its
translation: parsing its body into a `ChatRequest`, folding the chunks into its own objects or events, and (Responses)
storing the response. This measures that, for the same request and the same answer, in one run:

- `http`: a real uvicorn server (the HybrIE app, `make_app`) in front of an engine that answers at once (20 text
  deltas, a finish, usage), so the model's time is out of the figures; a keep-alive client on a plain socket times each
  request to the last byte of its answer (full: the JSON body; streamed: the last chunk), so the client's own parsing
  (which grows with the bytes an API sends) stays out too. The four APIs are interleaved round by round, in a rotating
  order. `httpx_client` repeats it with httpx as the client, for comparison: there the client's own parsing (h11, in
  Python) is in the figures, and it grows with the bytes an API's stream carries.
- `translation`: the conversion functions alone, in process (body parse → `ChatRequest` → chunks folded → JSON text),
  for each API and for chat, interleaved the same way.

Added p50 = an API's p50 minus chat's p50 in the same run; beside it, the median of the paired differences (each
request minus the chat request of the same round), which a loaded machine's drift moves less. Target: ≤ 0.5 ms added
p50 for each API.
Run: python benchmarks/bench_apis.py [--rounds 400] ; writes benchmarks/results/apis.json
"""
import argparse, json, os, platform, socket, statistics, sys, threading, time
from pathlib import Path
from common import ROOT, free_port, git_sha

sys.path.insert(0, str(ROOT))
from hybrie.protocol import *  # noqa: E402
from hybrie.config import Settings  # noqa: E402
from hybrie.router import ChatRouter  # noqa: E402
from hybrie.runtime import Runtime  # noqa: E402
from hybrie.server import make_app  # noqa: E402
from hybrie import protocol_responses as pr, protocol_messages as pm, protocol_completions as pc  # noqa: E402

WORDS = 20
CHUNKS = [TextDelta('word ') for _ in range(WORDS)] + [Finish('stop'), Usage(12, WORDS)]


class InstantEngine:
    "Answers any request at once: 20 text deltas, a finish, usage (the same answer for every API)."
    def models(self): return [ModelInfo('fake', created=0)]
    async def chat(self, req):
        yield Executed('local', model=req.model)
        for c in CHUNKS: yield c


MSG = [{'role': 'user', 'content': 'Hello there, how are you?'}]
BODIES = {
    'chat': {'model': 'fake', 'messages': MSG, 'max_tokens': WORDS},
    'responses': {'model': 'fake', 'input': MSG[0]['content'], 'max_output_tokens': WORDS},
    'messages': {'model': 'fake', 'messages': MSG, 'max_tokens': WORDS},
    'completions': {'model': 'fake', 'prompt': MSG[0]['content'], 'max_tokens': WORDS},
}
PATHS = {'chat': '/v1/chat/completions', 'responses': '/v1/responses', 'messages': '/v1/messages', 'completions': '/v1/completions'}
APIS = list(BODIES)


# ---------------------------------------------------------------- over HTTP
def serve(port):
    import uvicorn
    rt = Runtime(Settings(), ChatRouter(InstantEngine(), {}))
    server = uvicorn.Server(uvicorn.Config(make_app(rt), host='127.0.0.1', port=port, log_level='warning', access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started: time.sleep(0.01)
    return server


class RawClient:
    "A keep-alive HTTP/1.1 client on a plain socket that reads each answer to its last byte: as little client time as can be."
    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path, body:dict) -> bytes:
        data = json.dumps(body).encode()
        self.sock.sendall(b'POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s' % (path.encode(), len(data), data))
        buf = b''
        while True:
            chunk = self.sock.recv(65536)
            if not chunk: raise ConnectionError('the server closed the connection')
            buf += chunk
            head, sep, rest = buf.partition(b'\r\n\r\n')
            if not sep: continue
            if b'transfer-encoding: chunked' in head.lower():
                if rest.endswith(b'0\r\n\r\n'): return buf
            else:
                n = int(head.lower().split(b'content-length: ')[1].split(b'\r\n')[0])
                if len(rest) >= n: return buf


class HttpxClient:
    "The same requests through httpx (h11: it parses the answer in Python, so its time grows with the bytes)."
    def __init__(self, port):
        import httpx
        self.c = httpx.Client(base_url=f'http://127.0.0.1:{port}', timeout=30)

    def post(self, path, body:dict) -> bytes:
        with self.c.stream('POST', path, json=body) as r:
            for _ in r.iter_raw(): pass
        return b'HTTP/1.1 %d' % r.status_code


def http_rounds(client, rounds, stream):
    "Per API, the latency (ms) of each request, the APIs interleaved in a rotating order."
    out = {a: [] for a in APIS}
    for i in range(rounds + 20):
        for a in APIS[i % 4:] + APIS[:i % 4]:
            body = BODIES[a] | ({'stream': True} if stream else {})
            t0 = time.perf_counter()
            resp = client.post(PATHS[a], body)
            dt = (time.perf_counter() - t0) * 1e3
            assert resp.startswith(b'HTTP/1.1 200'), (a, resp[:200])
            if i >= 20: out[a].append(dt)  # the first 20 rounds warm up
    return out


# ---------------------------------------------------------------- the translations alone
def translate(api, stream):
    "One request through its API's translation: body → ChatRequest → the answer's chunks folded → JSON text."
    body = BODIES[api] | {'stream': stream}
    if api == 'chat':
        req = from_chat_request(parse_chat_request(body), {})
        if stream: return ''.join(json.dumps(to_stream_chunk(req, c, first=i == 0)) for i, c in enumerate(CHUNKS[:-1]))
        acc = ChatCompletionAccumulator(req)
        for c in CHUNKS: acc.add(c)
        return json.dumps(acc.response())
    if api == 'responses':
        r = pr.parse_responses_request(body); req = pr.from_responses_request(r, {})
        b = pr.ResponseBuilder(r, req)
        evs = b.opening() + [e for c in CHUNKS for e in b.add(c)] + b.closing()
        return ''.join(json.dumps(e) for e in evs) if stream else json.dumps(b.response())
    if api == 'messages':
        r = pm.parse_messages_request(body); req = pm.from_messages_request(r, {})
        b = pm.MessageBuilder(r, req)
        evs = b.opening() + [e for c in CHUNKS for e in b.add(c)] + b.closing()
        return ''.join(json.dumps(e) for e in evs) if stream else json.dumps(b.message())
    r = pc.parse_completion_request(body); reqs = pc.from_completion_request(r, {})
    ch = pc.CompletionChoices(r, reqs)
    if stream: return ''.join(json.dumps(e) for c in CHUNKS for e in ch.chunks(0, c))
    for c in CHUNKS: ch.add(0, c)
    return json.dumps(ch.response())


def translation_rounds(rounds, stream):
    out = {a: [] for a in APIS}
    for i in range(rounds + 50):
        for a in APIS[i % 4:] + APIS[:i % 4]:
            t0 = time.perf_counter(); translate(a, stream); dt = (time.perf_counter() - t0) * 1e3
            if i >= 50: out[a].append(dt)
    return out


def summary(samples):
    "p50 and p90 of each API; added p50 = its p50 minus chat's, and the median of its paired differences with chat (same round)."
    s = {}
    for a, xs in samples.items():
        ys = sorted(xs)
        s[a] = {'n': len(ys), 'p50_ms': round(statistics.median(ys), 4), 'p90_ms': round(ys[int(len(ys) * 0.9)], 4)}
    for a in APIS[1:]:
        s[a]['added_p50_ms'] = round(s[a]['p50_ms'] - s['chat']['p50_ms'], 4)
        s[a]['paired_added_p50_ms'] = round(statistics.median(x - c for x, c in zip(samples[a], samples['chat'])), 4)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=400)
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'apis.json'))
    a = ap.parse_args()
    port = free_port(); server = serve(port)
    results = {}
    for stream in (False, True):
        mode = 'stream' if stream else 'full'
        results[f'http_{mode}'] = summary(http_rounds(RawClient(port), a.rounds, stream))
        results[f'httpx_client_{mode}'] = summary(http_rounds(HttpxClient(port), a.rounds, stream))
        results[f'translation_{mode}'] = summary(translation_rounds(a.rounds * 2, stream))
    server.should_exit = True
    judged = [k for k in results if not k.startswith('httpx')]  # the target is the server's translation: the raw client's figures
    worst = max(results[k][api]['added_p50_ms'] for k in judged for api in APIS[1:])
    worst_paired = max(results[k][api]['paired_added_p50_ms'] for k in judged for api in APIS[1:])
    out = {'benchmark': 'apis', 'git_sha': git_sha(), 'time': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
           'machine': {'platform': platform.platform(), 'python': platform.python_version(), 'cpus': os.cpu_count(),
                       'load_avg': [round(x, 2) for x in os.getloadavg()]},
           'params': {'rounds': a.rounds, 'answer': f'{WORDS} text deltas + finish + usage', 'engine': 'InstantEngine (answers at once)'},
           'target': {'added_p50_ms': 0.5, 'worst_added_p50_ms': worst, 'worst_paired_added_p50_ms': worst_paired, 'met': worst <= 0.5},
           'results': results}
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')
    for k, v in results.items():
        print(k, '  '.join(f"{api}: p50 {v[api]['p50_ms']:.3f} ms" + (f" ({v[api]['added_p50_ms']:+.3f}, paired {v[api]['paired_added_p50_ms']:+.3f})" if api != 'chat' else '') for api in APIS))
    print(f'worst added p50: {worst:.3f} ms, paired {worst_paired:.3f} ms (target 0.5 ms) ->', 'met' if worst <= 0.5 else 'missed')


if __name__ == '__main__': main()
