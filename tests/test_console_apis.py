"""The Responses, legacy completions and Anthropic Messages APIs through a real `hybrie console` (SQLite) in front of a
real `hybrie serve` (Managed Inference, the bundled model) and the provider stand-ins (BYOK), driven by the official
`openai` and `anthropic` SDKs: each call is answered as the runtime answers it and metered as chat is."""
from decimal import Decimal
import anthropic, httpx, openai, pytest
from test_console import ConsoleProc, add_byok, usage

MODEL = 'smollm2-135m-instruct'
HI = [{'role': 'user', 'content': 'Say hello.'}]


@pytest.fixture(scope='module')
def console(server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('console-apis')
    c = ConsoleProc(f'sqlite:///{tmp}/console.db', [server.root], tmp)
    yield c
    c.stop()


@pytest.fixture
def account(console):
    a = console.admin('apis')
    return a['api_key']


def clients(console, key):
    return (openai.OpenAI(base_url=console.root + '/api/v1/inference', api_key=key, max_retries=0),
            anthropic.Anthropic(base_url=console.root + '/api/v1/inference', api_key=key, max_retries=0))


def records(console, key, endpoint):
    return [r for r in usage(console.api(key))['data'] if r['endpoint'] == endpoint]


def test_managed_every_api_full_and_streamed_metered_alike(console, account):
    oc, ac = clients(console, account)
    raw = oc.responses.with_raw_response.create(model=MODEL, input='Name three colours.', max_output_tokens=16, temperature=0)
    full = raw.parse()
    assert raw.headers['x-hybrie-route'] == 'managed' and raw.headers['x-hybrie-executed-by'] == 'local' and full.output_text
    events = list(oc.responses.create(model=MODEL, input='Name three colours.', max_output_tokens=16, temperature=0, stream=True))
    assert ''.join(e.delta for e in events if e.type == 'response.output_text.delta') == full.output_text
    # the managed runtime stored the response: the next turn goes on from it
    assert oc.responses.create(model=MODEL, input='And one more?', previous_response_id=full.id, max_output_tokens=16).previous_response_id == full.id

    c = oc.completions.create(model=MODEL, prompt='The capital of France is', max_tokens=6, temperature=0)
    chunks = list(oc.completions.create(model=MODEL, prompt='The capital of France is', max_tokens=6, temperature=0, stream=True))
    assert ''.join(x.choices[0].text for x in chunks if x.choices) == c.choices[0].text
    assert all(x.usage is None for x in chunks)  # the console asked the runtime for usage; the client did not

    m = ac.messages.with_raw_response.create(model=MODEL, max_tokens=12, messages=HI, extra_body={'temperature': 0})
    assert m.headers['x-hybrie-route'] == 'managed'
    with ac.messages.stream(model=MODEL, max_tokens=12, messages=HI, extra_body={'temperature': 0}) as s:
        streamed = s.get_final_message()
    assert streamed.content[0].text == m.parse().content[0].text

    for endpoint, (p, n) in [('responses', (full.usage.input_tokens, full.usage.output_tokens)),
                             ('completions', (c.usage.prompt_tokens, c.usage.completion_tokens)),
                             ('messages', (m.parse().usage.input_tokens, m.parse().usage.output_tokens))]:
        recs = records(console, account, endpoint)[-2:]  # the full and the streamed one
        assert [r['stream'] for r in recs] == [True, False], endpoint
        assert {(r['status'], r['prompt_tokens'], r['completion_tokens'], r['usage_source']) for r in recs} == {('ok', p, n, 'upstream')}, (endpoint, recs)
        assert len({r['cost_usd'] for r in recs}) == 1 and Decimal(recs[0]['cost_usd']) > 0


def test_byok_every_api(console, account, standins):
    oc, ac = clients(console, account)
    add_byok(console.api(account), standins)
    for model, wire in [('gpt-4.1-mini', 'openai'), ('claude-haiku-4-5', 'anthropic')]:
        r = oc.responses.with_raw_response.create(model=model, input='Say hello.')
        assert r.headers['x-hybrie-route'] == 'byok' and r.parse().output_text == f'Hello from {wire}!'
        text = ''.join(e.delta for e in oc.responses.create(model=model, input='Say hello.', stream=True) if e.type == 'response.output_text.delta')
        assert text == f'Hello from {wire}!'
        m = ac.messages.create(model=model, max_tokens=50, messages=HI)
        with ac.messages.stream(model=model, max_tokens=50, messages=HI) as s: streamed = ''.join(s.text_stream)
        assert m.content[0].text == streamed == f'Hello from {wire}!'
        c = oc.completions.create(model=model, prompt='Say hello.', max_tokens=20)
        assert c.choices[0].text == f'Hello from {wire}!'
        chunks = list(oc.completions.create(model=model, prompt='Say hello.', max_tokens=20, stream=True, stream_options={'include_usage': True}))
        assert ''.join(x.choices[0].text for x in chunks if x.choices) == f'Hello from {wire}!' and chunks[-1].usage.prompt_tokens == 11
    for endpoint in ('responses', 'messages', 'completions'):
        recs = [r for r in records(console, account, endpoint) if r['route'] == 'byok']
        assert len(recs) == 4 and {(r['status'], r['prompt_tokens'], r['completion_tokens'], r['usage_source']) for r in recs} == {('ok', 11, 4, 'upstream')}, (endpoint, recs)
    with pytest.raises(openai.BadRequestError) as e:  # nothing stores a BYOK response
        oc.responses.create(model='gpt-4.1-mini', input='Again?', previous_response_id='resp_x')
    assert e.value.body['param'] == 'previous_response_id'


def test_errors_in_each_api_shape(console, account):
    oc, ac = clients(console, account)
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=console.root + '/api/v1/inference', api_key='hyb_nope', max_retries=0).messages.create(model=MODEL, max_tokens=4, messages=HI)
    assert e.value.body['type'] == 'error' and e.value.body['error']['type'] == 'authentication_error'
    with pytest.raises(anthropic.BadRequestError) as e: ac.messages.create(model=MODEL, max_tokens=4, messages=[{'role': 'system', 'content': 'x'}])
    assert e.value.body['error']['type'] == 'invalid_request_error'
    with pytest.raises(anthropic.NotFoundError) as e: ac.messages.create(model='no-such-model', max_tokens=4, messages=HI)
    assert e.value.body['error']['type'] == 'not_found_error'
    r = httpx.post(console.root + '/api/v1/inference/messages', content=b'{"model": ', headers={'x-api-key': account}, timeout=60)
    assert r.status_code == 400 and r.json()['type'] == 'error'
    with pytest.raises(openai.BadRequestError) as e: oc.responses.create(model=MODEL, input='Hi', temperature=3)
    assert e.value.body['param'] == 'temperature'
    with pytest.raises(openai.BadRequestError) as e: oc.completions.create(model=MODEL, prompt=[], max_tokens=2)
    assert e.value.body['param'] == 'prompt'
    with pytest.raises(openai.BadRequestError) as e: oc.completions.create(model=MODEL, prompt='x', suffix='y', max_tokens=2)  # the runtime's 400, passed on
    assert e.value.body['param'] == 'suffix'
    # bodies the console refuses leave no record; the two the runtime refused (a `suffix` without FIM tokens, a system turn) do
    assert [(r['endpoint'], r['http_status']) for r in usage(console.api(account))['data']] == [('completions', 400), ('messages', 400)]
