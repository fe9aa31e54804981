"""Structured output and tool calling on local models, through a real `hybrie serve` and the official `openai` SDK.

Three models answer: the bundled SmolLM2 (a real small model, llama architecture, ChatML template without tools), a tiny
random-weight Qwen3 (the real Qwen3 template, which renders tools natively; what it writes under a grammar is decided by
the grammar alone), and a tiny hand-set Qwen3 that opens a tool call (or thinks `Hmm` first) by itself, for `auto`.
Every JSON answer is parsed and validated with `jsonschema`; every tool call's arguments against its function's schema.
"""
import asyncio, json
import jsonschema, openai, pytest
from conftest import start_server
from tiny_qwen3 import chain_qwen3, qwen3_tokenizer, random_qwen3

BASE = 'smollm2-135m-instruct'

SCHEMAS = {
    'nested': {'type': 'object', 'properties': {
        'person': {'type': 'object', 'properties': {
            'name': {'type': 'string', 'maxLength': 24},
            'address': {'type': 'object', 'properties': {'city': {'type': 'string', 'maxLength': 20},
                                                         'zip': {'type': 'string', 'pattern': '^[0-9]{5}$'}},
                        'required': ['city', 'zip'], 'additionalProperties': False}},
            'required': ['name', 'address'], 'additionalProperties': False}},
        'required': ['person'], 'additionalProperties': False},
    'array': {'type': 'object', 'properties': {'scores': {'type': 'array', 'items': {'type': 'integer', 'minimum': -5, 'maximum': 5},
                                                          'minItems': 2, 'maxItems': 4}},
              'required': ['scores'], 'additionalProperties': False},
    'enums': {'type': 'object', 'properties': {'color': {'enum': ['red', 'green', 'blue']},
                                               'size': {'type': 'string', 'enum': ['S', 'M', 'L']},
                                               'in_stock': {'type': 'boolean'}},
              'required': ['color', 'size', 'in_stock'], 'additionalProperties': False},
    'bounded_integers': {'type': 'object', 'properties': {'age': {'type': 'integer', 'minimum': 18, 'maximum': 99},
                                                          'floor': {'type': 'integer', 'exclusiveMinimum': -3, 'exclusiveMaximum': 40}},
                         'required': ['age', 'floor'], 'additionalProperties': False},
    'any_of': {'type': 'object', 'properties': {'pet': {'anyOf': [
        {'type': 'object', 'properties': {'kind': {'const': 'cat'}, 'lives': {'type': 'integer', 'minimum': 1, 'maximum': 9}},
         'required': ['kind', 'lives'], 'additionalProperties': False},
        {'type': 'object', 'properties': {'kind': {'const': 'dog'}, 'good': {'type': 'boolean'}},
         'required': ['kind', 'good'], 'additionalProperties': False}]}},
        'required': ['pet'], 'additionalProperties': False},
    'refs_and_null': {'$defs': {'pt': {'type': 'object', 'properties': {'x': {'type': 'integer', 'minimum': 0, 'maximum': 9},
                                                                       'y': {'type': 'integer', 'minimum': 0, 'maximum': 9}},
                                       'required': ['x', 'y'], 'additionalProperties': False}},
                      'type': 'object', 'properties': {'start': {'$ref': '#/$defs/pt'}, 'end': {'$ref': '#/$defs/pt'},
                                                       'label': {'type': ['string', 'null'], 'maxLength': 12}},
                      'required': ['start', 'end', 'label'], 'additionalProperties': False},
}
# numbers with real-valued bounds: only for the real model (a random one may write digits until max_tokens)
NUMBERS = {'type': 'object', 'properties': {'price': {'type': 'number', 'minimum': 0, 'maximum': 1000},
                                            'rating': {'type': 'number', 'minimum': 1, 'maximum': 5}},
           'required': ['price', 'rating'], 'additionalProperties': False}

WEATHER = {'type': 'function', 'function': {'name': 'get_weather', 'description': 'Current weather in a city.',
           'parameters': {'type': 'object', 'properties': {'city': {'type': 'string', 'maxLength': 30},
                                                           'unit': {'enum': ['celsius', 'fahrenheit']}},
                          'required': ['city', 'unit'], 'additionalProperties': False}}}
TIME = {'type': 'function', 'function': {'name': 'get_time', 'description': 'Current local time in a city.',
        'parameters': {'type': 'object', 'properties': {'city': {'enum': ['Paris', 'Tokyo', 'Lima']}},
                       'required': ['city'], 'additionalProperties': False}}}
TOOLS = [WEATHER, TIME]
PARAMS = {t['function']['name']: t['function']['parameters'] for t in TOOLS}
ASK = [{'role': 'user', 'content': 'What is the weather in Paris right now?'}]


def rf(schema, name='answer'): return {'type': 'json_schema', 'json_schema': {'name': name, 'schema': schema, 'strict': True}}


def check_json(content, schema):
    "The answer parses and validates against `schema`; returns it."
    value = json.loads(content)
    jsonschema.validate(value, schema)
    return value


def check_calls(message, finish_reason, names=None):
    "Every tool call is well formed: unique ids, a known name, arguments valid against its function; returns the calls."
    calls = message.tool_calls
    assert calls and finish_reason == 'tool_calls'
    assert len({c.id for c in calls}) == len(calls) and all(c.id.startswith('call_') for c in calls)
    for c in calls:
        assert c.type == 'function' and c.function.name in (names or PARAMS)
        jsonschema.validate(json.loads(c.function.arguments), PARAMS[c.function.name])
    assert not (message.content or '').count('<tool_call>')
    return calls


def reassemble(chunks):
    "The message a stream of chunks adds up to, by the rules an OpenAI client follows (tool calls keyed by `index`)."
    content, reasoning, calls, finish, roles = '', '', {}, None, []
    for ch in chunks:
        if not ch.choices: continue
        d = ch.choices[0].delta
        if d.role: roles.append(d.role)
        content += d.content or ''
        reasoning += (d.model_extra or {}).get('reasoning_content') or ''
        for tc in d.tool_calls or []:
            assert tc.index is not None
            c = calls.setdefault(tc.index, {'id': None, 'name': None, 'arguments': ''})
            if tc.id: assert c['id'] is None, 'a call id is sent once'; c['id'] = tc.id
            if tc.function and tc.function.name: assert c['name'] is None, 'a call name is sent once'; c['name'] = tc.function.name
            if tc.function and tc.function.arguments: c['arguments'] += tc.function.arguments
        finish = ch.choices[0].finish_reason or finish
    assert roles == ['assistant']
    assert sorted(calls) == list(range(len(calls))), 'call indexes count from 0'
    return content or None, reasoning or None, [calls[i] for i in sorted(calls)], finish


# --- the bundled model ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', [*SCHEMAS, 'numbers'])
@pytest.mark.parametrize('temperature', [0, 1.0, 1.6])
def test_schema_holds_at_any_temperature(client, name, temperature):
    "Every schema at every temperature (the bounds keep a hot sample's strings and numbers short enough to end)."
    schema = NUMBERS if name == 'numbers' else SCHEMAS[name]
    r = client.chat.completions.create(model=BASE, messages=[{'role': 'user', 'content': f'Give me an example {name} record.'}],
                                       response_format=rf(schema), temperature=temperature, seed=7, max_tokens=300)
    assert r.choices[0].finish_reason == 'stop'
    check_json(r.choices[0].message.content, schema)


def test_json_object_mode(client):
    """Any JSON object. (A free-form object can run to `max_tokens`: sampled hot it may still be writing strings, and greedy
    the small model repeats its keys for ever; a frequency penalty lets it close the object.)"""
    r = client.chat.completions.create(model=BASE, messages=[{'role': 'user', 'content': 'A JSON object describing a cat.'}],
                                       response_format={'type': 'json_object'}, temperature=0, frequency_penalty=0.5, max_tokens=300)
    assert r.choices[0].finish_reason == 'stop'
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_streamed_json_equals_full(client):
    kw = dict(model=BASE, messages=[{'role': 'user', 'content': 'Describe a pet.'}], response_format=rf(SCHEMAS['any_of']),
              temperature=0.9, seed=11, max_tokens=200)
    full = client.chat.completions.create(**kw).choices[0]
    content, _, calls, finish = reassemble(client.chat.completions.create(stream=True, **kw))
    assert (content, calls, finish) == (full.message.content, [], full.finish_reason)
    check_json(content, SCHEMAS['any_of'])


def test_n_choices_each_valid(client):
    r = client.chat.completions.create(model=BASE, messages=[{'role': 'user', 'content': 'A product.'}], n=3, temperature=1.3,
                                       seed=5, response_format=rf(SCHEMAS['enums']), max_tokens=100)
    assert len(r.choices) == 3
    for c in r.choices: check_json(c.message.content, SCHEMAS['enums'])


@pytest.mark.parametrize('choice', ['required', {'type': 'function', 'function': {'name': 'get_time'}}])
def test_forced_tool_calls_are_valid(client, choice):
    "Greedy with parallel calls allowed, and hot with one call (a hot small model may call again and again until `max_tokens`)."
    names = ['get_time'] if isinstance(choice, dict) else None
    for temperature, parallel in ((0, True), (1.5, False)):
        r = client.chat.completions.create(model=BASE, messages=ASK, tools=TOOLS, tool_choice=choice, temperature=temperature,
                                           parallel_tool_calls=parallel, seed=2, max_tokens=200)
        assert r.choices[0].message.content is None
        check_calls(r.choices[0].message, r.choices[0].finish_reason, names)


def test_one_call_when_parallel_calls_are_off(client):
    r = client.chat.completions.create(model=BASE, messages=ASK, tools=TOOLS, tool_choice='required', parallel_tool_calls=False,
                                       temperature=1.0, seed=4, max_tokens=200)
    assert len(check_calls(r.choices[0].message, r.choices[0].finish_reason)) == 1


def test_tool_choice_none_writes_text(client):
    r = client.chat.completions.create(model=BASE, messages=ASK, tools=TOOLS, tool_choice='none', temperature=0, max_tokens=40)
    m = r.choices[0].message
    assert m.tool_calls is None and m.content and '<tool_call>' not in m.content
    assert r.choices[0].finish_reason in ('stop', 'length')


def test_auto_without_a_call_is_plain_text(client):
    "SmolLM2 does not call tools by itself: with `auto` its text comes back as content, finish reason stop or length."
    r = client.chat.completions.create(model=BASE, messages=[{'role': 'user', 'content': 'Say hello.'}], tools=TOOLS,
                                       temperature=0, max_tokens=30)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    assert r.choices[0].finish_reason in ('stop', 'length')


def test_streamed_tool_calls_reassemble_to_the_full_message(client):
    kw = dict(model=BASE, messages=ASK, tools=TOOLS, tool_choice='required', temperature=0, max_tokens=200)  # greedy: two calls
    full = client.chat.completions.create(**kw).choices[0]
    assert len(full.message.tool_calls) >= 2
    content, _, calls, finish = reassemble(client.chat.completions.create(stream=True, **kw))
    assert (content, finish) == (None, 'tool_calls')
    assert [(c['name'], c['arguments']) for c in calls] == [(c.function.name, c.function.arguments) for c in full.message.tool_calls]
    assert all(c['id'].startswith('call_') for c in calls)


def test_multi_round_tool_conversation(client):
    "Call, result, call again, result, answer: each turn's assistant `tool_calls` and `tool` messages go back in."
    msgs = list(ASK)
    for _ in range(2):
        r = client.chat.completions.create(model=BASE, messages=msgs, tools=TOOLS, tool_choice='required', parallel_tool_calls=False,
                                           temperature=0, max_tokens=120)
        call = check_calls(r.choices[0].message, r.choices[0].finish_reason)[0]
        msgs.append(r.choices[0].message.model_dump(exclude_none=True))
        msgs.append({'role': 'tool', 'tool_call_id': call.id, 'content': json.dumps({'temperature': 21, 'sky': 'clear'})})
    r = client.chat.completions.create(model=BASE, messages=msgs, tools=TOOLS, tool_choice='none', temperature=0, max_tokens=40)
    assert r.choices[0].message.content and r.choices[0].message.tool_calls is None
    assert r.usage.prompt_tokens > 100  # the whole history, tool definitions and results were rendered


def test_schema_and_tools_together(client):
    "`auto` with a `response_format`: the answer is either a valid call or JSON valid against the schema."
    r = client.chat.completions.create(model=BASE, messages=ASK, tools=TOOLS, response_format=rf(SCHEMAS['enums']),
                                       temperature=0.7, seed=1, max_tokens=200)
    m = r.choices[0].message
    if m.tool_calls: check_calls(m, r.choices[0].finish_reason)
    else: check_json(m.content, SCHEMAS['enums'])


async def test_constrained_and_free_requests_batch_together(aclient):
    "Eight concurrent requests, half constrained: every constrained one valid, every free one answered."
    async def one(i):
        kw = dict(model=BASE, messages=[{'role': 'user', 'content': f'Tell me about city number {i}.'}], temperature=1.0,
                  seed=i, max_tokens=60)
        if i % 2: kw['response_format'] = rf(SCHEMAS['nested'])
        if i == 2: kw |= dict(tools=TOOLS, tool_choice='required')
        return i, await aclient.chat.completions.create(**kw)
    for i, r in await asyncio.gather(*(one(i) for i in range(8))):
        c = r.choices[0]
        if i % 2: check_json(c.message.content, SCHEMAS['nested'])
        elif i == 2: check_calls(c.message, c.finish_reason)
        else: assert c.message.content


# --- bad requests --------------------------------------------------------------------------------------------------

BAD = [
    ({'response_format': {'type': 'xml'}}, 'response_format.type'),
    ({'response_format': {'type': 'json_schema'}}, 'response_format.json_schema'),
    ({'response_format': rf({'type': 'object'}, name='has spaces')}, 'response_format.json_schema.name'),
    ({'response_format': {'type': 'json_schema', 'json_schema': {'name': 'x', 'schema': 'object'}}}, 'response_format.json_schema.schema'),
    ({'response_format': rf({'type': 'object', 'properties': {'a': {'type': 'string', 'pattern': '(?<=a)b'}}})}, 'response_format.json_schema.schema'),
    ({'response_format': rf({'type': 'array', 'items': {'type': 'integer'}, 'uniqueItems': True})}, 'response_format.json_schema.schema'),
    ({'tools': [{'type': 'retrieval'}]}, 'tools.0.type'),
    ({'tools': [{'type': 'function'}]}, 'tools.0.function'),
    ({'tools': [{'type': 'function', 'function': {'name': 'get weather'}}]}, 'tools.0.function.name'),
    ({'tools': [{'type': 'function', 'function': {'name': 'f', 'parameters': {'type': 'array'}}}]}, 'tools.0.function.parameters'),
    ({'tools': [WEATHER, WEATHER]}, 'tools'),
    ({'tools': [{'type': 'function', 'function': {'name': 'f', 'parameters': {'type': 'object', 'properties': {
        'a': {'type': 'string', 'pattern': '(?=x)'}}}}}]}, 'tools.0.function.parameters'),
    ({'tools': TOOLS, 'tool_choice': {'type': 'function', 'function': {'name': 'nope'}}}, 'tool_choice'),
    ({'tools': TOOLS, 'tool_choice': 'always'}, 'tool_choice'),
    ({'tool_choice': 'required'}, 'tool_choice'),
]


@pytest.mark.parametrize('extra,param', BAD, ids=[p for _, p in BAD])
def test_bad_schemas_and_tools_are_400(client, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=BASE, messages=ASK, max_tokens=5, extra_body=extra)
    assert e.value.status_code == 400
    err = e.value.body
    assert err['type'] == 'invalid_request_error' and err['param'] == param and err['message']


def test_tool_message_needs_its_call_id(client):
    msgs = ASK + [{'role': 'assistant', 'tool_calls': [{'id': 'call_1', 'type': 'function',
                                                        'function': {'name': 'get_time', 'arguments': '{"city": "Lima"}'}}]},
                  {'role': 'tool', 'content': '12:00'}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=BASE, messages=msgs, tools=TOOLS, max_tokens=5)
    assert 'tool_call_id' in e.value.body['message']


# --- the tiny random Qwen3: the real template, answers decided by the grammar alone --------------------------------

@pytest.fixture(scope='module')
def rqwen(tmp_path_factory):
    d = random_qwen3(tmp_path_factory.mktemp('random-qwen3'))
    with start_server('--model', str(d), '--dtype', 'float32') as s:
        yield openai.OpenAI(base_url=s.url, api_key='x', max_retries=0), str(d)


@pytest.mark.parametrize('name', list(SCHEMAS))
def test_random_qwen3_follows_every_schema(rqwen, name):
    c, model = rqwen
    for temperature, stream in ((0, False), (1.5, True)):
        kw = dict(model=model, messages=[{'role': 'user', 'content': 'Answer in JSON.'}], response_format=rf(SCHEMAS[name]),
                  temperature=temperature, seed=13, max_tokens=400, extra_body={'thinking_mode': 'off'})
        if stream: content, _, _, finish = reassemble(c.chat.completions.create(stream=True, **kw))
        else: content, finish = (r := c.chat.completions.create(**kw).choices[0]).message.content, r.finish_reason
        assert finish == 'stop'
        check_json(content, SCHEMAS[name])


@pytest.mark.parametrize('choice', ['required', {'type': 'function', 'function': {'name': 'get_weather'}}])
def test_random_qwen3_forced_calls(rqwen, choice):
    c, model = rqwen
    kw = dict(model=model, messages=ASK, tools=TOOLS, tool_choice=choice, temperature=1.2, seed=21, max_tokens=400,
              parallel_tool_calls=False, extra_body={'thinking_mode': 'off'})  # random weights would call until max_tokens
    full = c.chat.completions.create(**kw).choices[0]
    check_calls(full.message, full.finish_reason, ['get_weather'] if isinstance(choice, dict) else None)
    content, _, calls, finish = reassemble(c.chat.completions.create(stream=True, **kw))
    assert (content, finish) == (None, 'tool_calls')
    assert [(x['name'], x['arguments']) for x in calls] == [(x.function.name, x.function.arguments) for x in full.message.tool_calls]


def test_qwen3_template_renders_tool_turns(rqwen):
    """Tool definitions, an assistant's tool calls and the tool results go through Qwen3's own template: the prompt the
    server counts is exactly the one `apply_chat_template` makes of the same conversation."""
    c, model = rqwen
    msgs = ASK + [{'role': 'assistant', 'content': None, 'tool_calls': [
                      {'id': 'call_a', 'type': 'function', 'function': {'name': 'get_weather', 'arguments': '{"city": "Paris", "unit": "celsius"}'}},
                      {'id': 'call_b', 'type': 'function', 'function': {'name': 'get_time', 'arguments': '{"city": "Paris"}'}}]},
                  {'role': 'tool', 'tool_call_id': 'call_a', 'content': '{"temperature": 21}'},
                  {'role': 'tool', 'tool_call_id': 'call_b', 'content': '14:05'}]
    r = c.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice='required', max_tokens=300, temperature=0,
                                  extra_body={'thinking_mode': 'off'})
    check_calls(r.choices[0].message, r.choices[0].finish_reason)
    tok = qwen3_tokenizer()
    plain = [{**m, 'content': '', 'tool_calls': [{**t, 'function': {**t['function'], 'arguments': json.loads(t['function']['arguments'])}}
                                                for t in m['tool_calls']]} if m.get('tool_calls') else m for m in msgs]
    text = tok.apply_chat_template(plain, tools=TOOLS, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert '<tool_response>\n{"temperature": 21}\n</tool_response>' in text and '"name": "get_weather"' in text
    assert r.usage.prompt_tokens == len(tok.encode(text, add_special_tokens=False))


# --- a tiny Qwen3 that calls a tool (or answers) by itself ----------------------------------------------------------

@pytest.fixture(scope='module')
def caller(tmp_path_factory):
    "Says `<think>Hmm</think><tool_call>` (thinking off: `<tool_call>`); the grammar takes over from the tag."
    d = chain_qwen3(tmp_path_factory.mktemp('caller-qwen3'), answer='<tool_call>', extra_tokens=['<tool_call>'])
    with start_server('--model', str(d), '--dtype', 'float32') as s:
        yield openai.OpenAI(base_url=s.url, api_key='x', max_retries=0), str(d)


@pytest.mark.parametrize('thinking', ['off', 'on'])
def test_auto_call_is_parsed_out_of_the_text(caller, thinking):
    c, model = caller
    kw = dict(model=model, messages=ASK, tools=[TIME], temperature=0, max_tokens=100, extra_body={'thinking_mode': thinking})
    r = c.chat.completions.create(**kw).choices[0]
    [call] = check_calls(r.message, r.finish_reason, ['get_time'])
    assert r.message.content is None
    assert getattr(r.message, 'reasoning_content', None) == ('Hmm' if thinking == 'on' else None)
    content, reasoning, calls, finish = reassemble(c.chat.completions.create(stream=True, **kw))
    assert (content, reasoning, finish) == (None, 'Hmm' if thinking == 'on' else None, 'tool_calls')
    assert [(x['name'], x['arguments']) for x in calls] == [('get_time', call.function.arguments)]


def test_reasoning_then_schema(caller):
    "With thinking on, the model reasons freely first; the grammar holds from the end of its reasoning."
    c, model = caller
    r = c.chat.completions.create(model=model, messages=ASK, response_format=rf(SCHEMAS['enums']), temperature=0, max_tokens=100,
                                  extra_body={'thinking_mode': 'on'}).choices[0]
    assert r.message.reasoning_content == 'Hmm' and r.finish_reason == 'stop'
    check_json(r.message.content, SCHEMAS['enums'])


def test_auto_without_tools_offered_keeps_the_tag_as_text(caller):
    "No tools offered: the model's `<tool_call>` is its text, not a call (nothing parses text that no tool asked for)."
    c, model = caller
    r = c.chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=5, extra_body={'thinking_mode': 'off'}).choices[0]
    assert r.message.content == '<tool_call>' and r.message.tool_calls is None


# --- Qwen3-Coder's XML tool format -----------------------------------------------------------------------------------

HOW_LONG = {'type': 'function', 'function': {'name': 'trip_days', 'description': 'Days a trip takes.',
            'parameters': {'type': 'object', 'properties': {'city': {'enum': ['Paris', 'Tokyo', 'Lima']},
                                                            'days': {'type': 'integer', 'minimum': 1, 'maximum': 9}},
                           'required': ['city', 'days'], 'additionalProperties': False}}}


@pytest.fixture(scope='module')
def coder(tmp_path_factory):
    "A tiny Qwen3 whose template writes tool calls in Qwen3-Coder's XML (so its family is `qwen3_coder`); it says `<tool_call>`."
    d = chain_qwen3(tmp_path_factory.mktemp('coder-qwen3'), think=None, answer='<tool_call>', extra_tokens=['<tool_call>'],
                    template='xml_tools_template.jinja')
    with start_server('--model', str(d), '--dtype', 'float32') as s:
        yield openai.OpenAI(base_url=s.url, api_key='x', max_retries=0), str(d)


@pytest.mark.parametrize('choice', ['auto', 'required'])
def test_xml_format_calls(coder, choice):
    "The model opens a call; the XML grammar takes over and the call comes back as OpenAI JSON, full and streamed alike."
    c, model = coder
    kw = dict(model=model, messages=ASK, tools=[TIME, HOW_LONG], tool_choice=choice, temperature=0, max_tokens=200)
    r = c.chat.completions.create(**kw).choices[0]
    assert r.finish_reason == 'tool_calls' and r.message.content is None
    params = {t['function']['name']: t['function']['parameters'] for t in (TIME, HOW_LONG)}
    for call in r.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), params[call.function.name])
    content, _, calls, finish = reassemble(c.chat.completions.create(stream=True, **kw))
    assert (content, finish) == (None, 'tool_calls')
    assert [(x['name'], x['arguments']) for x in calls] == [(x.function.name, x.function.arguments) for x in r.message.tool_calls]


def test_xml_format_history_renders(coder):
    "An earlier call goes back into the template as XML (its JSON arguments handed over as a mapping), and its result after it."
    c, model = coder
    msgs = ASK + [{'role': 'assistant', 'content': None, 'tool_calls': [
                      {'id': 'call_a', 'type': 'function', 'function': {'name': 'trip_days', 'arguments': '{"city": "Lima", "days": 3}'}}]},
                  {'role': 'tool', 'tool_call_id': 'call_a', 'content': 'ok'}]
    r = c.chat.completions.create(model=model, messages=msgs, tools=[HOW_LONG], tool_choice='required', temperature=0, max_tokens=200)
    assert r.choices[0].finish_reason == 'tool_calls'
    tok = qwen3_tokenizer(['<tool_call>'], 'xml_tools_template.jinja')
    text = tok.apply_chat_template([*ASK, {**msgs[1], 'tool_calls': [{**msgs[1]['tool_calls'][0], 'function': {'name': 'trip_days', 'arguments': {'city': 'Lima', 'days': 3}}}]}, msgs[2]],
                                   tools=[HOW_LONG], add_generation_prompt=True, tokenize=False)
    assert '<function=trip_days>\n<parameter=city>\nLima\n</parameter>\n<parameter=days>\n3\n</parameter>' in text
    assert r.usage.prompt_tokens == len(tok.encode(text, add_special_tokens=False))
