"""Compute peers between real `hybrie serve` processes on loopback: `a` (the hub, with `--route-to-peers` and a static
peer that is down), `b` and `c` (each joins `a` with a heartbeat). Forwarding full and streamed (chunk for chunk,
usage intact), over HTTP and gRPC, hybrid fallback, auth, loop refusal, routing by model, cancellation across the hop,
the CLI, and a peer that dies mid-answer and then expires."""
import json, os, signal, subprocess
import grpc, httpx, openai, pytest
from google.protobuf import json_format
from hybrie.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg
from conftest import start_server, free_port, wait_for, HYBRIE

MODEL = 'smollm2-135m-instruct'
Q = [{'role': 'user', 'content': 'Tell me a story about a lighthouse.'}]
SECRET = 's3cret'
FAST = {'HYBRIE_PEERS__HEARTBEAT': '0.3', 'HYBRIE_PEERS__TTL': '3'}
TOKEN = {'x-hybrie-peer-token': SECRET}


@pytest.fixture(scope='module')
def fleet(tiny_adapter):
    gport = free_port()
    with start_server('--peer-id', 'a', '--peer-secret', SECRET, '--route-to-peers', '--grpc-port', str(gport),
                      '--peer', f'dead=http://127.0.0.1:{free_port()}', env=FAST) as a:
        a.grpc = f'127.0.0.1:{gport}'
        join = ('--join', a.root, '--peer-secret', SECRET)
        with start_server('--peer-id', 'b', *join, '--adapter', f'tiny={tiny_adapter}', env=FAST) as b, \
             start_server('--peer-id', 'c', *join, env=FAST) as c:
            peers = lambda: {p['id']: p for p in httpx.get(a.url + '/peers', headers=TOKEN, timeout=30).json()['data']}
            wait_for(lambda: all(peers().get(x, {}).get('health') == 'healthy' for x in 'bc'), 120, 0.2, 'b and c joined and healthy')
            yield {'a': a, 'b': b, 'c': c, 'peers': peers}


def oc(s): return openai.OpenAI(base_url=s.url, api_key='x', max_retries=0, timeout=300)
def load(s): return httpx.get(s.url + '/node', timeout=30).json()['load']


def test_peers_are_listed_with_what_they_serve(fleet):
    ps = fleet['peers']()
    assert ps['b']['source'] == 'registered' and ps['b']['url'] == fleet['b'].root
    assert MODEL in ps['b']['models'] and ps['b']['adapters'] == ['tiny'] and ps['b']['device'] == 'cpu'
    assert ps['b']['latency_ms'] > 0 and ps['b']['last_seen'] and set(ps['b']['load']) >= {'running', 'queued', 'capacity'}
    assert ps['dead']['source'] == 'static' and ps['dead']['health'] == 'down' and ps['dead']['error']
    assert 'token' not in json.dumps(ps) and SECRET not in json.dumps(ps)


def test_forwarded_full_answer_is_the_peers(fleet):
    kw = dict(model=MODEL, messages=Q, temperature=1.0, seed=7, max_tokens=20)
    raw = oc(fleet['a']).chat.completions.with_raw_response.create(extra_headers={'x-hybrie-preferred-peer-id': 'b'}, **kw)
    assert raw.headers['x-hybrie-executed-by'] == 'peer:b'
    via, direct = raw.parse(), oc(fleet['b']).chat.completions.create(**kw)
    assert via.choices[0].message.content == direct.choices[0].message.content and via.usage == direct.usage


def test_forwarded_stream_is_chunk_for_chunk(fleet):
    kw = dict(model=MODEL, messages=Q, temperature=1.0, seed=11, max_tokens=24, stream=True, stream_options={'include_usage': True})
    via = list(oc(fleet['a']).chat.completions.create(extra_headers={'x-hybrie-preferred-peer-id': 'c'}, **kw))
    direct = list(oc(fleet['c']).chat.completions.create(**kw))
    strip = lambda cs: [(c.choices[0].delta.content, c.choices[0].finish_reason) if c.choices else c.usage for c in cs]
    assert strip(via) == strip(direct) and via[-1].usage.completion_tokens == 24
    assert len({c.id for c in via}) == 1 and via[0].choices[0].delta.role == 'assistant'


def test_grpc_metadata_sends_to_a_peer(fleet):
    import asyncio
    async def go():
        async with grpc.aio.insecure_channel(fleet['a'].grpc) as ch:
            call = pbg.InferenceStub(ch).ChatCompletion(json_format.ParseDict({'model': MODEL, 'messages': Q, 'max_tokens': 4}, pb.ChatCompletionRequest()),
                                                        metadata=(('x-hybrie-preferred-peer-id', 'b'),))
            r = await call
            return r, dict(await call.trailing_metadata())
    r, md = asyncio.run(go())
    assert md['x-hybrie-executed-by'] == 'peer:b' and r.usage.completion_tokens == 4


def test_route_to_peers_by_model(fleet):
    "`a` has no adapter `tiny`; `b` serves it: with --route-to-peers, `a` sends it there, and lists it."
    raw = oc(fleet['a']).chat.completions.with_raw_response.create(model='tiny', messages=Q, max_tokens=3)
    assert raw.headers['x-hybrie-executed-by'] == 'peer:b' and raw.parse().model == 'tiny'
    assert any(m.id == 'tiny' and m.owned_by == 'peer:b' for m in oc(fleet['a']).models.list().data)
    with pytest.raises(openai.NotFoundError):  # nobody serves it: the local 404
        oc(fleet['a']).chat.completions.create(model='no-such-model', messages=Q, max_tokens=3)


def test_unknown_and_down_peers(fleet):
    c = oc(fleet['a'])
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model=MODEL, messages=Q, max_tokens=3, extra_headers={'x-hybrie-preferred-peer-id': 'nobody'})
    assert e.value.body['code'] == 'peer_not_found'
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model=MODEL, messages=Q, max_tokens=3, extra_headers={'x-hybrie-preferred-peer-id': 'dead'})
    assert e.value.status_code == 503 and e.value.body['code'] == 'peer_unavailable'
    raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=Q, max_tokens=3,
                                                       extra_headers={'x-hybrie-preferred-peer-id': 'dead', 'x-hybrie-execution-mode': 'hybrid'})
    assert (raw.headers['x-hybrie-executed-by'], raw.headers['x-hybrie-fallback-from']) == ('local', 'peer:dead')
    assert raw.parse().usage.completion_tokens == 3


def test_peer_auth(fleet):
    a = fleet['a'].url
    body = {'id': 'x', 'url': 'http://127.0.0.1:9'}
    assert httpx.post(a + '/peers', json=body, timeout=30).status_code == 401
    r = httpx.post(a + '/peers', json=body, headers={'x-hybrie-peer-token': 'wrong'}, timeout=30)
    assert (r.status_code, r.json()['error']['code']) == (401, 'invalid_peer_token')
    assert httpx.get(a + '/peers', timeout=30).status_code == 401
    assert httpx.delete(a + '/peers/b', timeout=30).status_code == 401
    r = httpx.post(fleet['b'].url + '/chat/completions', json={'model': MODEL, 'messages': Q, 'max_tokens': 2},
                   headers={'x-hybrie-forwarded-by': 'a', 'x-hybrie-peer-token': 'wrong'}, timeout=60)
    assert r.status_code == 401  # a forwarded call needs the secret too


def test_a_forwarded_request_is_never_forwarded_again(fleet):
    h = {'x-hybrie-forwarded-by': 'a', 'x-hybrie-peer-token': SECRET}
    r = httpx.post(fleet['b'].url + '/chat/completions', json={'model': MODEL, 'messages': Q, 'max_tokens': 2},
                   headers=h | {'x-hybrie-preferred-peer-id': 'a'}, timeout=60)
    assert (r.status_code, r.json()['error']['code']) == (508, 'peer_loop')
    r = httpx.post(fleet['b'].url + '/chat/completions', json={'model': MODEL, 'messages': Q, 'max_tokens': 2},
                   headers=h | {'x-hybrie-preferred-peer-id': 'b'}, timeout=60)
    assert r.status_code == 200 and r.headers['x-hybrie-executed-by'] == 'local'
    r = httpx.post(fleet['a'].url + '/chat/completions', json={'model': 'tiny', 'messages': Q, 'max_tokens': 2}, headers=h | {}, timeout=60)
    assert r.status_code == 404  # forwarded to `a`, `tiny` is not routed on to `b`


def test_cancel_crosses_the_hop(fleet):
    "A client that stops reading a stream forwarded to `b` stops `b`'s generation too."
    body = {'model': MODEL, 'messages': Q, 'max_tokens': 3000, 'ignore_eos': True, 'stream': True}
    with httpx.stream('POST', fleet['a'].url + '/chat/completions', json=body, headers={'x-hybrie-preferred-peer-id': 'b'}, timeout=120) as r:
        lines = r.iter_lines()
        for _ in range(6): next(lines)
        assert load(fleet['b'])['running'] == 1
    wait_for(lambda: load(fleet['b'])['running'] == 0, 60, 0.05, "b dropping the abandoned request")


def test_cli_peers(fleet):
    env = {**os.environ, 'HYBRIE_PEER_SECRET': SECRET, 'HYBRIE_CONFIG': '/nonexistent'}
    run = lambda *a: subprocess.run([HYBRIE, 'peers', *a, '--url', fleet['a'].url], capture_output=True, text=True, env=env, timeout=120)
    out = run('list')
    assert out.returncode == 0 and 'b ' in out.stdout and 'healthy' in out.stdout and 'tiny' in out.stdout, out
    out = run('add', 'extra', 'http://127.0.0.1:9')
    assert out.returncode == 0 and 'added extra' in out.stdout, out
    assert 'extra' in fleet['peers']()
    assert run('remove', 'extra').returncode == 0 and 'extra' not in fleet['peers']()
    out = subprocess.run([HYBRIE, 'peers', 'list', '--url', fleet['a'].url], capture_output=True, text=True, timeout=120,
                         env={**os.environ, 'HYBRIE_CONFIG': '/nonexistent', 'HYBRIE_PEER_SECRET': ''})
    assert out.returncode == 1 and '401' in out.stderr


def test_peer_dies_mid_answer_then_expires(fleet):
    "`c` is killed while streaming through `a`: the stream ends with an error event; `c` goes down, then expires."
    body = {'model': MODEL, 'messages': Q, 'max_tokens': 3000, 'ignore_eos': True, 'stream': True}
    with httpx.stream('POST', fleet['a'].url + '/chat/completions', json=body, headers={'x-hybrie-preferred-peer-id': 'c'}, timeout=120) as r:
        assert r.headers['x-hybrie-executed-by'] == 'peer:c'
        events = []
        for line in r.iter_lines():
            if not line.startswith('data: '): continue
            events.append(json.loads(line[6:]) if line != 'data: [DONE]' else line)
            if len(events) == 3: fleet['c'].proc.send_signal(signal.SIGKILL)
    assert events[-1]['error']['code'] == 'peer_disconnected' and all('choices' in e for e in events[:-1])
    wait_for(lambda: 'c' not in fleet['peers'](), 60, 0.2, 'c expiring')
    assert fleet['peers']()['b']['health'] == 'healthy'
