#!/usr/bin/env python3
"""Console overhead: the latency `hybrie console` adds in front of an upstream with auth, routing and metering on, and its
calls/s per worker, against calling the upstream directly and against LiteLLM's proxy on the same upstream.

Targets, each answering the same OpenAI chat-completions request in one run, interleaved per configuration:
- `direct`:           a fast loopback upstream (raw asyncio, canned OpenAI answers: one JSON, or 20 SSE chunks + usage);
- `console_sqlite`:   `hybrie console` (1 worker, SQLite in WAL mode) with an account whose `openai-compatible` credential
                      points at the upstream (BYOK: the key checked and admitted, a usage record opened and closed per call);
- `managed_sqlite`:   the same console, the model served by Managed Inference (`--managed` = the upstream);
- `console_postgres`: BYOK as above on a throwaway PostgreSQL cluster (initdb/pg_ctl, fsync off as in the tests);
- `litellm`:          LiteLLM's proxy (`litellm --num_workers 1`, no database: LiteLLM meters spend only with one) in front of the upstream.
`wrk` drives each for --seconds at concurrency 1 and 32; added latency = target p50/p99 minus `direct` at the same
concurrency; calls/s per worker = the target's requests/s (one process). Every request is checked first, and after the run
the console's usage records are counted against wrk's requests. Writes JSON to benchmarks/results/console.json.

Setup (benchmark-only): apt-get install -y wrk postgresql; LiteLLM in its own venv as bench_cloud_overhead.py describes.
Run: python benchmarks/bench_console.py [--seconds 5] [--no-postgres] [--litellm PATH]
"""
import argparse, asyncio, glob, json, os, platform, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path
import httpx
from common import BIN, ENV, NO_CONFIG, ROOT, free_port, git_sha
from bench_cloud_overhead import CHUNKS, LITELLM_DEFAULT, LUA, MODEL, Upstream, litellm_proc, wrk

ADMIN = 'bench-admin'


# ---------------------------------------------------------------- the upstream, also a HybrIE runtime's /health and /v1/models
class RuntimeUpstream(Upstream):
    "The canned upstream of bench_cloud_overhead, also answering GET /health and /v1/models as a `hybrie serve` would."
    MODELS = json.dumps({'object': 'list', 'data': [{'id': MODEL, 'object': 'model', 'owned_by': 'hybrie'}]}).encode()
    HEALTH = b'{"status": "ok"}'

    def data_received(self, data):
        if data.startswith(b'GET '):
            out = self.MODELS if b' /v1/models ' in data[:64] else self.HEALTH
            self.t.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n' % len(out) + out)
            return
        super().data_received(data)


def run_upstream(port):
    try: import uvloop; uvloop.install()
    except ImportError: pass
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(RuntimeUpstream, '127.0.0.1', port, backlog=1024))
    loop.run_forever()


# ---------------------------------------------------------------- PostgreSQL of its own
def pg_start(tmp):
    "A throwaway cluster: (URL, stop function), or None when PostgreSQL is not installed."
    tool = lambda n: shutil.which(n) or next(iter(sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{n}'))[-1:]), None)
    if not tool('initdb'): return None
    root, port = Path(tempfile.mkdtemp(prefix='bench-pg-')), free_port()
    as_user = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
    if as_user: shutil.chown(root, 'postgres', 'postgres')
    subprocess.run([*as_user, tool('initdb'), '-D', str(root/'data'), '-A', 'trust', '-U', 'postgres', '--no-sync'], check=True, capture_output=True)
    subprocess.run([*as_user, tool('pg_ctl'), '-D', str(root/'data'), '-l', str(root/'log'), '-w', 'start', '-o',
                    f'-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off'], check=True, capture_output=True)
    stop = lambda: (subprocess.run([*as_user, tool('pg_ctl'), '-D', str(root/'data'), '-m', 'immediate', 'stop'], capture_output=True),
                    shutil.rmtree(root, ignore_errors=True))
    return f'postgresql://postgres@127.0.0.1:{port}/postgres', stop


# ---------------------------------------------------------------- consoles
def console_proc(port, db_url, tmp, managed=None):
    env = {**ENV, **NO_CONFIG, 'HYBRIE_CONSOLE_ADMIN_TOKEN': ADMIN, 'HYBRIE_CONSOLE_KEY_FILE': str(Path(tmp)/'console.key'),
           'HYBRIE_CONSOLE_MAX_RETRIES': '0'}
    args = [str(BIN/'hybrie'), 'console', '--port', str(port), '--database-url', db_url, '--log-level', 'warning']
    if managed: args += ['--managed', managed]
    return subprocess.Popen(args, env=env, stdout=open(Path(tmp)/f'console-{port}.log', 'w'), stderr=subprocess.STDOUT)


def wait_health(root, proc, timeout=120, managed=False):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None: raise RuntimeError(f'{root} exited with {proc.returncode}')
        try:
            h = httpx.get(root + '/health', timeout=1).json()
            if not managed or h['managed']['healthy']: return
        except httpx.HTTPError: pass
        time.sleep(0.3)
    raise RuntimeError(f'{root} did not come up')


def account(root, upstream, byok=True) -> str:
    "A new account (and, for BYOK, its openai-compatible credential serving the benchmark's model at the upstream); its key."
    key = httpx.post(root + '/api/v1/admin/accounts', json={'name': 'bench'}, headers={'Authorization': f'Bearer {ADMIN}'}).json()['api_key']
    if byok:
        r = httpx.post(root + '/api/v1/credentials', headers={'Authorization': f'Bearer {key}'},
                       json={'provider': 'openai-compatible', 'api_key': 'sk-bench-upstream', 'model_prefixes': [MODEL],
                             'base_url': f'http://127.0.0.1:{upstream}/v1'})
        assert r.status_code == 200, r.text
    return key


def check(url, key, stream, route=None):
    "One request through `url`, checked, so errors are never timed."
    r = httpx.post(url, json={'model': MODEL, 'messages': [{'role': 'user', 'content': 'Say something.'}], 'stream': stream},
                   headers={'authorization': f'Bearer {key}'}, timeout=30)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    if route: assert r.headers['x-hybrie-route'] == route, r.headers
    if stream: assert r.text.count('word') == CHUNKS and '[DONE]' in r.text, r.text[:300]
    else: assert r.json()['choices'][0]['message']['content'] == 'word ' * CHUNKS


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seconds', type=int, default=5)
    ap.add_argument('--litellm', default=str(LITELLM_DEFAULT), help='the litellm CLI (skipped if missing)')
    ap.add_argument('--no-postgres', action='store_true')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'console.json'))
    ap.add_argument('--role', help=argparse.SUPPRESS); ap.add_argument('--port', type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == 'upstream': return run_upstream(a.port)
    if not shutil.which('wrk'): sys.exit('wrk is missing: apt-get install -y wrk')
    tmp = tempfile.mkdtemp(prefix='bench-console-')
    lua = Path(tmp)/'post.lua'; lua.write_text(LUA)
    procs, stops = [], []
    up = free_port()
    try:
        procs.append(subprocess.Popen([sys.executable, __file__, '--role', 'upstream', '--port', str(up)]))
        targets = {'direct': (f'http://127.0.0.1:{up}/v1/chat/completions', 'sk-bench', None)}
        cs = free_port()
        procs.append(console_proc(cs, f'sqlite:///{tmp}/console.db', tmp, managed=f'http://127.0.0.1:{up}'))
        wait_health(f'http://127.0.0.1:{cs}', procs[-1], managed=True)
        targets['console_sqlite'] = (f'http://127.0.0.1:{cs}/api/v1/inference/chat/completions', account(f'http://127.0.0.1:{cs}', up), 'byok')
        targets['managed_sqlite'] = (targets['console_sqlite'][0], account(f'http://127.0.0.1:{cs}', up, byok=False), 'managed')
        pg = None if a.no_postgres else pg_start(tmp)
        if pg:
            stops.append(pg[1])
            cp = free_port()
            procs.append(console_proc(cp, pg[0], tmp))
            wait_health(f'http://127.0.0.1:{cp}', procs[-1])
            targets['console_postgres'] = (f'http://127.0.0.1:{cp}/api/v1/inference/chat/completions', account(f'http://127.0.0.1:{cp}', up), 'byok')
        elif not a.no_postgres: print('PostgreSQL is not installed; measuring without it', file=sys.stderr)
        if Path(a.litellm).exists():
            lp = free_port()
            procs.append(litellm_proc(a.litellm, lp, up, tmp))
            targets['litellm'] = (f'http://127.0.0.1:{lp}/v1/chat/completions', 'sk-litellm-bench', None)
            deadline = time.time() + 300
            while True:
                try: check(targets['litellm'][0], 'sk-litellm-bench', False); break
                except Exception:
                    if time.time() > deadline or procs[-1].poll() is not None: raise
                    time.sleep(0.5)
        else: print(f'LiteLLM not found at {a.litellm}; measuring without it', file=sys.stderr)
        for name, (url, key, route) in targets.items():
            check(url, key, True, route)
            for _ in range(50): check(url, key, False, route)  # warm connections, caches and code paths
        results = {}
        for stream in (False, True):
            for conns in (1, 32):
                cfg = f'{"stream" if stream else "full"}_c{conns}'
                results[cfg] = {}
                for name, (url, key, _) in targets.items():
                    r = wrk(url, key, stream, conns, a.seconds, str(lua))
                    results[cfg][name] = r
                    print(f'{cfg:10} {name:17} p50 {r["p50_us"]/1000:7.2f} ms  p99 {r["p99_us"]/1000:7.2f} ms  {r["rps"]:7.0f} req/s'
                          f'  errors {r["errors"]} non2xx {r["non2xx"]}', file=sys.stderr, flush=True)
                d = results[cfg]['direct']
                for name, t in results[cfg].items():
                    if name == 'direct': continue
                    t['added_p50_ms'] = (t['p50_us'] - d['p50_us']) / 1000
                    t['added_p99_ms'] = (t['p99_us'] - d['p99_us']) / 1000
        # every timed call was metered: the consoles' usage totals against the requests wrk counted
        metered = {}
        for name, (url, key, _) in targets.items():
            if not name.startswith(('console', 'managed')): continue
            root = url.split('/api/')[0]
            got = httpx.get(root + '/api/v1/usage', headers={'Authorization': f'Bearer {key}'}, timeout=120).json()['totals']['requests']
            sent = 51 + sum(results[cfg][name]['requests'] for cfg in results)
            metered[name] = {'usage_records': got, 'requests_sent_at_least': sent}
        summary = {}
        for cfg, r in results.items():
            s = {f'{n}_added_p50_ms': round(r[n]['added_p50_ms'], 3) for n in r if n != 'direct'}
            s |= {f'{n}_added_p99_ms': round(r[n]['added_p99_ms'], 3) for n in r if n != 'direct'}
            s |= {f'{n}_rps': round(r[n]['rps'], 1) for n in r}
            if 'litellm' in r:
                s |= {f'{n}_over_litellm_rps': round(r[n]['rps'] / r['litellm']['rps'], 2) for n in r if n not in ('direct', 'litellm')}
            summary[cfg] = s
        out = {'benchmark': 'console', 'git_sha': git_sha(), 'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
               'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'python': platform.python_version(),
                           'loadavg_at_end': os.getloadavg(),
                           'note': 'CPU shared with other workloads; wrk, the upstream, PostgreSQL and the proxies under test share these cores'},
               'params': {'seconds': a.seconds, 'stream_chunks': CHUNKS, 'model': MODEL, 'workers': 1,
                          'load_generator': subprocess.run(['wrk', '-v'], capture_output=True, text=True).stdout.split('\n')[0],
                          'litellm': subprocess.run([str(Path(a.litellm).parent/'pip'), 'show', 'litellm'], capture_output=True, text=True).stdout.split('\n')[1]
                                     if 'litellm' in targets else None},
               'targets': {'direct': 'raw asyncio loopback upstream (canned answers)',
                           'console_sqlite': 'hybrie console, 1 worker, SQLite WAL; BYOK openai-compatible credential (auth + admission + usage record + metering)',
                           'managed_sqlite': 'the same console; Managed Inference (httpx to the upstream as a runtime)',
                           'console_postgres': 'hybrie console, 1 worker, PostgreSQL 15 on loopback (fsync off); BYOK',
                           'litellm': 'litellm proxy, --num_workers 1, no database (no spend tracking)'},
               'metered': metered, 'summary': summary, 'results': results}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1))
        print(json.dumps({'summary': summary, 'metered': metered}, indent=1))
        print(f'wrote {a.out}', file=sys.stderr)
    finally:
        for p in procs:
            p.terminate()
            try: p.wait(15)
            except subprocess.TimeoutExpired: p.kill()
        for s in stops: s()


if __name__ == '__main__': main()
