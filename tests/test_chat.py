"""The chat API of a real `hybrie serve` with the bundled model, through the official openai SDK."""
import asyncio, json, re, time
import httpx, openai, pytest
from conftest import start_server

MODEL = 'smollm2-135m-instruct'
Q = [{'role': 'user', 'content': 'What is the capital of France?'}]


def test_full_response(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=20)
    assert r.id.startswith('chatcmpl-') and r.object == 'chat.completion' and r.model == MODEL
    c = r.choices[0]
    assert 'Paris' in c.message.content and c.message.role == 'assistant'
    assert c.finish_reason in ('stop', 'length')
    assert r.usage.prompt_tokens > 10 and 0 < r.usage.completion_tokens <= 20
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_contract_and_equality(client):
    full = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=40).choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=40, stream=True))
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == 'assistant'
    finishes = [c.choices[0].finish_reason for c in chunks]
    assert finishes[-1] in ('stop', 'length') and all(f is None for f in finishes[:-1])
    assert all(c.usage is None for c in chunks)
    assert ''.join(c.choices[0].delta.content or '' for c in chunks) == full


def test_stream_include_usage(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=Q, max_tokens=8, stream=True,
                                                 stream_options={'include_usage': True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_sse_framing(server):
    body = {'model': MODEL, 'messages': Q, 'max_tokens': 4, 'stream': True}
    with httpx.stream('POST', server.url + '/chat/completions', json=body, timeout=60) as r:
        assert r.headers['content-type'].startswith('text/event-stream')
        lines = [l for l in r.iter_lines() if l.startswith('data: ')]
    assert lines[-1] == 'data: [DONE]'
    assert all(json.loads(l[6:])['object'] == 'chat.completion.chunk' for l in lines[:-1])


def test_sampling_parameters(client):
    kw = dict(model=MODEL, messages=[{'role': 'user', 'content': 'Tell me a story.'}], max_tokens=16)
    a = client.chat.completions.create(temperature=1.0, seed=42, **kw).choices[0].message.content
    b = client.chat.completions.create(temperature=1.0, seed=42, **kw).choices[0].message.content
    assert a == b
    others = {client.chat.completions.create(temperature=1.0, seed=s, **kw).choices[0].message.content for s in range(4)}
    assert len(others) > 1
    r = client.chat.completions.create(temperature=0.7, top_p=0.9, presence_penalty=0.5, frequency_penalty=0.5, seed=1,
                                       extra_body={'top_k': 20, 'min_p': 0.05, 'repetition_penalty': 1.1}, **kw)
    assert r.choices[0].message.content and r.usage.completion_tokens <= 16
    r = client.chat.completions.create(n=3, temperature=1.0, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2] and r.usage.completion_tokens <= 48
    r = client.chat.completions.create(max_completion_tokens=3, **kw)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == 'length'


def test_stop_strings_across_tokens(client):
    full = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=20).choices[0].message.content
    stop = full[full.index('Paris') + 1: full.index('Paris') + 4]  # 'ari': inside one token
    r = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=20, stop=[stop, 'never'])
    assert r.choices[0].message.content == full[:full.index(stop)]
    assert r.choices[0].finish_reason == 'stop'
    s = list(client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=20, stop=stop, stream=True))
    assert ''.join(c.choices[0].delta.content or '' for c in s if c.choices) == full[:full.index(stop)]


def test_logit_bias_and_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    eos = r.choices[0].finish_reason == 'stop'  # the end-of-sequence token counts in usage but has no text
    assert len(lp) == r.usage.completion_tokens - eos
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lp)
    assert ''.join(t.token for t in lp) == r.choices[0].message.content
    assert abs(lp[0].logprob - lp[0].top_logprobs[0].logprob) < 1e-4  # greedy picks the top token


def test_logit_bias_bans_a_token(client):
    from transformers import AutoTokenizer
    from hybrie.config import Catalog
    res = Catalog().resolve(MODEL)
    tok = AutoTokenizer.from_pretrained(res.path, gguf_file=res.gguf_file)
    full = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=12).choices[0].message.content
    assert 'Paris' in full
    banned = {str(t): -100 for t in set(tok.encode(' Paris') + tok.encode('Paris'))}
    r = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=12, logit_bias=banned)
    assert 'Paris' not in r.choices[0].message.content


def test_models_health_metrics(client, server):
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError): client.models.retrieve('nope')
    assert httpx.get(server.root + '/health').json()['status'] == 'ok'
    m = httpx.get(server.root + '/metrics').text
    for name in ('hybrie_requests_running', 'hybrie_requests_total', 'hybrie_request_latency_seconds', 'hybrie_tokens_total'):
        assert name in m


@pytest.mark.parametrize('kw,status,param', [
    (dict(model='no-such-model'), 404, 'model'),
    (dict(temperature=5), 400, 'temperature'),
    (dict(top_p=0), 400, 'top_p'),
    (dict(n=0), 400, 'n'),
    (dict(max_tokens=0), 400, 'max_tokens'),
    (dict(max_tokens=100000), 400, 'max_tokens'),
    (dict(messages=[]), 400, 'messages'),
    (dict(messages=[{'role': 'user'}]), 400, 'messages.0'),
    (dict(messages=[{'role': 'robot', 'content': 'x'}]), 400, 'messages.0.role'),
    (dict(messages=[{'role': 'user', 'content': 'hi ' * 9000}]), 400, 'messages'),
    (dict(logit_bias={'abc': 1}), 400, 'logit_bias'),
    (dict(logit_bias={'49152': 5}), 400, 'logit_bias'),  # one past the bundled model's vocabulary
    (dict(seed=2**64), 400, 'seed'),
    (dict(model='all-minilm-l6-v2'), 400, 'model'),
    (dict(model='whisper-1'), 400, 'model'),
    (dict(tools=[{'type': 'function', 'function': {'name': 'no spaces', 'parameters': {}}}]), 400, 'tools.0.function.name'),
    (dict(response_format={'type': 'xml'}), 400, 'response_format.type'),
    (dict(messages=[{'role': 'user', 'content': [{'type': 'image_url', 'image_url': {'url': 'https://x/y.png'}}]}]), 400, 'messages.0.content'),
])
def test_client_errors(client, kw, status, param):
    args = dict(model=MODEL, messages=Q, max_tokens=4) | kw
    with pytest.raises(openai.APIStatusError) as e: client.chat.completions.create(**args)
    assert e.value.status_code == status
    err = e.value.body
    assert err['message'] and err['type'] and err['param'].startswith(param)


def test_malformed_bodies(server):
    for body in [b'{"model": ', b'', b'[1, 2]', b'{"model": "x"}', 'not json \xff'.encode('latin-1')]:
        r = httpx.post(server.url + '/chat/completions', content=body, headers={'content-type': 'application/json'})
        assert r.status_code == 400, body
        assert set(r.json()['error']) == {'message', 'type', 'param', 'code'}
    r = httpx.get(server.url + '/chat/completions')
    assert r.status_code == 405 and 'error' in r.json()


PROMPTS = ['Name a fruit.', 'What is 3+4?', 'Say hello.', 'Name a planet.', 'What colour is the sky?', 'Count to three.']

async def solo_and_together(aclient, **kw):
    "Answers to PROMPTS one at a time, then all at once (half of them streamed)."
    async def one(p):
        r = await aclient.chat.completions.create(model=MODEL, messages=[{'role': 'user', 'content': p}], temperature=0, max_tokens=24, **kw)
        return r.choices[0].message.content
    async def streamed(p):
        out = []
        async for c in await aclient.chat.completions.create(model=MODEL, messages=[{'role': 'user', 'content': p}],
                                                               temperature=0, max_tokens=24, stream=True, **kw):
            if c.choices and c.choices[0].delta.content: out.append(c.choices[0].delta.content)
        return ''.join(out)
    solo = [await one(p) for p in PROMPTS]
    return solo, list(await asyncio.gather(*[streamed(p) if i % 2 else one(p) for i, p in enumerate(PROMPTS)]))


async def test_concurrent_streams(aclient):
    "Default mode: concurrent requests share decode steps and each gets its full answer."
    solo, together = await solo_and_together(aclient, extra_body={'ignore_eos': True})
    assert all(together) and len(set(together)) == len(PROMPTS)  # everyone got an answer of their own


async def test_concurrent_streams_match_solo_when_batch_invariant():
    "With HYBRIE_BATCH_INVARIANT=1, concurrent answers are bit-identical to the same requests alone."
    from openai import AsyncOpenAI
    with start_server(env={'HYBRIE_BATCH_INVARIANT': '1'}) as s:
        solo, together = await solo_and_together(AsyncOpenAI(base_url=s.url, api_key='unused', max_retries=0))
    assert together == solo


def test_disconnect_stops_generation(server):
    body = {'model': MODEL, 'messages': [{'role': 'user', 'content': 'Write a very long essay about the sea.'}],
            'max_tokens': 3000, 'stream': True, 'temperature': 1.0, 'extra': 1}
    def running():
        m = httpx.get(server.root + '/metrics').text
        return float(re.search(r'hybrie_requests_running\{endpoint="chat"\} (\S+)', m).group(1))
    def generated():
        return float(re.search(r'hybrie_tokens_total\{kind="generated"\} (\S+)', httpx.get(server.root + '/metrics').text).group(1))
    with httpx.stream('POST', server.url + '/chat/completions', json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 3: break
    deadline = time.time() + 10
    while running() > 0 and time.time() < deadline: time.sleep(0.1)
    assert running() == 0
    # the engine stopped: a cancelled request's tokens stop counting and the next request is served at once
    t0 = time.time()
    r = httpx.post(server.url + '/chat/completions', json={'model': MODEL, 'messages': Q, 'max_tokens': 2}, timeout=60)
    assert r.status_code == 200 and time.time() - t0 < 5


def test_overload_answers_429():
    # one sequence decodes, two may wait; of 8 simultaneous requests at least the two waiting ones are served
    # (which request is admitted first is a race, so the count of 200s is a lower bound), and the rest get 429
    with start_server('--max-batch-size', '1', '--max-queue', '2') as s:
        body = {'model': MODEL, 'messages': Q, 'max_tokens': 200, 'temperature': 1.0, 'ignore_eos': True}
        async def go():
            async with httpx.AsyncClient(timeout=120) as c:
                return await asyncio.gather(*[c.post(s.url + '/chat/completions', json=body) for _ in range(8)])
        rs = asyncio.run(go())
        codes = sorted(r.status_code for r in rs)
        assert codes.count(200) >= 2 and 429 in codes, codes
        r429 = next(r for r in rs if r.status_code == 429)
        assert int(r429.headers['retry-after']) >= 1 and r429.json()['error']['code'] == 'rate_limit_exceeded'


def test_wrong_endpoint_is_named(client):
    "A model /v1/models lists for another endpoint gets a 400 that names the endpoint."
    for model, endpoint in [('all-minilm-l6-v2', '/v1/embeddings'), ('tts-1', '/v1/audio/speech'), ('whisper-1', '/v1/audio/transcriptions')]:
        with pytest.raises(openai.BadRequestError) as e: client.chat.completions.create(model=model, messages=Q, max_tokens=2)
        assert endpoint in e.value.body['message'], e.value.body


def test_thinking_mode_without_reasoning_is_accepted(client):
    "The bundled model has no thinking mode: `thinking_mode` is accepted and changes nothing."
    kw = dict(model=MODEL, messages=Q, temperature=0, max_tokens=12)
    plain = client.chat.completions.create(**kw).choices[0].message
    for mode in ('on', 'off', True, 'auto'):
        m = client.chat.completions.create(extra_body={'thinking_mode': mode}, **kw).choices[0].message
        assert m.content == plain.content and not getattr(m, 'reasoning_content', None)


def test_cut_character_never_ends_in_replacement(client, server):
    "A max_tokens cut inside a multi-byte character drops the incomplete bytes, streamed or not."
    # token 10813 of the bundled tokenizer is the bytes F0 9F: the first half of a 4-byte emoji
    kw = dict(model=MODEL, messages=Q, max_tokens=1, logit_bias={'10813': 100})
    r = client.chat.completions.create(**kw)
    assert r.choices[0].message.content == '' and r.choices[0].finish_reason == 'length'
    text = ''.join(c.choices[0].delta.content or '' for c in client.chat.completions.create(stream=True, **kw) if c.choices)
    assert text == ''
    r = client.chat.completions.create(**(kw | {'max_tokens': 4, 'logit_bias': {}, 'messages': [{'role': 'user', 'content': 'Reply with one emoji.'}]}))
    assert '\ufffd' not in r.choices[0].message.content


def test_greedy_is_repeatable_and_top_k_1_equals_it(client):
    "temperature 0 gives the same text every time on an idle server, and top_k 1 at any temperature equals it."
    kw = dict(model=MODEL, messages=[{'role': 'user', 'content': 'Write a long story about a dragon.'}], max_tokens=60)
    greedy = client.chat.completions.create(temperature=0, **kw).choices[0].message.content
    assert client.chat.completions.create(temperature=0, **kw).choices[0].message.content == greedy
    for t in (0.5, 1.0, 1.8):
        assert client.chat.completions.create(temperature=t, extra_body={'top_k': 1}, **kw).choices[0].message.content == greedy


def test_largest_seed_with_several_choices(client):
    "The largest 64-bit seed works with n > 1 (each choice seeds seed + index, wrapped to 64 bits)."
    r = client.chat.completions.create(model=MODEL, messages=Q, seed=2**63 - 1, n=2, temperature=1.0, max_tokens=3)
    assert len(r.choices) == 2
