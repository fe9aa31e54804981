#!/usr/bin/env python3
"""Cloud overhead: the latency HybrIE adds in front of a provider, and its calls/s per worker, against LiteLLM's proxy.

Three targets answer the same OpenAI chat-completions request, in one run, interleaved:
- `direct`:  a fast loopback upstream (a raw asyncio server with canned OpenAI answers: one JSON, or 20 SSE content chunks);
- `hybrie`:  `hybrie serve` (one uvicorn worker; cloud execution by default through env) whose router sends the request
             through the `openai` SDK to that upstream (`--server app`: the same app without a local model loaded);
- `litellm`: LiteLLM's proxy (`litellm --num_workers 1`) in front of the same upstream.
For each of full/streamed and concurrency 1/32, `wrk` (compiled load generator) runs for --seconds and reports p50/p99
latency and requests/s. Added latency = target minus `direct` at the same concurrency. Writes JSON to benchmarks/results/.

Setup (benchmark-only; neither is a HybrIE dependency):
    apt-get install -y wrk
    python -m venv ~/.cache/hybrie-bench/litellm-venv && ~/.cache/hybrie-bench/litellm-venv/bin/pip install 'litellm[proxy]'
Run:
    python benchmarks/bench_cloud_overhead.py [--seconds 5] [--litellm ~/.cache/hybrie-bench/litellm-venv/bin/litellm]
LiteLLM runs offline with LITELLM_MASTER_KEY set and LITELLM_LOCAL_MODEL_COST_MAP=True (the script sets both).
"""
import argparse, asyncio, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path
from common import BIN, ENV, NO_CONFIG, ROOT, free_port, git_sha

MODEL, CHUNKS = 'gpt-4.1-mini', 20
LITELLM_DEFAULT = Path.home()/'.cache'/'hybrie-bench'/'litellm-venv'/'bin'/'litellm'
LUA = r'''
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
'''


# ---------------------------------------------------------------- the fast upstream
def _canned():
    base = {'id': 'chatcmpl-bench', 'created': 1, 'model': MODEL}
    usage = {'prompt_tokens': 12, 'completion_tokens': CHUNKS, 'total_tokens': 12 + CHUNKS}
    full = json.dumps({**base, 'object': 'chat.completion', 'usage': usage, 'choices': [
        {'index': 0, 'message': {'role': 'assistant', 'content': 'word ' * CHUNKS}, 'finish_reason': 'stop'}]}).encode()
    ck = lambda ch, u=None: 'data: ' + json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': ch, **({'usage': u} if u else {})}) + '\n\n'
    events = [ck([{'index': 0, 'delta': {'role': 'assistant', 'content': 'word '}, 'finish_reason': None}])]
    events += [ck([{'index': 0, 'delta': {'content': 'word '}, 'finish_reason': None}]) for _ in range(CHUNKS - 1)]
    events += [ck([{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]), ck([], usage), 'data: [DONE]\n\n']
    resp_full = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n' % len(full) + full
    head = b'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n'
    chunks = [b'%x\r\n%s\r\n' % (len(e.encode()), e.encode()) for e in events] + [b'0\r\n\r\n']
    return resp_full, head, chunks


class Upstream(asyncio.Protocol):
    "HTTP/1.1 keep-alive server answering any POST with a canned chat completion (SSE when the body asks to stream)."
    FULL, HEAD, CHUNKS = _canned()
    def connection_made(self, t): self.t, self.buf = t, b''
    def data_received(self, data):
        self.buf += data
        while True:
            i = self.buf.find(b'\r\n\r\n')
            if i < 0: return
            head = self.buf[:i].lower()
            j = head.find(b'content-length:')
            n = int(head[j+15:head.find(b'\r\n', j) if head.find(b'\r\n', j) > 0 else None]) if j >= 0 else 0
            if len(self.buf) < i + 4 + n: return
            body, self.buf = self.buf[i+4:i+4+n], self.buf[i+4+n:]
            if json.loads(body or b'{}').get('stream'):
                self.t.write(self.HEAD)
                for c in self.CHUNKS: self.t.write(c)
            else: self.t.write(self.FULL)


def run_upstream(port):
    try: import uvloop; uvloop.install()
    except ImportError: pass
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(loop.create_server(Upstream, '127.0.0.1', port, backlog=1024))
    loop.run_forever()


# ---------------------------------------------------------------- HybrIE with cloud config only
def run_hybrie(port, upstream):
    "The HybrIE app with no local model: the runtime built without one, over the configured OpenAI provider."
    os.environ.update({'OPENAI_API_KEY': 'sk-bench', 'OPENAI_BASE_URL': f'http://127.0.0.1:{upstream}/v1',
                       'HYBRIE_EXECUTION_MODE': 'cloud', 'HYBRIE_CLOUD_PROVIDER': 'openai', 'HYBRIE_CLOUD_MAX_RETRIES': '0'})
    import uvicorn
    from hybrie.config import Settings
    from hybrie.runtime import build_runtime
    from hybrie.server import make_app
    app = make_app(build_runtime(Settings(), local=False))
    uvicorn.run(app, host='127.0.0.1', port=port, log_level='warning', access_log=False, loop='uvloop', http='httptools')


def litellm_proc(exe, port, upstream, tmp):
    cfg = Path(tmp)/'litellm.yaml'
    cfg.write_text(f'''model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: sk-bench
litellm_settings:
  drop_params: true
  telemetry: false
''')
    env = {**os.environ, 'LITELLM_MASTER_KEY': 'sk-litellm-bench', 'LITELLM_LOCAL_MODEL_COST_MAP': 'True', 'LITELLM_LOG': 'ERROR',
           'LITELLM_TELEMETRY': 'False', 'DISABLE_SCHEMA_UPDATE': 'true'}
    return subprocess.Popen([str(exe), '--config', str(cfg), '--host', '127.0.0.1', '--port', str(port), '--num_workers', '1'],
                            stdout=open(Path(tmp)/'litellm.log', 'w'), stderr=subprocess.STDOUT, env=env)


# ---------------------------------------------------------------- measuring
def body(stream): return json.dumps({'model': MODEL, 'messages': [{'role': 'user', 'content': 'Say something.'}], 'stream': stream})


def check(url, key, stream):
    "One request through `url`, checked, so errors are never timed."
    import httpx
    r = httpx.post(url, content=body(stream), headers={'content-type': 'application/json', 'authorization': f'Bearer {key}'}, timeout=30)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    if stream: assert r.text.count('word') == CHUNKS and '[DONE]' in r.text, r.text[:300]
    else: assert r.json()['choices'][0]['message']['content'] == 'word ' * CHUNKS


def wrk(url, key, stream, conns, seconds, lua):
    threads = 1 if conns == 1 else 2
    out = subprocess.run(['wrk', '-t', str(threads), '-c', str(conns), '-d', f'{seconds}s', '--timeout', '10s', '-s', lua, url],
                         capture_output=True, text=True, env={**os.environ, 'BENCH_BODY': body(stream), 'BENCH_KEY': key})
    line = next((l for l in out.stdout.splitlines() if l.startswith('RESULT ')), None)
    if line is None: raise RuntimeError(out.stdout + out.stderr)
    r = json.loads(line[7:])
    r['rps'] = r['requests'] / (r['duration_us'] / 1e6)
    return r


def wait_up(url, proc, key, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f'{url}: process exited with {proc.returncode}')
        try: check(url, key, False); return
        except Exception: time.sleep(0.5)
    raise RuntimeError(f'{url} did not come up')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seconds', type=int, default=5)
    ap.add_argument('--litellm', default=str(LITELLM_DEFAULT), help='the litellm CLI (skip LiteLLM if missing)')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'cloud_overhead.json'))
    ap.add_argument('--server', choices=('cli', 'app'), default='cli',
                    help='cli: `hybrie serve` (loads the default local model too); app: make_app + build_runtime with no local model')
    ap.add_argument('--role', help=argparse.SUPPRESS); ap.add_argument('--port', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--upstream', type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == 'upstream': return run_upstream(a.port)
    if a.role == 'hybrie': return run_hybrie(a.port, a.upstream)
    if not shutil.which('wrk'): sys.exit('wrk is missing: apt-get install -y wrk')

    procs, tmp = [], tempfile.mkdtemp(prefix='bench-cloud-')
    lua = Path(tmp)/'post.lua'; lua.write_text(LUA)
    me = [sys.executable, __file__]
    up, hp, lp = free_port(), free_port(), free_port()
    try:
        procs.append(subprocess.Popen(me + ['--role', 'upstream', '--port', str(up)]))
        if a.server == 'cli':
            env = {**ENV, **NO_CONFIG, 'OPENAI_API_KEY': 'sk-bench', 'OPENAI_BASE_URL': f'http://127.0.0.1:{up}/v1',
                   'HYBRIE_EXECUTION_MODE': 'cloud', 'HYBRIE_CLOUD_PROVIDER': 'openai', 'HYBRIE_CLOUD_MAX_RETRIES': '0'}
            procs.append(subprocess.Popen([str(BIN/'hybrie'), 'serve', '--port', str(hp), '--grpc-port', '0', '--log-level', 'warning'],
                                          env=env, stdout=open(Path(tmp)/'hybrie.log', 'w'), stderr=subprocess.STDOUT))
        else: procs.append(subprocess.Popen(me + ['--role', 'hybrie', '--port', str(hp), '--upstream', str(up)]))
        targets = {'direct': (f'http://127.0.0.1:{up}/v1/chat/completions', 'sk-bench', procs[0]),
                   'hybrie': (f'http://127.0.0.1:{hp}/v1/chat/completions', 'unused', procs[1])}
        if Path(a.litellm).exists():
            procs.append(litellm_proc(a.litellm, lp, up, tmp))
            targets['litellm'] = (f'http://127.0.0.1:{lp}/v1/chat/completions', 'sk-litellm-bench', procs[2])
        else: print(f'LiteLLM not found at {a.litellm}; measuring without it', file=sys.stderr)
        for name, (url, key, p) in targets.items():
            wait_up(url, p, key); check(url, key, True)
            for _ in range(50): check(url, key, False)  # warm up connections and code paths
        results = {}
        for stream in (False, True):
            for conns in (1, 32):
                cfg = f'{"stream" if stream else "full"}_c{conns}'
                results[cfg] = {}
                for name, (url, key, _) in targets.items():
                    r = wrk(url, key, stream, conns, a.seconds, str(lua))
                    results[cfg][name] = r
                    print(f'{cfg:10} {name:8} p50 {r["p50_us"]/1000:7.2f} ms  p99 {r["p99_us"]/1000:7.2f} ms  {r["rps"]:8.0f} req/s'
                          f'  errors {r["errors"]} non2xx {r["non2xx"]}', file=sys.stderr, flush=True)
                d = results[cfg]['direct']
                for name in targets:
                    if name == 'direct': continue
                    t = results[cfg][name]
                    t['added_p50_ms'] = (t['p50_us'] - d['p50_us']) / 1000
                    t['added_p99_ms'] = (t['p99_us'] - d['p99_us']) / 1000
        summary = {}
        for cfg, r in results.items():
            s = {f'{n}_added_p50_ms': r[n]['added_p50_ms'] for n in r if n != 'direct'}
            s |= {f'{n}_added_p99_ms': r[n]['added_p99_ms'] for n in r if n != 'direct'}
            s |= {f'{n}_rps': r[n]['rps'] for n in r}
            if 'litellm' in r: s['hybrie_over_litellm_rps'] = r['hybrie']['rps'] / r['litellm']['rps']
            summary[cfg] = s
        out = {'benchmark': 'cloud_overhead', 'git_sha': git_sha(), 'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
               'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'python': platform.python_version(),
                           'note': 'CPU shared with other workloads; wrk, the upstream and the proxy under test share these cores'},
               'params': {'seconds': a.seconds, 'stream_chunks': CHUNKS, 'model': MODEL, 'workers': 1, 'hybrie_server': a.server,
                          'load_generator': 'wrk ' + subprocess.run(['wrk', '-v'], capture_output=True, text=True).stdout.split('\n')[0],
                          'litellm': subprocess.run([str(Path(a.litellm).parent/'pip'), 'show', 'litellm'], capture_output=True, text=True).stdout.split('\n')[1]
                                     if 'litellm' in targets else None},
               'targets': {'direct': 'raw asyncio loopback upstream (canned answers)',
                           'hybrie': ('`hybrie serve`' if a.server == 'cli' else 'make_app + build_runtime(local=False), no local model') + ', 1 uvicorn worker, openai SDK upstream',
                           'litellm': 'litellm proxy, --num_workers 1'},
               'summary': summary, 'results': results}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1))
        print(json.dumps(summary, indent=1))
        print(f'wrote {a.out}', file=sys.stderr)
    finally:
        for p in procs:
            p.terminate()
            try: p.wait(10)
            except subprocess.TimeoutExpired: p.kill()


if __name__ == '__main__': main()
