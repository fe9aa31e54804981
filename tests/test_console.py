"""The console gateway end to end: real `hybrie console` processes on loopback in front of a real `hybrie serve` runtime
(Managed Inference, the bundled model) and the provider stand-ins (BYOK, each provider's own wire format), on SQLite and
on a throwaway PostgreSQL cluster, driven by the official `openai` SDK, httpx and the `stimulir` CLI."""
import asyncio, json, os, select, signal, subprocess, sys, tempfile, threading, time, uuid
from decimal import Decimal
from pathlib import Path
import functools
import httpx, pytest, sqlalchemy as sa
import uvicorn
from openai import AsyncOpenAI, OpenAI
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from conftest import BASE_ENV, HYBRIE, free_port
from pg_cluster import PgCluster
from hybrie.console.db import Database, rate_windows, schema_drift, usage_records

STIMULIR = str(Path(sys.executable).parent/'stimulir')
ADMIN = 'admin-' + uuid.uuid4().hex
MODEL = 'smollm2-135m-instruct'
HI = [{'role': 'user', 'content': 'Say hello.'}]
PRICES = '''[console.prices."smollm2-135m-instruct"]
input = "0.10"
output = "0.50"
[console.prices."all-minilm-l6-v2"]
input = "0.02"
output = "0"
'''
BYOK_COST = Decimal(11) * Decimal('0.40') / 10**6 + Decimal(4) * Decimal('1.60') / 10**6  # gpt-4.1-mini, 11 in / 4 out


post = functools.partial(httpx.post, timeout=120)  # a loaded CI machine: the runtime's CPU decode can take seconds


def wait_for(cond, timeout=60, what='a condition'):
    "Poll `cond` until it returns something true; fail after `timeout` seconds."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := cond(): return v
        time.sleep(0.05)
    raise AssertionError(f'timed out after {timeout}s waiting for {what}')


class ConsoleProc:
    "A `hybrie console` process on a free port; consoles given the same `workdir` share the master key file."
    def __init__(self, db_url, managed=(), workdir=None, workers=1, wait_managed=True, env=None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix='console-'))
        self.port, self.db_url = free_port(), db_url
        self.root = f'http://127.0.0.1:{self.port}'
        (self.workdir/'console.toml').write_text(PRICES)
        self.logpath = self.workdir/f'console-{self.port}.log'
        self.env = {**os.environ, **BASE_ENV, 'HYBRIE_CONFIG': str(self.workdir/'console.toml'), 'HYBRIE_CONSOLE_ADMIN_TOKEN': ADMIN,
                    'HYBRIE_CONSOLE_KEY_FILE': str(self.workdir/'console.key'), 'HYBRIE_CONSOLE_HEALTH_INTERVAL': '0.5',
                    'HYBRIE_CONSOLE_MAX_RETRIES': '0', 'HYBRIE_CONSOLE_UPSTREAM_TIMEOUT': '60', **(env or {})}
        args = [HYBRIE, 'console', '--port', str(self.port), '--database-url', db_url, '--workers', str(workers)]
        for m in managed: args += ['--managed', m]
        self.proc = subprocess.Popen(args, stdout=open(self.logpath, 'a'), stderr=subprocess.STDOUT, env=self.env)
        def up():
            if self.proc.poll() is not None: raise RuntimeError(f'console exited with {self.proc.returncode}:\n{self.log()}')
            try: h = httpx.get(self.root + '/health', timeout=1).json()
            except httpx.HTTPError: return None
            return h if not wait_managed or h['managed']['healthy'] == len(managed) else None
        wait_for(up, 120, 'the console to start')

    def log(self) -> str: return self.logpath.read_text()
    def admin(self, name='Ada') -> dict:
        r = post(self.root + '/api/v1/admin/accounts', json={'name': name}, headers={'Authorization': f'Bearer {ADMIN}'})
        assert r.status_code == 200, r.text
        return r.json()
    def api(self, key) -> httpx.Client: return httpx.Client(base_url=self.root + '/api/v1', headers={'Authorization': f'Bearer {key}'}, timeout=60)
    def sdk(self, key) -> OpenAI: return OpenAI(base_url=self.root + '/api/v1/inference', api_key=key, max_retries=0)
    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL); self.proc.wait(10)
    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(20)
            except subprocess.TimeoutExpired: self.proc.kill()


@pytest.fixture(scope='module')
def pg():
    c = PgCluster()
    yield c
    c.stop()


def new_db(kind, request, tmp) -> str:
    return f'sqlite:///{tmp}/console.db' if kind == 'sqlite' else request.getfixturevalue('pg').create_database()


@pytest.fixture(params=['sqlite', 'postgresql'])
def db_url(request, tmp_path): return new_db(request.param, request, tmp_path)


@pytest.fixture(scope='module', params=['sqlite', 'postgresql'])
def console(request, server, tmp_path_factory):
    "One console per database, in front of the shared runtime."
    tmp = tmp_path_factory.mktemp(f'console-{request.param}')
    c = ConsoleProc(new_db(request.param, request, tmp), [server.root], tmp)
    c.kind = request.param
    yield c
    c.stop()


@pytest.fixture
def account(console):
    "A new account of the shared console: (account, its key)."
    a = console.admin(f'acct-{uuid.uuid4().hex[:6]}')
    return a, a['api_key']


def add_byok(api, standins, tag=''):
    "One credential per provider at the stand-ins; the provider keys by provider."
    keys = {p: f'sk-{p}-{tag}{uuid.uuid4().hex}' for p in ('openai', 'anthropic', 'gemini', 'mistral', 'openai-compatible')}
    spec = [('openai', ['gpt-', 'text-embedding-'], f'{standins.url}/openai/v1'), ('anthropic', ['claude-'], f'{standins.url}/anthropic'),
            ('gemini', ['gemini-'], f'{standins.url}/gemini'), ('mistral', ['mistral-', 'mistral-embed'], f'{standins.url}/mistral'),
            ('openai-compatible', ['ft-'], f'{standins.url}/openai/v1')]
    for p, prefixes, url in spec:
        r = api.post('/credentials', json={'provider': p, 'api_key': keys[p], 'model_prefixes': prefixes, 'base_url': url})
        assert r.status_code == 200, r.text
        assert r.json()['key_hint'] == '…' + keys[p][-4:] and 'api_key' not in r.json()
    return keys


def usage(api, **q) -> dict:
    r = api.get('/usage', params=q)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------- the database
def test_migrations_build_the_tables_the_code_uses(db_url):
    db = Database(db_url)
    try:
        assert db.migrate() == '0001' and db.migrate() == '0001'
        assert schema_drift(db.engine) == []
    finally: db.close()


# ---------------------------------------------------------------- accounts and keys
def test_accounts_keys_and_every_401(console, account):
    acct, key = account
    api = console.api(key)
    assert acct['api_key'].startswith('hyb_') and len(acct['api_key']) >= 47 and acct['name'].startswith('acct-')
    r = post(console.root + '/api/v1/admin/accounts', json={'name': 'Eve'}, headers={'Authorization': 'Bearer wrong'})
    assert (r.status_code, r.json()['error']['code']) == (401, 'invalid_admin_token')
    assert post(console.root + '/api/v1/admin/accounts', json={'name': ''}, headers={'Authorization': f'Bearer {ADMIN}'}).status_code == 400
    k = api.post('/keys', json={'name': 'ci', 'rate_limit_rpm': 30, 'monthly_budget_usd': '12.5'}).json()
    assert k['key'].startswith('hyb_') and k['prefix'] == k['key'][:12] and k['monthly_budget_usd'] == '12.5'
    listed = api.get('/keys').json()['data']
    assert [x['name'] for x in listed] == ['default', 'ci'] and not any('key' in x for x in listed)
    assert k['key'] not in api.get('/keys').text
    sdk = console.sdk(k['key'])
    assert sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=2).choices[0].message.content is not None
    assert api.delete(f"/keys/{k['id']}").json()['revoked_at'] is not None
    for bad in (k['key'], 'hyb_' + 'A' * 43, 'sk-not-ours', ''):
        r = post(console.root + '/api/v1/inference/chat/completions', json={'model': MODEL, 'messages': HI},
                       headers={'Authorization': f'Bearer {bad}'} if bad else {})
        assert (r.status_code, r.json()['error']['code'], r.json()['error']['type']) == (401, 'invalid_api_key', 'invalid_request_error'), r.text
        assert 'hyb_AAAA' not in r.text
    assert api.delete('/keys/key_nope').status_code == 404
    assert api.post('/keys', json={'expires_at': '2000-01-01T00:00:00Z'}).json()['error']['param'] == 'expires_at'
    soon = api.post('/keys', json={'expires_at': time.time() + 2}).json()
    assert console.api(soon['key']).get('/keys').status_code == 200
    r = wait_for(lambda: (r := console.api(soon['key']).get('/keys')).status_code == 401 and r, 10, 'the key to expire')
    assert 'expired' in r.json()['error']['message']


def test_create_account_from_the_command_line(console):
    r = subprocess.run([HYBRIE, 'console', 'create-account', 'Cli', '--database-url', console.db_url], capture_output=True, text=True,
                       env=console.env)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith('hyb_') and 'created account acct_' in r.stderr
    assert console.api(key).get('/keys').status_code == 200


def test_revocation_holds_at_once_in_another_console(db_url, standins, tmp_path):
    a, b = ConsoleProc(db_url, workdir=tmp_path), ConsoleProc(db_url, workdir=tmp_path)
    try:
        acct = a.admin()
        add_byok(a.api(acct['api_key']), standins)
        k = a.api(acct['api_key']).post('/keys', json={'name': 'short-lived'}).json()
        for c in (a, b): assert c.sdk(k['key']).chat.completions.create(model='gpt-4.1-mini', messages=HI).choices[0].message.content == 'Hello from openai!'
        b.api(acct['api_key']).delete(f"/keys/{k['id']}")
        r = post(a.root + '/api/v1/inference/chat/completions', json={'model': 'gpt-4.1-mini', 'messages': HI},
                       headers={'Authorization': f"Bearer {k['key']}"})
        assert (r.status_code, r.json()['error']['code']) == (401, 'invalid_api_key')
    finally: a.stop(); b.stop()


# ---------------------------------------------------------------- Managed Inference
def test_managed_chat_full_and_streamed_cost_the_same(console, account):
    _, key = account
    sdk, api = console.sdk(key), console.api(key)
    kw = dict(model=MODEL, messages=[{'role': 'user', 'content': 'Name three colours.'}], max_tokens=12, temperature=0)
    raw = sdk.chat.completions.with_raw_response.create(**kw)
    full = raw.parse()
    assert raw.headers['x-hybrie-route'] == 'managed' and raw.headers['x-hybrie-executed-by'] == 'local' and raw.headers['x-request-id']
    chunks = list(sdk.chat.completions.create(stream=True, **kw))
    assert ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices) == full.choices[0].message.content
    assert all(c.usage is None for c in chunks)  # the console asked the runtime for usage; the client did not
    with_usage = list(sdk.chat.completions.create(stream=True, stream_options={'include_usage': True}, **kw))
    assert with_usage[-1].usage.completion_tokens == full.usage.completion_tokens
    recs = usage(api)['data']
    assert [r['stream'] for r in recs] == [True, True, False] and {r['status'] for r in recs} == {'ok'}
    assert {(r['prompt_tokens'], r['completion_tokens'], r['usage_source']) for r in recs} == {(full.usage.prompt_tokens, full.usage.completion_tokens, 'upstream')}
    costs = {r['cost_usd'] for r in recs}
    expected = Decimal(full.usage.prompt_tokens) * Decimal('0.10') / 10**6 + Decimal(full.usage.completion_tokens) * Decimal('0.50') / 10**6
    assert costs == {str(expected.normalize())} and expected > 0
    assert all(r['ttft_ms'] is not None and r['latency_ms'] >= r['ttft_ms'] for r in recs)


def test_managed_passes_hybrie_headers_and_runtime_errors_through(console, account):
    _, key = account
    h = {'Authorization': f'Bearer {key}'}
    body = {'model': MODEL, 'messages': HI, 'max_tokens': 2}
    r = post(console.root + '/api/v1/inference/chat/completions', json=body, headers=h | {'x-hybrie-execution-mode': 'bogus'})
    assert (r.status_code, r.json()['error']['code'], r.headers['x-hybrie-route']) == (400, 'invalid_execution_mode', 'managed')
    r = post(console.root + '/api/v1/inference/chat/completions', json=body, headers=h | {'x-hybrie-execution-mode': 'local'})
    assert r.status_code == 200 and r.headers['x-hybrie-executed-by'] == 'local'
    for bad, status, param in (({'model': MODEL, 'messages': []}, 400, 'messages'), ({'messages': HI}, 400, 'model'),
                               ({'model': 'no-such-model', 'messages': HI}, 404, 'model')):
        r = post(console.root + '/api/v1/inference/chat/completions', json=bad, headers=h)
        assert (r.status_code, r.json()['error']['param']) == (status, param), r.text
    r = post(console.root + '/api/v1/inference/chat/completions', content=b'{"model": ', headers=h)
    assert r.status_code == 400 and 'not valid JSON' in r.json()['error']['message']
    recs = usage(console.api(key))['data']
    assert [(x['status'], x['http_status']) for x in recs] == [('ok', 200), ('error', 400)]  # refused bodies leave no record


def test_managed_embeddings_and_models(console, account, standins):
    _, key = account
    sdk, api = console.sdk(key), console.api(key)
    e = sdk.embeddings.with_raw_response.create(model='all-minilm-l6-v2', input=['hello world', 'good night'])
    assert e.headers['x-hybrie-route'] == 'managed' and len(e.parse().data[0].embedding) == 384
    rec = usage(api, model='all-minilm-l6-v2')['data'][0]
    assert (rec['endpoint'], rec['prompt_tokens'], rec['status']) == ('embeddings', e.parse().usage.prompt_tokens, 'ok')
    add_byok(api, standins)
    models = {m.id: m for m in sdk.models.list().data}
    assert models[MODEL].route == 'managed' and models['gpt-4.1-mini'].route == 'byok' and models['gpt-*'].route == 'byok'
    assert models['claude-haiku-4-5'].owned_by == 'anthropic' and models['ft-*'].route == 'byok'
    assert sdk.models.retrieve('gpt-4.1').route == 'byok'


def test_disconnect_mid_stream_is_recorded_cancelled(console, account):
    _, key = account
    body = {'model': MODEL, 'messages': [{'role': 'user', 'content': 'Write a long story.'}], 'max_tokens': 3000, 'ignore_eos': True,
            'temperature': 0, 'stream': True}
    seen = 0
    with httpx.Client(timeout=60) as h, h.stream('POST', console.root + '/api/v1/inference/chat/completions', json=body,
                                                 headers={'Authorization': f'Bearer {key}'}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith('data: {') and '"content"' in line: seen += 1
            if seen >= 5: break
    rec = wait_for(lambda: (d := usage(console.api(key))['data']) and d[0]['status'] == 'cancelled' and d[0], 30, 'the record to end cancelled')
    assert seen <= rec['completion_tokens'] < 3000 and rec['usage_source'] == 'counted' and Decimal(rec['cost_usd']) > 0


def test_kill9_mid_stream_is_interrupted_at_the_next_start(db_url, server, tmp_path):
    a = ConsoleProc(db_url, [server.root], tmp_path)
    key = a.admin()['api_key']
    db = Database(db_url)
    body = {'model': MODEL, 'messages': [{'role': 'user', 'content': 'Write a long story.'}], 'max_tokens': 3000, 'ignore_eos': True,
            'temperature': 0, 'stream': True}
    try:
        with httpx.Client(timeout=60) as h, h.stream('POST', a.root + '/api/v1/inference/chat/completions', json=body,
                                                     headers={'Authorization': f'Bearer {key}'}) as r:
            rid, lines = r.headers['x-request-id'], r.iter_lines()
            def checkpointed():
                next(lines)  # keep reading, so the stream keeps flowing
                row = db.read(lambda c: c.execute(sa.select(usage_records).where(usage_records.c.request_id == rid)).first())
                return row if row is not None and row.status == 'running' and row.completion_tokens >= 5 else None
            seen = wait_for(checkpointed, 120, 'a checkpoint of the running stream')
            a.kill9()
        b = ConsoleProc(db_url, [server.root], tmp_path)
        try:
            rec = db.read(lambda c: c.execute(sa.select(usage_records).where(usage_records.c.request_id == rid)).one())
            assert rec.status == 'interrupted' and seen.completion_tokens <= rec.completion_tokens < 3000, rec
            assert rec.cost > 0 and rec.usage_source == 'counted'
            got = usage(b.api(key))['data'][0]
            assert (got['status'], got['completion_tokens']) == ('interrupted', rec.completion_tokens)
        finally: b.stop()
    finally:
        a.stop(); db.close()


class FakeRuntime:
    "A runtime that lists the bundled model and fails its requests: `mode` 500, or `drop` (the stream breaks before its first byte)."
    def __init__(self, mode):
        self.mode, self.hits = mode, 0
        async def chat(request):
            self.hits += 1
            if self.mode == '500': return JSONResponse({'error': {'message': 'boom', 'type': 'server_error', 'param': None, 'code': None}}, 500)
            async def broken():
                raise RuntimeError('the runtime broke')
                yield b''
            return StreamingResponse(broken(), media_type='text/event-stream')
        app = Starlette(routes=[Route('/health', lambda r: JSONResponse({'status': 'ok'})),
                                Route('/v1/models', lambda r: JSONResponse({'object': 'list', 'data': [{'id': MODEL, 'object': 'model', 'owned_by': 'hybrie'}]})),
                                Route('/v1/chat/completions', chat, methods=['POST'])])
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=self.port, log_level='critical'))
        self.thread = threading.Thread(target=self.server.run, daemon=True); self.thread.start()
        wait_for(lambda: self.server.started, 30, 'the fake runtime')
    def stop(self): self.server.should_exit = True; self.thread.join(5)


@pytest.mark.parametrize('mode', ['500', 'drop'])
def test_a_failing_runtime_is_retried_on_another(mode, server, tmp_path):
    fake = FakeRuntime(mode)
    c = ConsoleProc(f'sqlite:///{tmp_path}/c.db', [fake.url, server.root], tmp_path)
    try:
        key = c.admin()['api_key']
        sdk = c.sdk(key)
        for i in range(3):
            if mode == 'drop': assert ''.join(ch.choices[0].delta.content or '' for ch in sdk.chat.completions.create(
                model=MODEL, messages=HI, max_tokens=4, stream=True) if ch.choices)
            else: assert sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=4).choices[0].message.content is not None
        assert fake.hits >= 1
        assert {r['status'] for r in usage(c.api(key))['data']} == {'ok'}
    finally: c.stop(); fake.stop()


def test_no_runtime_available_is_503_with_retry_after(tmp_path):
    fake, dead = FakeRuntime('500'), f'http://127.0.0.1:{free_port()}'
    c = ConsoleProc(f'sqlite:///{tmp_path}/c.db', [fake.url, dead], tmp_path, wait_managed=False)
    try:
        key = c.admin()['api_key']
        wait_for(lambda: httpx.get(c.root + '/health').json()['managed']['healthy'] == 1, 30, 'the fake runtime to be up')
        for _ in range(2):
            r = post(c.root + '/api/v1/inference/chat/completions', json={'model': MODEL, 'messages': HI}, headers={'Authorization': f'Bearer {key}'})
            assert (r.status_code, r.json()['error']['code'], r.headers['x-hybrie-route']) == (503, 'no_runtime_available', 'managed')
            assert int(r.headers['retry-after']) >= 1
        recs = usage(c.api(key))['data']
        assert [(x['status'], x['http_status'], x['error_code']) for x in recs] == [('error', 503, 'no_runtime_available')] * 2
    finally: c.stop(); fake.stop()


# ---------------------------------------------------------------- BYOK
PROVIDER_MODELS = [('gpt-4.1-mini', 'openai'), ('claude-haiku-4-5', 'anthropic'), ('gemini-2.5-flash', 'gemini'),
                   ('mistral-small-latest', 'mistral'), ('ft-support-bot', 'openai-compatible')]


def test_byok_every_provider_full_and_streamed(console, account, standins):
    _, key = account
    api, sdk = console.api(key), console.sdk(key)
    keys = add_byok(api, standins)
    for model, provider in PROVIDER_MODELS:
        wire = 'openai' if provider == 'openai-compatible' else provider
        raw = sdk.chat.completions.with_raw_response.create(model=model, messages=HI, temperature=0.2)
        assert raw.headers['x-hybrie-route'] == 'byok' and raw.parse().choices[0].message.content == f'Hello from {wire}!'
        sent = standins.last(wire)[1]
        assert keys[provider] in (sent.get('authorization') or sent.get('x-api-key') or sent.get('x-goog-api-key')), provider  # the account's own key
        text = ''.join(c.choices[0].delta.content or '' for c in sdk.chat.completions.create(model=model, messages=HI, stream=True) if c.choices)
        assert text == f'Hello from {wire}!'
        recs = usage(api, model=model)['data']
        assert [(r['stream'], r['route'], r['status'], r['prompt_tokens'], r['completion_tokens'], r['usage_source']) for r in recs] == \
               [(True, 'byok', 'ok', 11, 4, 'upstream'), (False, 'byok', 'ok', 11, 4, 'upstream')], (provider, recs)
        assert recs[0]['cost_usd'] == recs[1]['cost_usd'] and recs[0]['provider'] == provider
    assert Decimal(usage(api, model='gpt-4.1-mini')['data'][0]['cost_usd']) == BYOK_COST
    assert Decimal(usage(api, model='claude-haiku-4-5')['data'][0]['cost_usd']) == Decimal('0.000031')  # 11 x $1 + 4 x $5 per million


def test_byok_errors_and_embeddings(console, account, standins):
    _, key = account
    api, sdk, h = console.api(key), console.sdk(key), {'Authorization': f'Bearer {key}'}
    add_byok(api, standins)
    for text, status, code in (('@429', 429, 'rate_limit_exceeded'), ('@401', 502, 'upstream_auth_failed'), ('@500', 502, 'upstream_error')):
        r = post(console.root + '/api/v1/inference/chat/completions', headers=h,
                       json={'model': 'gpt-4.1-mini', 'messages': [{'role': 'user', 'content': text}]})
        assert (r.status_code, r.json()['error']['code'], r.headers['x-hybrie-route']) == (status, code, 'byok'), r.text
        if status == 429: assert r.headers['retry-after'] == '7'
    r = post(console.root + '/api/v1/inference/chat/completions', headers=h,
                   json={'model': 'gpt-4.1-mini', 'messages': [{'role': 'user', 'content': '@cut'}], 'stream': True})
    assert r.status_code == 200 and '"error"' in r.text.split('\n\n')[-2]
    recs = usage(api)['data']
    assert [(x['status'], x['http_status']) for x in recs] == [('error', 502), ('error', 502), ('error', 502), ('error', 429)]
    assert recs[0]['completion_tokens'] >= 1 and recs[0]['usage_source'] == 'counted'  # the pieces relayed before the cut
    e = sdk.embeddings.with_raw_response.create(model='text-embedding-3-small', input=['a', 'b'])
    assert e.headers['x-hybrie-route'] == 'byok' and e.parse().data[1].embedding == [0.25, 0.5, 1.0]
    assert sdk.embeddings.create(model='mistral-embed', input='a').usage.prompt_tokens == 3
    assert usage(api, model='text-embedding-3-small')['data'][0]['prompt_tokens'] == 6
    r = post(console.root + '/api/v1/inference/embeddings', headers=h, json={'model': 'claude-haiku-4-5', 'input': 'a'})
    assert (r.status_code, r.json()['error']['code']) == (400, 'embeddings_unsupported')
    cred = api.get('/credentials').json()['data'][0]
    assert api.delete(f"/credentials/{cred['id']}").json()['deleted'] is True
    r = post(console.root + '/api/v1/inference/chat/completions', headers=h, json={'model': 'gpt-4.1-mini', 'messages': HI})
    assert (r.status_code, r.json()['error']['code']) == (404, 'model_not_found')  # its prefixes now go to Managed Inference, which lacks it
    bad = api.post('/credentials', json={'provider': 'anthropic', 'api_key': 'k' * 20, 'model_prefixes': ['claude-']})
    assert (bad.status_code, bad.json()['error']['code']) == (400, 'prefix_taken')
    assert api.post('/credentials', json={'provider': 'openai-compatible', 'api_key': 'k', 'model_prefixes': ['x']}).status_code == 400


class Echo:
    "An OpenAI-compatible upstream that answers 400 with the Authorization header it was sent in the message (a careless provider)."
    def __init__(self):
        async def chat(request):
            return JSONResponse({'error': {'message': f"bad request from {request.headers.get('authorization')}", 'type': 'invalid_request_error'}}, 400)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route('/v1/chat/completions', chat, methods=['POST'])]),
                                                    host='127.0.0.1', port=self.port, log_level='critical'))
        threading.Thread(target=self.server.run, daemon=True).start()
        wait_for(lambda: self.server.started, 30, 'the echo upstream')


def test_no_provider_key_in_plaintext_anywhere(db_url, standins, tmp_path, request):
    echo = Echo()
    c = ConsoleProc(db_url, workdir=tmp_path)
    try:
        key = c.admin()['api_key']
        api, h, seen = c.api(key), {'Authorization': f'Bearer {key}'}, []
        keys = add_byok(api, standins, tag='PLAINTEXT')
        leak = 'sk-echo-PLAINTEXT' + uuid.uuid4().hex
        seen.append(api.post('/credentials', json={'provider': 'openai-compatible', 'api_key': leak, 'model_prefixes': ['echo-'],
                                                   'base_url': f'http://127.0.0.1:{echo.port}/v1'}).text)
        for model in ('gpt-4.1-mini', 'claude-haiku-4-5', 'gemini-2.5-flash', 'mistral-small-latest', 'echo-1'):
            for text in ('hi', '@401', '@500'):
                for stream in (False, True):
                    seen.append(post(c.root + '/api/v1/inference/chat/completions', headers=h, timeout=60,
                                           json={'model': model, 'messages': [{'role': 'user', 'content': text}], 'stream': stream}).text)
        assert any('bad request from Bearer ***' in s for s in seen)  # the echo's message, masked
        seen += [api.get('/credentials').text, api.get('/usage').text, api.get('/usage.csv').text, api.get('/inference/models').text]
        secrets = list(keys.values()) + [leak]
        for s in secrets:
            assert not any(s in text for text in seen), 'a response carried a provider key'
            assert s not in c.log()
            assert s[-12:] not in c.log()
        if db_url.startswith('sqlite'):
            raw = b''.join(p.read_bytes() for p in tmp_path.glob('console.db*'))
            assert b'PLAINTEXT' not in raw and key.encode() not in raw  # nor the account's own key: only its hash and prefix
        else:
            pg = request.getfixturevalue('pg')
            assert not pg.files_contain(b'PLAINTEXT') and not pg.files_contain(key.encode())
    finally: c.stop(); echo.server.should_exit = True


# ---------------------------------------------------------------- limits, shared by consoles
def test_rate_limit_shared_by_two_consoles(db_url, standins, tmp_path):
    a, b = ConsoleProc(db_url, workdir=tmp_path), ConsoleProc(db_url, workdir=tmp_path)
    try:
        acct = a.admin()
        add_byok(a.api(acct['api_key']), standins)
        k = a.api(acct['api_key']).post('/keys', json={'rate_limit_rpm': 4}).json()
        rs = [post((a, b)[i % 2].root + '/api/v1/inference/chat/completions', json={'model': 'gpt-4.1-mini', 'messages': HI},
                         headers={'Authorization': f"Bearer {k['key']}"}) for i in range(6)]
        assert [r.status_code for r in rs] == [200, 200, 200, 200, 429, 429]
        assert rs[4].json()['error']['code'] == 'rate_limit_exceeded' and 1 <= int(rs[4].headers['retry-after']) <= 120
        assert usage(a.api(acct['api_key']), key_id=k['id'])['totals']['requests'] == 4  # refused requests are not recorded
    finally: a.stop(); b.stop()


def test_token_limit_and_budget(console, account, standins):
    _, key = account
    api = console.api(key)
    add_byok(api, standins)
    def call(k): return post(console.root + '/api/v1/inference/chat/completions', json={'model': 'gpt-4.1-mini', 'messages': HI},
                                   headers={'Authorization': f'Bearer {k}'})
    tpm = api.post('/keys', json={'rate_limit_tpm': 20}).json()
    assert call(tpm['key']).status_code == 200; usage(api)  # 15 tokens, written
    assert call(tpm['key']).status_code == 200; usage(api)  # 15 < 20 when it was admitted
    r = call(tpm['key'])
    assert (r.status_code, r.json()['error']['type'], r.json()['error']['code']) == (429, 'tokens', 'rate_limit_exceeded')
    capped = api.post('/keys', json={'monthly_budget_usd': '0.00001'}).json()
    assert call(capped['key']).status_code == 200; usage(api)  # spends $0.0000108
    r = call(capped['key'])
    assert (r.status_code, r.json()['error']['code'], r.json()['error']['type']) == (429, 'insufficient_quota', 'insufficient_quota')


def test_counts_hold_under_concurrent_load(console, account, standins):
    _, key = account
    api = console.api(key)
    add_byok(api, standins)
    k = api.post('/keys', json={'rate_limit_rpm': 10_000}).json()
    async def go():
        sdk = AsyncOpenAI(base_url=console.root + '/api/v1/inference', api_key=k['key'], max_retries=0)
        async def one(i):
            if i % 2: return (await sdk.chat.completions.create(model='gpt-4.1-mini', messages=HI)).choices[0].message.content
            return ''.join([c.choices[0].delta.content or '' async for c in await sdk.chat.completions.create(model='gpt-4.1-mini', messages=HI, stream=True) if c.choices])
        return await asyncio.gather(*(one(i) for i in range(40)))
    assert set(asyncio.run(go())) == {'Hello from openai!'}
    t = usage(api, key_id=k['id'])['totals']
    assert (t['requests'], t['prompt_tokens'], t['completion_tokens']) == (40, 440, 160)
    assert Decimal(t['cost_usd']) == 40 * BYOK_COST
    db = Database(console.db_url)
    try: assert db.read(lambda c: c.execute(sa.select(sa.func.sum(rate_windows.c.requests), sa.func.sum(rate_windows.c.tokens))
                                            .where(rate_windows.c.key_id == k['id'])).one()) == (40, 600)
    finally: db.close()


def test_two_workers_of_one_console(tmp_path, standins):
    c = ConsoleProc(f'sqlite:///{tmp_path}/c.db', workdir=tmp_path, workers=2)
    try:
        key = c.admin()['api_key']
        add_byok(c.api(key), standins)
        for _ in range(8):
            assert post(c.root + '/api/v1/inference/chat/completions', json={'model': 'gpt-4.1-mini', 'messages': HI},
                              headers={'Authorization': f'Bearer {key}'}).status_code == 200
        wait_for(lambda: usage(c.api(key))['totals']['requests'] == 8, 10, 'all records written')
    finally: c.stop()


# ---------------------------------------------------------------- usage API
def test_usage_groups_filters_and_csv(console, account, standins):
    _, key = account
    api, sdk = console.api(key), console.sdk(key)
    add_byok(api, standins)
    k2 = api.post('/keys', json={'name': 'second'}).json()
    for m in ('gpt-4.1-mini', 'gpt-4.1-mini', 'mistral-small-latest'): sdk.chat.completions.create(model=m, messages=HI)
    console.sdk(k2['key']).chat.completions.create(model='claude-haiku-4-5', messages=HI)
    by_model = usage(api, group_by='model')
    assert {g['model']: g['requests'] for g in by_model['data']} == {'claude-haiku-4-5': 1, 'gpt-4.1-mini': 2, 'mistral-small-latest': 1}
    assert by_model['totals']['requests'] == 4 and by_model['totals']['total_tokens'] == 60
    assert Decimal(by_model['totals']['cost_usd']) == sum(Decimal(g['cost_usd']) for g in by_model['data'])
    assert {g['key_id']: g['requests'] for g in usage(api, group_by='key')['data']}[k2['id']] == 1
    day = usage(api, group_by='day')['data']
    assert len(day) == 1 and day[0]['day'] == time.strftime('%Y-%m-%d', time.gmtime())
    assert usage(api, key_id=k2['id'])['totals']['requests'] == 1
    assert usage(api, to='2000-01-01')['totals']['requests'] == 0
    assert usage(api, limit=2)['has_more'] is True
    csv = api.get('/usage.csv', params={'model': 'gpt-4.1-mini'})
    lines = csv.text.strip().split('\n')
    assert csv.headers['content-type'].startswith('text/csv') and lines[0].startswith('id,request_id,created_at') and len(lines) == 3
    for bad in ({'group_by': 'hour'}, {'from': 'yesterday'}, {'limit': 0}):
        r = api.get('/usage', params=bad)
        assert r.status_code == 400 and r.json()['error']['type'] == 'invalid_request_error'


# ---------------------------------------------------------------- stimulir
def stim(*args, env, stdin=None):
    r = subprocess.run([STIMULIR, *args], capture_output=True, text=True, env=env, input=stdin, timeout=120)
    return r.returncode, r.stdout, r.stderr


def test_stimulir(server, standins, tmp_path):
    c = ConsoleProc(f'sqlite:///{tmp_path}/c.db', [server.root], tmp_path)
    try:
        key = c.admin()['api_key']
        env = {k: v for k, v in os.environ.items() if not k.startswith('STIMULIR_')} | {'STIMULIR_CONFIG': str(tmp_path/'stimulir.toml')}
        assert stim('models', env=env)[0] == 1
        code, out, err = stim('login', '--api-key', key, '--base-url', c.root, env=env)
        assert code == 0 and oct((tmp_path/'stimulir.toml').stat().st_mode & 0o777) == '0o600', err
        code, out, err = stim('credentials', 'add', 'openai', '--prefix', 'gpt-', '--base-url', f'{standins.url}/openai/v1', env=env, stdin='sk-stim-0123456789abcdef\n')
        assert code == 0 and '…cdef' in err, err
        assert 'sk-stim' not in stim('credentials', 'list', env=env)[1] and '…cdef' in stim('credentials', 'list', env=env)[1]
        code, out, err = stim('models', env=env)
        assert code == 0 and out.split('\n')[0].split() == ['ID', 'ROUTE', 'OWNED_BY'] and 'gpt-4.1-mini' in out and MODEL in out
        assert stim('infer', 'chat', 'Hi', '--model', 'gpt-4.1-mini', env=env)[1] == 'Hello from openai!\n'
        assert stim('infer', 'chat', 'Hi', '--model', 'gpt-4.1-mini', '--stream', env=env)[1] == 'Hello from openai!\n'
        code, out, err = stim('infer', 'chat', 'Draft a runbook for failed payouts', '--model', MODEL, '--max-tokens', '8', '--stream', env=env)
        assert code == 0 and out.strip(), err
        code, out, err = stim('keys', 'create', '--name', 'ci', '--rpm', '60', env=env)
        new = out.strip()
        assert code == 0 and new.startswith('hyb_')
        listed = stim('keys', 'list', env=env)[1]
        assert 'ci' in listed and new not in listed and new[:12] in listed
        kid = next(l.split()[0] for l in listed.split('\n') if ' ci ' in l)
        assert stim('keys', 'revoke', kid, env=env)[0] == 0
        code, out, err = stim('models', env=env | {'STIMULIR_API_KEY': new})
        assert code == 1 and err.startswith('error: 401: This API key has been revoked.') and 'Traceback' not in err
        code, out, err = stim('infer', 'chat', 'Hi', '--model', 'nope', env=env)
        assert code == 1 and err.startswith('error: 404:') and 'Traceback' not in err
        code, out, err = stim('usage', '--group-by', 'model', env=env)
        assert code == 0 and 'gpt-4.1-mini' in out and 'TOTAL' in out
        code, out, err = stim('usage', '--csv', env=env)
        assert code == 0 and out.startswith('id,request_id')
        cred = stim('credentials', 'list', env=env)[1].split('\n')[1].split()[0]
        assert stim('credentials', 'remove', cred, env=env)[0] == 0
        # Ctrl-C during a stream stops it cleanly and the console records it cancelled
        p = subprocess.Popen([STIMULIR, 'infer', 'chat', 'Write a very long story about the sea.', '--model', MODEL, '--max-tokens', '3000', '--stream'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        got = b''
        def some_output():
            nonlocal got
            if select.select([p.stdout], [], [], 0.1)[0]: got += os.read(p.stdout.fileno(), 4096)
            return len(got) > 10
        wait_for(some_output, 120, 'the stream to start')
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 130 and b'Traceback' not in err, err
        wait_for(lambda: usage(c.api(key), model=MODEL)['data'][0]['status'] == 'cancelled', 30, 'the stream to be recorded cancelled')
    finally: c.stop()
