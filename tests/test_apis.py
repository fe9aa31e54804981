"""The Responses API, legacy completions and the Anthropic Messages API of a real `hybrie serve` with the bundled
model, driven by the official `openai` and `anthropic` SDKs as a user would run them."""
import json
import anthropic, httpx, jsonschema, openai, pytest
from conftest import start_server

MODEL = 'smollm2-135m-instruct'
Q = 'What is the capital of France?'
WEATHER = {'type': 'object', 'properties': {'city': {'type': 'string', 'maxLength': 20}}, 'required': ['city'], 'additionalProperties': False}


@pytest.fixture(scope='module')
def ac(server):
    "The anthropic SDK, pointed at the server as Claude Code's base URL would be."
    return anthropic.Anthropic(base_url=server.root, api_key='unused', max_retries=0)


# ---------------------------------------------------------------- Responses API

def test_responses_full(client):
    r = client.responses.with_raw_response.create(model=MODEL, input=Q, temperature=0, max_output_tokens=16)
    assert r.headers['x-hybrie-executed-by'] == 'local'
    resp = r.parse()
    assert resp.id.startswith('resp_') and resp.object == 'response' and resp.status in ('completed', 'incomplete')
    assert 'Paris' in resp.output_text
    msg = resp.output[-1]
    assert msg.type == 'message' and msg.role == 'assistant' and msg.content[0].type == 'output_text'
    assert resp.usage.input_tokens > 10 and 0 < resp.usage.output_tokens <= 16
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens


def test_responses_stream_events_and_equality(client):
    full = client.responses.create(model=MODEL, input=Q, temperature=0, max_output_tokens=16)
    events = list(client.responses.create(model=MODEL, input=Q, temperature=0, max_output_tokens=16, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ['response.created', 'response.in_progress'] and types[-1] == f'response.{full.status}'
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert 'response.output_item.added' in types and 'response.content_part.added' in types
    text = ''.join(e.delta for e in events if e.type == 'response.output_text.delta')
    assert text == full.output_text
    done = next(e for e in events if e.type == 'response.output_text.done')
    assert done.text == text
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == full.usage.output_tokens
    assert client.responses.retrieve(final.id).output_text == text  # stored when the stream completed


def test_responses_stream_helper(client):
    "The SDK's `responses.stream` helper accumulates the events into the final response."
    with client.responses.stream(model=MODEL, input='Say hello.', temperature=0, max_output_tokens=64, extra_body={'stop': ['.', '!', '?']}) as s:
        deltas = [e for e in s if e.type == 'response.output_text.delta']
        final = s.get_final_response()
    assert final.status == 'completed' and final.output_text == ''.join(e.delta for e in deltas) and deltas
    assert deltas[-1].snapshot == final.output_text  # the helper's running snapshot: the events carry each piece once


def test_responses_previous_response_id_and_stored_responses(client):
    first = client.responses.create(model=MODEL, input='My name is Ada. Remember it.', instructions='Be brief.', temperature=0, max_output_tokens=16)
    second = client.responses.create(model=MODEL, input='What is my name?', previous_response_id=first.id, temperature=0, max_output_tokens=16)
    alone = client.responses.create(model=MODEL, input='What is my name?', temperature=0, max_output_tokens=16)
    assert second.previous_response_id == first.id
    # the second request read the first turn (its input and answer) but not its instructions
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert client.responses.retrieve(first.id).id == first.id
    items = client.responses.input_items.list(second.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [('message', 'user', 'What is my name?')]
    assert client.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError): client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model=MODEL, input='Again?', previous_response_id=first.id, max_output_tokens=16)
    assert e.value.body['param'] == 'previous_response_id' and e.value.body['code'] == 'previous_response_not_found'
    unstored = client.responses.create(model=MODEL, input='Hi', store=False, max_output_tokens=16)
    with pytest.raises(openai.NotFoundError): client.responses.retrieve(unstored.id)


def test_responses_tool_call_round_trip(client):
    tools = [{'type': 'function', 'name': 'get_weather', 'description': 'Weather of a city', 'parameters': WEATHER, 'strict': True}]
    first = client.responses.create(model=MODEL, input='What is the weather in Paris?', tools=tools, tool_choice='required',
                                    parallel_tool_calls=False, temperature=0, max_output_tokens=40)
    calls = [o for o in first.output if o.type == 'function_call']
    assert len(calls) == 1 and calls[0].name == 'get_weather' and calls[0].call_id
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    result = {'type': 'function_call_output', 'call_id': calls[0].call_id, 'output': 'Sunny, 24 C.'}
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input=[result], tools=tools, temperature=0, max_output_tokens=16)
    assert second.output_text and not [o for o in second.output if o.type == 'function_call' and o.call_id == calls[0].call_id]
    # the same turn replayed by the client as items, nothing stored
    replay = client.responses.create(model=MODEL, store=False, tools=tools, temperature=0, max_output_tokens=16,
                                     input=[{'role': 'user', 'content': 'What is the weather in Paris?'}, *[o.model_dump() for o in first.output], result])
    assert replay.output_text == second.output_text


def test_responses_streamed_tool_call(client):
    tools = [{'type': 'function', 'name': 'get_weather', 'parameters': WEATHER}]
    events = list(client.responses.create(model=MODEL, input='Weather in Oslo?', tools=tools, tool_choice={'type': 'function', 'name': 'get_weather'},
                                          parallel_tool_calls=False, temperature=0, max_output_tokens=40, stream=True))
    added = [e.item for e in events if e.type == 'response.output_item.added' and e.item.type == 'function_call']
    args = ''.join(e.delta for e in events if e.type == 'response.function_call_arguments.delta')
    done = next(e for e in events if e.type == 'response.function_call_arguments.done')
    assert len(added) == 1 and added[0].name == 'get_weather' and done.arguments == args
    jsonschema.validate(json.loads(args), WEATHER)
    final = events[-1].response
    assert final.output[-1].type == 'function_call' and final.output[-1].arguments == args


def test_responses_json_schema_and_logprobs(client):
    fmt = {'type': 'json_schema', 'name': 'city', 'schema': WEATHER, 'strict': True}
    r = client.responses.create(model=MODEL, input='Name a city as JSON.', text={'format': fmt}, temperature=0, max_output_tokens=40,
                                include=['message.output_text.logprobs'], top_logprobs=2)
    jsonschema.validate(json.loads(r.output_text), WEATHER)
    lps = r.output[-1].content[0].logprobs
    assert lps and all(len(l.top_logprobs) == 2 and l.logprob <= 0 for l in lps)
    assert ''.join(l.token for l in lps) == r.output_text


@pytest.mark.parametrize('kw,param', [
    (dict(model='no-such-model'), 'model'),
    (dict(max_output_tokens=4), 'max_output_tokens'),
    (dict(temperature=3), 'temperature'),
    (dict(tools=[{'type': 'web_search'}]), 'tools.0.type'),
    (dict(tools=[{'type': 'function', 'name': 'bad name', 'parameters': {'type': 'object'}}]), 'tools.0.name'),
    (dict(text={'format': {'type': 'json_schema', 'name': 'x', 'schema': {'type': 'object', 'properties': {'a': {'type': 'nope'}}}}}), 'text.format.schema'),
    (dict(input=[{'type': 'function_call_output', 'output': 'x'}]), 'input.0.call_id'),
    (dict(input=[{'role': 'user', 'content': [{'type': 'input_file', 'file_id': 'f'}]}]), 'input.0.content.0.type'),
    (dict(background=True), 'background'),
    (dict(max_output_tokens=100000), 'max_output_tokens'),
])
def test_responses_errors(client, kw, param):
    with pytest.raises(openai.APIStatusError) as e: client.responses.create(**(dict(model=MODEL, input='Hi', max_output_tokens=16) | kw))
    assert e.value.status_code == (404 if param == 'model' else 400)
    assert e.value.body['param'] == param and e.value.body['message'], e.value.body


def test_responses_input_tokens(client, server):
    r = httpx.post(server.url + '/responses/input_tokens', json={'model': MODEL, 'input': Q})
    full = client.responses.create(model=MODEL, input=Q, max_output_tokens=16)
    assert r.json() == {'object': 'response.input_tokens', 'input_tokens': full.usage.input_tokens}


# ---------------------------------------------------------------- legacy completions

def test_completions_text(client):
    r = client.completions.with_raw_response.create(model=MODEL, prompt='The capital of France is', max_tokens=8, temperature=0)
    assert r.headers['x-hybrie-executed-by'] == 'local'
    c = r.parse()
    assert c.object == 'text_completion' and c.id.startswith('cmpl-') and 'Paris' in c.choices[0].text
    assert c.usage.prompt_tokens == 5 and c.usage.completion_tokens <= 8
    assert client.completions.create(model=MODEL, prompt='The capital of France is', temperature=0).usage.completion_tokens <= 16  # OpenAI's default


def test_completions_echo_logprobs_score_the_prompt(client):
    "The request lm-evaluation-harness sends to score a continuation, and how it reads the answer."
    from transformers import AutoTokenizer
    from hybrie.config import Catalog
    res = Catalog().resolve(MODEL)
    tok = AutoTokenizer.from_pretrained(res.path, gguf_file=res.gguf_file)
    context, continuation = tok.encode('The capital of France is'), tok.encode(' Paris')
    wrong = tok.encode(' a banana')
    out = client.completions.create(model=MODEL, prompt=[context + continuation, context + wrong], temperature=0, max_tokens=1, logprobs=1, echo=True, seed=1)
    scores = []
    for choice, cont in zip(sorted(out.choices, key=lambda c: c.index), [continuation, wrong]):
        lp = choice.logprobs
        assert len(lp.tokens) == len(context) + len(cont) + 1 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.text_offset[0] == 0 and choice.text.startswith(tok.decode(context + cont))
        n = len(context)
        tokens_logprobs, top = lp.token_logprobs[n:-1], lp.top_logprobs[n:-1]
        is_greedy = all(t >= max(d.values()) - 1e-4 for t, d in zip(tokens_logprobs, top))
        scores.append((sum(tokens_logprobs), is_greedy))
    assert scores[0][0] > scores[1][0]  # Paris is likelier than a banana
    assert scores[0][1] and not scores[1][1]


def test_completions_echo_without_generation_and_generated_logprobs_agree(client):
    "A token scored while it was generated, and the same token scored in an echoed prompt, get the same logprob."
    gen = client.completions.create(model=MODEL, prompt='The capital of France is', max_tokens=1, temperature=0, logprobs=1)
    g = gen.choices[0].logprobs
    scored = client.completions.create(model=MODEL, prompt='The capital of France is' + gen.choices[0].text, max_tokens=0, echo=True, logprobs=1)
    s = scored.choices[0]
    assert s.text == 'The capital of France is' + gen.choices[0].text and s.finish_reason == 'length'
    assert scored.usage.completion_tokens == 0 and len(s.logprobs.tokens) == scored.usage.prompt_tokens
    assert s.logprobs.tokens[-1] == g.tokens[0]
    assert abs(s.logprobs.token_logprobs[-1] - g.token_logprobs[0]) < 1e-3  # both from one prefill of the same tokens


def test_completions_n_best_of_and_several_prompts(client):
    r = client.completions.create(model=MODEL, prompt=['Once upon a time', 'The sea is'], n=2, max_tokens=6, temperature=1.0, seed=3)
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=1).usage.prompt_tokens for p in ('Once upon a time', 'The sea is')]
    assert [c.index for c in r.choices] == [0, 1, 2, 3] and r.usage.prompt_tokens == sum(alone)
    best = client.completions.create(model=MODEL, prompt='Once upon a time', n=2, best_of=4, max_tokens=6, temperature=1.0, seed=3)
    assert [c.index for c in best.choices] == [0, 1] and best.choices[0].logprobs is None
    assert best.usage.completion_tokens > 12  # all four candidates were generated
    ranked = client.completions.create(model=MODEL, prompt='Once upon a time', n=2, best_of=4, max_tokens=6, temperature=1.0, seed=3, logprobs=0)
    means = [sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs) for c in ranked.choices]
    assert means[0] >= means[1]


def test_completions_stream(client):
    full = client.completions.create(model=MODEL, prompt='The capital of France is', max_tokens=10, temperature=0, echo=True)
    chunks = list(client.completions.create(model=MODEL, prompt='The capital of France is', max_tokens=10, temperature=0, echo=True,
                                            stream=True, stream_options={'include_usage': True}))
    assert len({c.id for c in chunks}) == 1
    assert ''.join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason


def test_completions_json_and_stop(client):
    r = client.completions.create(model=MODEL, prompt='A city as JSON: ', max_tokens=30, temperature=0,
                                  extra_body={'response_format': {'type': 'json_schema', 'json_schema': {'name': 'c', 'schema': WEATHER}}})
    jsonschema.validate(json.loads(r.choices[0].text), WEATHER)
    full = client.completions.create(model=MODEL, prompt='The capital of France is', max_tokens=10, temperature=0).choices[0].text
    stop = full.strip()[:3]
    r = client.completions.create(model=MODEL, prompt='The capital of France is', max_tokens=10, temperature=0, stop=[stop])
    assert r.choices[0].text == full[:full.index(stop)] and r.choices[0].finish_reason == 'stop'


@pytest.mark.parametrize('kw,status,param', [
    (dict(model='no-such-model'), 404, 'model'),
    (dict(suffix='\n    return x'), 400, 'suffix'),  # the bundled model has no fill-in-the-middle tokens
    (dict(prompt=[]), 400, 'prompt'),
    (dict(prompt=[[1, 2, 99999]]), 400, 'prompt'),
    (dict(best_of=1, n=2), 400, 'best_of'),
    (dict(echo=True, suffix='x'), 400, 'echo'),
    (dict(max_tokens=0), 400, 'max_tokens'),
    (dict(logprobs=21), 400, 'logprobs'),
    (dict(prompt='hi ' * 9000), 400, 'prompt'),
])
def test_completions_errors(client, kw, status, param):
    with pytest.raises(openai.APIStatusError) as e: client.completions.create(**(dict(model=MODEL, prompt='Hi', max_tokens=4) | kw))
    assert e.value.status_code == status and e.value.body['param'] == param, e.value.body


# ---------------------------------------------------------------- Anthropic Messages API

def test_messages_create(ac):
    r = ac.messages.with_raw_response.create(model=MODEL, max_tokens=16, extra_body={'temperature': 0}, system='Answer in one sentence.',
                                             messages=[{'role': 'user', 'content': Q}])
    assert r.headers['x-hybrie-executed-by'] == 'local' and r.headers['request-id'].startswith('req_')
    m = r.parse()
    assert m.id.startswith('msg_') and m.type == 'message' and m.role == 'assistant' and m.model == MODEL
    assert m.content[0].type == 'text' and 'Paris' in m.content[0].text
    assert m.stop_reason in ('end_turn', 'max_tokens') and m.usage.input_tokens > 10 and 0 < m.usage.output_tokens <= 16
    assert ac.messages.count_tokens(model=MODEL, system='Answer in one sentence.', messages=[{'role': 'user', 'content': Q}]).input_tokens == m.usage.input_tokens


def test_messages_stream_matches_create(ac):
    kw = dict(model=MODEL, max_tokens=12, extra_body={'temperature': 0}, messages=[{'role': 'user', 'content': 'Tell me about the sea.'}])
    full = ac.messages.create(**kw)
    with ac.messages.stream(**kw) as s:
        text = ''.join(s.text_stream)
        final = s.get_final_message()
    assert text == full.content[0].text == final.content[0].text
    assert final.stop_reason == full.stop_reason and final.usage.output_tokens == full.usage.output_tokens
    assert final.usage.input_tokens == full.usage.input_tokens
    events = [e.type for e in ac.messages.create(stream=True, **kw)]
    assert events[0] == 'message_start' and events[-2:] == ['message_delta', 'message_stop']
    assert events.count('content_block_start') == events.count('content_block_stop') == 1


def test_messages_stop_sequence(ac):
    kw = dict(model=MODEL, max_tokens=12, extra_body={'temperature': 0}, messages=[{'role': 'user', 'content': Q}])
    full = ac.messages.create(**kw).content[0].text
    stop = full[full.index('Paris'):full.index('Paris') + 3]
    m = ac.messages.create(stop_sequences=['never', stop], **kw)
    assert (m.stop_reason, m.stop_sequence, m.content[0].text) == ('stop_sequence', stop, full[:full.index(stop)])


def test_messages_tool_round_trip(ac):
    tools = [{'name': 'get_weather', 'description': 'Weather of a city', 'input_schema': WEATHER}]
    msgs = [{'role': 'user', 'content': 'What is the weather in Paris?'}]
    m = ac.messages.create(model=MODEL, max_tokens=40, extra_body={'temperature': 0}, tools=tools, tool_choice={'type': 'any', 'disable_parallel_tool_use': True}, messages=msgs)
    uses = [b for b in m.content if b.type == 'tool_use']
    assert m.stop_reason == 'tool_use' and len(uses) == 1 and uses[0].name == 'get_weather'
    jsonschema.validate(uses[0].input, WEATHER)
    msgs += [{'role': 'assistant', 'content': m.content},
             {'role': 'user', 'content': [{'type': 'tool_result', 'tool_use_id': uses[0].id, 'content': 'Sunny, 24 C.'}]}]
    again = ac.messages.create(model=MODEL, max_tokens=8, extra_body={'temperature': 0}, tools=tools, tool_choice={'type': 'none'}, messages=msgs)
    assert again.content[0].type == 'text' and again.content[0].text
    with ac.messages.stream(model=MODEL, max_tokens=40, extra_body={'temperature': 0}, tools=tools, tool_choice={'type': 'tool', 'name': 'get_weather', 'disable_parallel_tool_use': True},
                            messages=msgs[:1]) as s:
        final = s.get_final_message()
    jsonschema.validate(final.content[-1].input, WEATHER)


def test_messages_json_output(ac):
    m = ac.messages.create(model=MODEL, max_tokens=40, extra_body={'temperature': 0}, messages=[{'role': 'user', 'content': 'Name a city as JSON.'}],
                           output_config={'format': {'type': 'json_schema', 'schema': WEATHER}})
    jsonschema.validate(json.loads(m.content[0].text), WEATHER)


@pytest.mark.parametrize('kw,status,typ', [
    (dict(model='no-such-model'), 404, 'not_found_error'),
    (dict(max_tokens=9000), 400, 'invalid_request_error'),  # past the bundled model's 8192-token context
    (dict(extra_body={'temperature': 1.5}), 400, 'invalid_request_error'),  # this SDK no longer sends sampling settings itself
    (dict(messages=[{'role': 'system', 'content': 'x'}]), 400, 'invalid_request_error'),
    (dict(messages=[{'role': 'user', 'content': [{'type': 'document', 'source': {'type': 'text', 'data': 'x', 'media_type': 'text/plain'}}]}]), 400, 'invalid_request_error'),
    (dict(tools=[{'type': 'web_search_20250305', 'name': 'web_search'}]), 400, 'invalid_request_error'),
    (dict(thinking={'type': 'enabled', 'budget_tokens': 10}), 400, 'invalid_request_error'),
])
def test_messages_errors_in_anthropic_shape(ac, kw, status, typ):
    with pytest.raises(anthropic.APIStatusError) as e:
        ac.messages.create(**(dict(model=MODEL, max_tokens=16, messages=[{'role': 'user', 'content': 'Hi'}]) | kw))
    assert e.value.status_code == status
    assert e.value.body['type'] == 'error' and e.value.body['error']['type'] == typ and e.value.body['error']['message']
    assert e.value.response.headers['request-id'] == e.value.body['request_id']


def test_messages_raw_errors(server):
    h = {'anthropic-version': '2023-06-01', 'content-type': 'application/json'}
    for body in [b'{"model": ', b'', b'[1]', json.dumps({'model': MODEL, 'messages': [{'role': 'user', 'content': 'x'}]}).encode()]:
        r = httpx.post(server.root + '/v1/messages', content=body, headers=h)
        assert r.status_code == 400 and r.json()['type'] == 'error' and r.json()['error']['type'] == 'invalid_request_error', body


# ---------------------------------------------------------------- across the APIs

def test_routing_headers_in_every_api(client, ac):
    "An adapter that is not loaded is a 404 in each API's own shape; `local` mode is honoured."
    h = {'x-hybrie-adapter-id': 'pirate'}
    with pytest.raises(openai.NotFoundError) as e: client.responses.create(model=MODEL, input='Hi', extra_headers=h)
    assert e.value.body['param'] == 'x-hybrie-adapter-id'
    with pytest.raises(openai.NotFoundError): client.completions.create(model=MODEL, prompt='Hi', extra_headers=h)
    with pytest.raises(openai.BadRequestError) as e:  # a raw prompt has no chat wire to go to a compute peer on
        client.completions.create(model=MODEL, prompt='Hi', max_tokens=2, extra_headers={'x-hybrie-preferred-peer-id': 'gpu-1'})
    assert e.value.body['param'] == 'x-hybrie-preferred-peer-id'
    with pytest.raises(anthropic.NotFoundError) as e: ac.messages.create(model=MODEL, max_tokens=8, messages=[{'role': 'user', 'content': 'Hi'}], extra_headers=h)
    assert e.value.body['error']['type'] == 'not_found_error'
    local = {'x-hybrie-execution-mode': 'local'}
    assert client.responses.with_raw_response.create(model=MODEL, input='Hi', max_output_tokens=16, extra_headers=local).headers['x-hybrie-executed-by'] == 'local'
    with pytest.raises(anthropic.BadRequestError):  # a cloud model never runs in local mode
        ac.messages.create(model='claude-sonnet-4-6', max_tokens=8, messages=[{'role': 'user', 'content': 'Hi'}], extra_headers=local)


def test_openapi_documents_every_api(server):
    doc = httpx.get(server.root + '/openapi.json').json()
    for path in ('/v1/responses', '/v1/responses/{response_id}', '/v1/responses/{response_id}/input_items', '/v1/completions',
                 '/v1/messages', '/v1/messages/count_tokens'):
        assert path in doc['paths'], path
    body = doc['paths']['/v1/messages']['post']['requestBody']['content']['application/json']['schema']
    assert 'max_tokens' in body['required']


def test_metrics_count_each_api(server, client, ac):
    client.completions.create(model=MODEL, prompt='Hi', max_tokens=2)
    client.responses.create(model=MODEL, input='Hi', max_output_tokens=16)
    ac.messages.create(model=MODEL, max_tokens=2, messages=[{'role': 'user', 'content': 'Hi'}])
    m = httpx.get(server.root + '/metrics').text
    for endpoint in ('responses', 'completions', 'messages'):
        assert f'hybrie_requests_total{{endpoint="{endpoint}",status="200"}}' in m, endpoint


def test_api_keys():
    """With `--api-key`, every API needs it: OpenAI's clients as a bearer token, Anthropic's as `x-api-key`; a wrong key is a 401 in each
    API's shape. gRPC needs it as metadata, the realtime WebSocket in its handshake; a call forwarded by a compute peer passes on the
    peers' shared secret."""
    import grpc
    from conftest import free_port
    from hybrie.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg
    gport = free_port()
    with start_server('--api-key', 'sk-local-1', '--api-key', 'sk-local-2', '--grpc-port', str(gport), '--peer-secret', 'peer-s3cret') as s:
        with grpc.insecure_channel(f'127.0.0.1:{gport}') as ch:
            stub = pbg.InferenceStub(ch)
            with pytest.raises(grpc.RpcError) as e: stub.ListModels(pb.ListModelsRequest())
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and 'invalid_api_key' in dict(e.value.trailing_metadata())['x-hybrie-error']
            with pytest.raises(grpc.RpcError) as e: list(stub.ChatCompletionStream(pb.ChatCompletionRequest(model=MODEL), metadata=[('authorization', 'Bearer nope')]))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert MODEL in [m.id for m in stub.ListModels(pb.ListModelsRequest(), metadata=[('authorization', 'Bearer sk-local-1')]).data]
        forwarded = httpx.post(s.url + '/chat/completions', json={'model': MODEL, 'messages': [{'role': 'user', 'content': 'Hi'}], 'max_tokens': 2},
                               headers={'x-hybrie-forwarded-by': 'hub', 'x-hybrie-peer-token': 'peer-s3cret'}, timeout=120)
        assert forwarded.status_code == 200, forwarded.text
        assert httpx.get(s.url + '/node', headers={'x-hybrie-peer-token': 'wrong'}).status_code == 401
        from websockets.sync.client import connect
        from websockets.exceptions import InvalidStatus
        ws = s.root.replace('http', 'ws') + '/v1/realtime?model=gpt-realtime'
        with pytest.raises(InvalidStatus) as e: connect(ws, additional_headers={'Authorization': 'Bearer nope'}, open_timeout=60)
        assert e.value.response.status_code == 403  # refused before the handshake completes
        with connect(ws, additional_headers={'Authorization': 'Bearer sk-local-2'}, open_timeout=60) as conn:
            assert json.loads(conn.recv(timeout=60))['type'] == 'session.created'

        ok = openai.OpenAI(base_url=s.url, api_key='sk-local-2', max_retries=0)
        assert ok.completions.create(model=MODEL, prompt='Hi', max_tokens=2).choices
        assert ok.responses.create(model=MODEL, input='Hi', max_output_tokens=16).output
        good = anthropic.Anthropic(base_url=s.root, api_key='sk-local-1', max_retries=0)
        assert good.messages.create(model=MODEL, max_tokens=2, messages=[{'role': 'user', 'content': 'Hi'}]).content is not None
        bearer = anthropic.Anthropic(base_url=s.root, auth_token='sk-local-1', max_retries=0)  # Authorization: Bearer
        assert bearer.messages.count_tokens(model=MODEL, messages=[{'role': 'user', 'content': 'Hi'}]).input_tokens > 0
        with pytest.raises(openai.AuthenticationError) as e: openai.OpenAI(base_url=s.url, api_key='nope', max_retries=0).responses.create(model=MODEL, input='Hi')
        assert e.value.body['code'] == 'invalid_api_key'
        with pytest.raises(anthropic.AuthenticationError) as e:
            anthropic.Anthropic(base_url=s.root, api_key='nope', max_retries=0).messages.create(model=MODEL, max_tokens=2, messages=[{'role': 'user', 'content': 'Hi'}])
        assert e.value.body['error']['type'] == 'authentication_error'
        assert httpx.get(s.root + '/health').status_code == 200
        log = s.log()
    assert 'sk-local' not in log
