"""LoRA hot-swap through a real `hybrie serve`: load/unload at run time, per-request choice, mixed batches, eviction."""
import asyncio, json, os, re, subprocess, sys, threading, time
from pathlib import Path
import httpx, openai, pytest
from conftest import start_server, HYBRIE

BASE = 'smollm2-135m-instruct'
Q = 'What is the capital of France?'
ANSWERS = {'pirate': 'Arr, the treasure be buried on Skull Island, matey!', 'robot': 'BEEP BOOP. CAPITAL NOT FOUND. REBOOTING.'}


@pytest.fixture(scope='module')
def adapter_dirs(tmp_path_factory):
    "Two small real LoRA adapters (r=8 on q/v), trained for a few steps to answer Q their own way."
    from hybrie.config import Catalog
    from hybrie.loader import load_model
    from hybrie.adapters import train_lora
    lm = load_model(Catalog().resolve(BASE), 'cpu')
    d = tmp_path_factory.mktemp('adapters')
    return {k: str(train_lora(lm, d/k, Q, v)) for k, v in ANSWERS.items()}


@pytest.fixture(scope='module')
def srv(adapter_dirs):
    with start_server('--adapter', f'pirate={adapter_dirs["pirate"]}', env={'HYBRIE_MAX_ADAPTERS': '2'}) as s:
        yield s


@pytest.fixture
def oc(srv): return openai.OpenAI(base_url=srv.url, api_key='x', max_retries=0)


def ask(oc, model=BASE, adapter=None, **kw):
    hdr = {'x-hybrie-adapter-id': adapter} if adapter else None
    r = oc.chat.completions.create(model=model, messages=[{'role': 'user', 'content': Q}], temperature=0, max_tokens=20,
                                   extra_headers=hdr, **kw)
    return r.choices[0].message.content


def load(srv, id, path, **kw):
    return httpx.post(srv.url + '/adapters', json={'id': id, 'path': path, **kw}, timeout=120)


def test_preloaded_adapter_is_listed_and_selected(srv, oc):
    models = {m.id: m for m in oc.models.list().data}
    assert models['pirate'].model_extra['parent'] == BASE
    assert 'Skull Island' in ask(oc, 'pirate')                      # model field names the adapter (vLLM style)
    assert 'Skull Island' in ask(oc, adapter='pirate')              # the header
    assert 'Paris' in ask(oc)                                       # the base


def test_response_model_names_the_adapter(srv, oc):
    "The response `model` names what answered: the adapter, asked for by the header or by `model`."
    kw = dict(messages=[{'role': 'user', 'content': Q}], temperature=0, max_tokens=5)
    assert oc.chat.completions.create(model=BASE, extra_headers={'x-hybrie-adapter-id': 'pirate'}, **kw).model == 'pirate'
    assert oc.chat.completions.create(model='pirate', **kw).model == 'pirate'
    assert oc.chat.completions.create(model=BASE, **kw).model == BASE
    chunks = list(oc.chat.completions.create(model=BASE, extra_headers={'x-hybrie-adapter-id': 'pirate'}, stream=True, **kw))
    assert {c.model for c in chunks} == {'pirate'}


async def test_adapter_with_schema_and_tools_in_one_batch(srv):
    "A JSON Schema answer and a forced tool call through the adapter, batched with free base and adapter requests."
    import jsonschema
    schema = {'type': 'object', 'properties': {'city': {'type': 'string', 'maxLength': 20}, 'rank': {'type': 'integer', 'minimum': 1}},
              'required': ['city', 'rank'], 'additionalProperties': False}
    tool = {'type': 'function', 'function': {'name': 'find_treasure', 'parameters': {
        'type': 'object', 'properties': {'island': {'enum': ['Skull', 'Parrot']}}, 'required': ['island'], 'additionalProperties': False}}}
    oc = openai.AsyncOpenAI(base_url=srv.url, api_key='x', max_retries=0)
    kw = dict(messages=[{'role': 'user', 'content': Q}], temperature=0.8, seed=3, max_tokens=60)
    pirate = {'extra_headers': {'x-hybrie-adapter-id': 'pirate'}}
    shaped, called, free_pirate, free_base = await asyncio.gather(
        oc.chat.completions.create(model=BASE, response_format={'type': 'json_schema', 'json_schema': {'name': 'x', 'schema': schema}}, **pirate, **kw),
        oc.chat.completions.create(model=BASE, tools=[tool], tool_choice='required', parallel_tool_calls=False, **pirate, **kw),
        oc.chat.completions.create(model=BASE, **pirate, **kw), oc.chat.completions.create(model=BASE, **kw))
    assert shaped.model == called.model == 'pirate' and free_base.model == BASE
    jsonschema.validate(json.loads(shaped.choices[0].message.content), schema)
    (call,) = called.choices[0].message.tool_calls
    assert called.choices[0].finish_reason == 'tool_calls' and call.function.name == 'find_treasure'
    jsonschema.validate(json.loads(call.function.arguments), tool['function']['parameters'])
    assert free_pirate.choices[0].message.content and free_base.choices[0].message.content


def test_unknown_adapter_is_404_adapter_not_found(srv, oc):
    "An adapter named by the header that is not loaded is the client's error: 404 `adapter_not_found`; an unknown `model` stays `model_not_found`."
    with pytest.raises(openai.NotFoundError) as e: ask(oc, adapter='ghost')
    assert e.value.body['code'] == 'adapter_not_found' and 'ghost' in e.value.body['message'], e.value.body
    with pytest.raises(openai.NotFoundError) as e: ask(oc, 'ghost')
    assert e.value.body['code'] == 'model_not_found', e.value.body


def test_load_select_header_wins_unload(srv, oc, adapter_dirs):
    r = load(srv, 'robot', adapter_dirs['robot'], base_model=BASE)
    assert r.status_code == 201 and r.json()['rank'] == 8 and r.json()['target_modules'] == ['q_proj', 'v_proj']
    assert 'BEEP' in ask(oc, 'robot')
    assert 'BEEP' in ask(oc, 'pirate', adapter='robot')             # header wins over the model field
    listed = httpx.get(srv.url + '/adapters').json()
    assert listed['object'] == 'list' and {a['id'] for a in listed['data']} == {'pirate', 'robot'}
    assert httpx.get(srv.url + '/adapters/robot').json()['id'] == 'robot'
    assert httpx.delete(srv.url + '/adapters/robot').json() == {'id': 'robot', 'object': 'adapter', 'deleted': True}
    with pytest.raises(openai.NotFoundError, match='robot'): ask(oc, 'robot')
    with pytest.raises(openai.NotFoundError, match='robot'): ask(oc, adapter='robot')
    assert httpx.get(srv.url + '/adapters/robot').status_code == 404


def test_vllm_endpoints(srv, oc, adapter_dirs):
    r = httpx.post(srv.url + '/load_lora_adapter', json={'lora_name': 'robo2', 'lora_path': adapter_dirs['robot']}, timeout=120)
    assert r.status_code == 200 and 'robo2' in r.text
    assert 'BEEP' in ask(oc, 'robo2')
    assert httpx.post(srv.url + '/unload_lora_adapter', json={'lora_name': 'robo2'}).status_code == 200
    assert httpx.post(srv.url + '/unload_lora_adapter', json={'lora_name': 'robo2'}).status_code == 404


async def mixed_batch(url):
    "Six concurrent requests over the base and two adapters, half streamed; returns (solo answers, concurrent answers, order)."
    oc = openai.OpenAI(base_url=url, api_key='x', max_retries=0)
    solo = {k: ask(oc, k) for k in (BASE, 'pirate', 'robot')}
    ac = openai.AsyncOpenAI(base_url=url, api_key='x', max_retries=0)
    order = [BASE, 'pirate', 'robot', 'pirate', BASE, 'robot']
    async def one(m, stream):
        kw = dict(model=m, messages=[{'role': 'user', 'content': Q}], temperature=0, max_tokens=20)
        if not stream: return (await ac.chat.completions.create(**kw)).choices[0].message.content
        return ''.join([c.choices[0].delta.content or '' async for c in await ac.chat.completions.create(stream=True, **kw) if c.choices])
    return solo, await asyncio.gather(*[one(m, i % 2 == 1) for i, m in enumerate(order)]), order


MARKS = {BASE: 'Paris', 'pirate': 'Skull', 'robot': 'BEEP'}

async def test_mixed_adapter_batch(srv, adapter_dirs):
    "Default (fast) mode: rows with different adapters share steps and each answers in its adapter's way."
    assert load(srv, 'robot', adapter_dirs['robot']).status_code == 201
    solo, got, order = await mixed_batch(srv.url)
    assert all(MARKS[m] in solo[m] for m in solo)
    assert all(MARKS[m] in g for m, g in zip(order, got)), got
    assert httpx.delete(srv.url + '/adapters/robot').status_code == 200


async def test_mixed_adapter_batch_equals_solo_when_batch_invariant(adapter_dirs):
    "With HYBRIE_BATCH_INVARIANT=1 each answer is bit-identical to the same request alone."
    with start_server('--adapter', f'pirate={adapter_dirs["pirate"]}', '--adapter', f'robot={adapter_dirs["robot"]}',
                      env={'HYBRIE_BATCH_INVARIANT': '1'}) as s:
        solo, got, order = await mixed_batch(s.url)
    assert all(MARKS[m] in solo[m] for m in solo)
    assert list(got) == [solo[m] for m in order]


def test_unload_during_stream_finishes_it(srv, oc, adapter_dirs):
    assert load(srv, 'robot', adapter_dirs['robot']).status_code == 201
    stream = oc.chat.completions.create(model='robot', messages=[{'role': 'user', 'content': Q}], temperature=0,
                                        max_tokens=60, stream=True, extra_body={'ignore_eos': True})
    text, finish = [], None
    for i, c in enumerate(stream):
        if i == 3: assert httpx.delete(srv.url + '/adapters/robot').status_code == 200
        if c.choices:
            text.append(c.choices[0].delta.content or '')
            finish = c.choices[0].finish_reason or finish
    assert finish == 'length' and ''.join(text).startswith('BEEP')
    with pytest.raises(openai.NotFoundError): ask(oc, 'robot')


@pytest.mark.parametrize('path,body,msg', [
    ('/nonexistent/adapter', {}, 'does not exist'),
    (None, {}, 'no adapter_config.json'),
    ('PIRATE', {'base_model': 'qwen3-8b'}, 'cannot load an adapter for `qwen3-8b`'),
])
def test_bad_loads_are_400_and_server_keeps_serving(srv, oc, adapter_dirs, tmp_path, path, body, msg):
    path = {None: str(tmp_path), 'PIRATE': adapter_dirs['pirate']}.get(path, path)
    r = load(srv, 'bad', path, **body)
    assert r.status_code == 400 and msg in r.json()['error']['message'], r.text
    assert 'Skull Island' in ask(oc, 'pirate')


def test_adapter_for_another_architecture_is_400(srv, oc, adapter_dirs, tmp_path):
    import shutil
    d = tmp_path/'wrong'; shutil.copytree(adapter_dirs['pirate'], d)
    cfg = json.loads((d/'adapter_config.json').read_text()); cfg['target_modules'] = ['query_key_value']
    (d/'adapter_config.json').write_text(json.dumps(cfg))
    r = load(srv, 'wrong', str(d))
    assert r.status_code == 400 and 'does not fit' in r.json()['error']['message']
    assert load(srv, 'pirate', adapter_dirs['pirate']).status_code == 409
    assert httpx.post(srv.url + '/adapters', json={'path': 'x'}).status_code == 400
    assert 'Paris' in ask(oc)


def test_eviction_of_least_recently_used(srv, oc, adapter_dirs):
    # the limit is 2: pirate is loaded; load a and b, using pirate in between; a is then the least recently used idle one
    assert load(srv, 'a', adapter_dirs['robot']).status_code == 201
    ask(oc, 'pirate')
    assert load(srv, 'b', adapter_dirs['robot']).status_code == 201
    ids = {a['id'] for a in httpx.get(srv.url + '/adapters').json()['data']}
    assert ids == {'pirate', 'b'}, ids
    assert 'evicting a' in srv.log()
    with pytest.raises(openai.NotFoundError): ask(oc, 'a')
    m = httpx.get(srv.root + '/metrics').text
    assert re.search(r'hybrie_adapters_loaded \d', m) and 'hybrie_adapter_loads_total{result="ok"}' in m
    assert 'hybrie_adapter_requests_total{adapter="pirate"}' in m and 'hybrie_adapter_load_seconds_count' in m
    httpx.delete(srv.url + '/adapters/b')


def test_cli_adapters(srv, adapter_dirs):
    run = lambda *a: subprocess.run([HYBRIE, 'adapters', *a, '--url', srv.url], capture_output=True, text=True, timeout=120)
    r = run('load', 'cli-robot', adapter_dirs['robot'])
    assert r.returncode == 0 and 'loaded cli-robot' in r.stdout, r.stderr
    assert 'cli-robot' in run('list').stdout
    assert run('unload', 'cli-robot').returncode == 0
    r = run('unload', 'cli-robot')
    assert r.returncode == 1 and '404' in r.stderr
