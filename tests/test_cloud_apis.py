"""The Responses, Messages and legacy completions APIs through the cloud providers: a real `hybrie serve --no-local`
whose provider SDKs talk to the loopback stand-ins of `cloud_standins` (each speaking its provider's wire format and
checking what comes back as the provider does), driven from outside by the official `openai` and `anthropic` SDKs."""
import json
import anthropic, httpx, openai, pytest
from conftest import start_server

KEYS = {'OPENAI_API_KEY': 'sk-test-openai-SECRET1', 'ANTHROPIC_API_KEY': 'sk-ant-test-SECRET2',
        'GEMINI_API_KEY': 'gm-test-SECRET3', 'MISTRAL_API_KEY': 'ms-test-SECRET4'}
MODELS = {'openai': 'gpt-4.1-mini', 'anthropic': 'claude-sonnet-4-6', 'gemini': 'gemini-3-flash-preview', 'mistral': 'mistral-small-latest'}
PROVIDERS = list(MODELS)
HELLO = {p: f'Hello from {p}!' for p in PROVIDERS}
TOOLS = [{'type': 'function', 'name': 'get_weather', 'description': 'Weather of a city',
          'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}]
TIME = {'type': 'function', 'name': 'get_time', 'description': 'Time in a city',
        'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}
A_TOOLS = [{'name': t['name'], 'description': t['description'], 'input_schema': t['parameters']} for t in TOOLS + [TIME]]


@pytest.fixture(scope='module')
def gateway(standins):
    "A cloud-only gateway (no local model) in front of the stand-ins."
    env = {**KEYS, **standins.env(), 'HYBRIE_CLOUD_MAX_RETRIES': '0', 'HYBRIE_CLOUD_TIMEOUT': '1.5'}
    with start_server('--no-local', env=env) as s:
        yield s
        log = s.log()
    for k in KEYS.values(): assert k not in log


@pytest.fixture(scope='module')
def oc(gateway): return openai.OpenAI(base_url=gateway.url, api_key='unused', max_retries=0)


@pytest.fixture(scope='module')
def ac(gateway): return anthropic.Anthropic(base_url=gateway.root, api_key='unused', max_retries=0)


def weather(city): return {'Oslo': 'sunny', 'Paris': 'rain'}.get(city, 'fog')


# ---------------------------------------------------------------- Responses API

@pytest.mark.parametrize('p', PROVIDERS)
def test_responses_full_and_streamed(oc, p):
    r = oc.responses.with_raw_response.create(model=MODELS[p], input='Hi')
    assert r.headers['x-hybrie-executed-by'] == f'cloud:{p}'
    resp = r.parse()
    assert resp.output_text == HELLO[p] and resp.status == 'completed' and resp.model == MODELS[p]
    assert resp.usage.input_tokens == 11 and resp.usage.output_tokens == 4
    events = list(oc.responses.create(model=MODELS[p], input='Hi', stream=True))
    assert ''.join(e.delta for e in events if e.type == 'response.output_text.delta') == HELLO[p]
    assert events[-1].type == 'response.completed' and events[-1].response.output_text == HELLO[p]


@pytest.mark.parametrize('p', PROVIDERS)
@pytest.mark.parametrize('stream', [False, True])
def test_responses_tool_call_and_result(oc, standins, p, stream):
    def create(**kw):
        if not stream: return oc.responses.create(model=MODELS[p], tools=TOOLS, **kw)
        return list(oc.responses.create(model=MODELS[p], tools=TOOLS, stream=True, **kw))[-1].response
    first = create(input='Weather in Oslo? @tool')
    call = first.output[-1]
    assert (call.type, call.name, json.loads(call.arguments)) == ('function_call', 'get_weather', {'city': 'Oslo'})
    second = create(previous_response_id=first.id, input=[{'type': 'function_call_output', 'call_id': call.call_id, 'output': 'sunny'},
                                                          {'role': 'user', 'content': 'Thanks.'}])
    assert second.output_text == HELLO[p]
    _, _, body = standins.last(p)
    sent = json.dumps(body)
    assert 'sunny' in sent and 'get_weather' in sent  # the provider got the call and its result, in its own format


def responses_agent(oc, model, store=True, **kw) -> list:
    "Play the stand-ins' `@loop` agent through the Responses API until it answers: `previous_response_id`, or items replayed."
    items, prev, rounds = [{'role': 'user', 'content': 'Weather and time in Oslo and Paris? @loop'}], None, []
    for _ in range(6):
        r = oc.responses.create(model=model, tools=TOOLS + [TIME], input=items, previous_response_id=prev, store=store, **kw)
        calls = [o for o in r.output if o.type == 'function_call']
        rounds.append(r)
        if not calls: return rounds
        results = [{'type': 'function_call_output', 'call_id': c.call_id, 'output': weather(json.loads(c.arguments)['city'])} for c in calls]
        if store: items, prev = results, r.id
        else: items = items + [o.model_dump(exclude_none=True) for o in r.output] + results
    raise AssertionError('the agent did not finish')


@pytest.mark.parametrize('p', PROVIDERS)
def test_responses_agent_loop(oc, p):
    rounds = responses_agent(oc, MODELS[p])
    assert rounds[-1].output_text == 'Done: sunny; rain; sunny'
    assert [sum(o.type == 'function_call' for o in r.output) for r in rounds] == [2, 1, 0]


@pytest.mark.parametrize('store', [True, False])
def test_responses_signed_thinking_round_trips(oc, standins, store):
    "Claude's signed thinking (and a redacted block) goes back intact, kept by the server or replayed by the client as `encrypted_content`."
    rounds = responses_agent(oc, MODELS['anthropic'], store=store, reasoning={'effort': 'high'}, include=['reasoning.encrypted_content'])
    assert rounds[-1].output_text == 'Done: sunny; rain; sunny'  # the stand-in answers 400 to a thinking block that is missing or altered
    assert rounds[0].output[0].type == 'reasoning' and rounds[0].output[0].summary[0].text == 'Round 0: call the tools.'
    assert rounds[0].output[0].encrypted_content
    _, _, body = standins.last('anthropic')
    assert body['thinking']['type'] == 'enabled'


# ---------------------------------------------------------------- Anthropic Messages API

@pytest.mark.parametrize('p', PROVIDERS)
def test_messages_through_every_provider(ac, p):
    r = ac.messages.with_raw_response.create(model=MODELS[p], max_tokens=100, messages=[{'role': 'user', 'content': 'Hi'}])
    assert r.headers['x-hybrie-executed-by'] == f'cloud:{p}'
    m = r.parse()
    assert (m.content[0].text, m.stop_reason, m.usage.input_tokens) == (HELLO[p], 'end_turn', 11)
    with ac.messages.stream(model=MODELS[p], max_tokens=100, messages=[{'role': 'user', 'content': 'Weather? @tool'}], tools=A_TOOLS[:1]) as s:
        final = s.get_final_message()
    assert final.stop_reason == 'tool_use' and (final.content[-1].name, final.content[-1].input) == ('get_weather', {'city': 'Oslo'})


@pytest.mark.parametrize('stream', [False, True])
def test_messages_agent_with_thinking_through_anthropic(ac, standins, stream):
    "Claude Code's loop: thinking on, tool calls, results; the signed and redacted blocks go back as they came."
    msgs, kw = [{'role': 'user', 'content': 'Weather and time in Oslo and Paris? @loop'}], dict(thinking={'type': 'enabled', 'budget_tokens': 1024})
    for _ in range(6):
        if stream:
            with ac.messages.stream(model=MODELS['anthropic'], max_tokens=4096, tools=A_TOOLS, messages=msgs, **kw) as s: m = s.get_final_message()
        else: m = ac.messages.create(model=MODELS['anthropic'], max_tokens=4096, tools=A_TOOLS, messages=msgs, **kw)
        uses = [b for b in m.content if b.type == 'tool_use']
        if not uses: break
        assert m.content[0].type in ('thinking', 'redacted_thinking') and m.stop_reason == 'tool_use'
        msgs += [{'role': 'assistant', 'content': m.content},
                 {'role': 'user', 'content': [{'type': 'tool_result', 'tool_use_id': u.id, 'content': weather(u.input['city'])} for u in uses]}]
    assert m.content[-1].text == 'Done: sunny; rain; sunny'
    _, _, body = standins.last('anthropic')
    assert {b['type'] for m in body['messages'] if m['role'] == 'assistant' for b in m['content']} >= {'thinking', 'redacted_thinking', 'tool_use'}


def test_messages_count_tokens(ac, standins):
    n = ac.messages.count_tokens(model=MODELS['anthropic'], system='Be brief.', tools=A_TOOLS[:1], messages=[{'role': 'user', 'content': 'Hi'}])
    assert n.input_tokens == 3 + 5 + 7  # counted by Anthropic (the stand-in): one message, one tool, a system prompt
    path, _, body = standins.last('anthropic')
    assert path == '/anthropic/v1/messages/count_tokens' and body['system'] == 'Be brief.'
    with pytest.raises(anthropic.BadRequestError) as e: ac.messages.count_tokens(model=MODELS['openai'], messages=[{'role': 'user', 'content': 'Hi'}])
    assert e.value.body['error']['type'] == 'invalid_request_error' and 'not available' in e.value.body['error']['message']


def test_messages_upstream_errors_in_anthropic_shape(ac, gateway):
    with pytest.raises(anthropic.RateLimitError) as e: ac.messages.create(model=MODELS['openai'], max_tokens=10, messages=[{'role': 'user', 'content': '@429'}])
    assert e.value.body['error']['type'] == 'rate_limit_error' and e.value.response.headers['retry-after'] == '7'
    with pytest.raises(anthropic.APIStatusError) as e: ac.messages.create(model=MODELS['gemini'], max_tokens=10, messages=[{'role': 'user', 'content': '@500'}])
    assert e.value.status_code == 502 and e.value.body['error']['type'] == 'api_error'
    body = {'model': MODELS['anthropic'], 'max_tokens': 10, 'stream': True, 'messages': [{'role': 'user', 'content': 'Hi @cut'}]}
    with httpx.stream('POST', gateway.root + '/v1/messages', json=body, timeout=30) as r:
        lines = [l for l in r.iter_lines() if l]
    assert lines[-2] == 'event: error' and json.loads(lines[-1][6:])['error']['type'] == 'api_error'


# ---------------------------------------------------------------- legacy completions

@pytest.mark.parametrize('p', PROVIDERS)
def test_completions_as_one_user_message(oc, standins, p):
    r = oc.completions.with_raw_response.create(model=MODELS[p], prompt='Once upon a time', max_tokens=20, echo=True)
    assert r.headers['x-hybrie-executed-by'] == f'cloud:{p}'
    assert r.parse().choices[0].text == 'Once upon a time' + HELLO[p]
    assert 'Once upon a time' in json.dumps(standins.last(p)[2])  # sent as the one user message of a chat
    chunks = list(oc.completions.create(model=MODELS[p], prompt='Once upon a time', max_tokens=20, stream=True))
    assert ''.join(c.choices[0].text for c in chunks if c.choices) == HELLO[p]


def test_completions_logprobs_and_n_through_openai(oc, standins):
    r = oc.completions.create(model=MODELS['openai'], prompt='Hi', max_tokens=20, logprobs=1, n=2)
    _, _, body = standins.last('openai')
    assert (body['messages'], body['n'], body['logprobs'], body['top_logprobs']) == ([{'role': 'user', 'content': 'Hi'}], 2, True, 1)
    assert r.choices[0].logprobs.token_logprobs == [-0.25] and r.choices[0].logprobs.tokens == [HELLO['openai']]


@pytest.mark.parametrize('kw,param', [(dict(prompt=[1, 2, 3]), 'prompt'), (dict(suffix='end'), 'suffix'), (dict(echo=True, logprobs=1), 'echo')])
def test_completions_what_needs_a_local_model_is_400(oc, kw, param):
    with pytest.raises(openai.BadRequestError) as e: oc.completions.create(**(dict(model=MODELS['openai'], prompt='Hi', max_tokens=5) | kw))
    assert e.value.body['param'] == param


def test_responses_upstream_errors(oc, gateway):
    with pytest.raises(openai.RateLimitError) as e: oc.responses.create(model=MODELS['anthropic'], input='@429')
    assert e.value.response.headers['retry-after'] == '7'
    events = []
    with httpx.stream('POST', gateway.url + '/responses', json={'model': MODELS['openai'], 'input': 'Hi @cut', 'stream': True}, timeout=30) as r:
        events = [json.loads(l[6:]) for l in r.iter_lines() if l.startswith('data: ')]
    assert [e['type'] for e in events[-2:]] == ['response.failed', 'error']
    assert events[-2]['response']['status'] == 'failed' and events[-1]['code'] == 'upstream_unavailable'
