"""Cloud backends end to end: a real `hybrie serve` whose provider SDKs talk to loopback stand-ins
speaking each provider's wire format, driven from outside by the `openai` SDK."""
import base64, json, time
import httpx, jsonschema, openai, pytest
from prometheus_client.parser import text_string_to_metric_families
from conftest import start_server
from cloud_standins import PNG

KEYS = {'OPENAI_API_KEY': 'sk-test-openai-SECRET1', 'ANTHROPIC_API_KEY': 'sk-ant-test-SECRET2',
        'GEMINI_API_KEY': 'gm-test-SECRET3', 'MISTRAL_API_KEY': 'ms-test-SECRET4'}
MODELS = {'openai': 'gpt-4.1-mini', 'anthropic': 'claude-sonnet-4-6', 'gemini': 'gemini-3-flash-preview', 'mistral': 'mistral-small-latest'}
PROVIDERS = list(MODELS)
PNG_URL = 'data:image/png;base64,' + base64.b64encode(PNG).decode()
TOOLS = [{'type': 'function', 'function': {'name': 'get_weather', 'description': 'Weather of a city',
          'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}}]
LOG_ENV = {'OPENAI_LOG': 'debug', 'ANTHROPIC_LOG': 'debug'}  # the SDKs' own debug logging, to prove keys stay out of it


@pytest.fixture(scope='module')
def cloud_server(standins):
    env = {**KEYS, **standins.env(), **LOG_ENV, 'HYBRIE_CLOUD_MAX_RETRIES': '0', 'HYBRIE_CLOUD_TIMEOUT': '1.5'}
    with start_server('--log-level', 'debug', env=env) as s:
        yield s
        log = s.log()
    for k in KEYS.values(): assert k not in log, 'a provider key reached the server log'
    assert 'SECRET' not in log


@pytest.fixture(scope='module')
def oc(cloud_server):
    return openai.OpenAI(base_url=cloud_server.url, api_key='unused', max_retries=0)


def wait_for(cond, what, timeout=60):
    "Poll `cond` until it holds; fail naming `what` after `timeout` seconds."
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline: raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.05)


def requests_running(root, endpoint='chat') -> float:
    "The server's `hybrie_requests_running` gauge for `endpoint` (a chat request counts from before it is queued)."
    for fam in text_string_to_metric_families(httpx.get(root + '/metrics').text):
        for s in fam.samples:
            if s.name == 'hybrie_requests_running' and s.labels.get('endpoint') == endpoint: return s.value
    return 0.0


def cloud(p, **h): return {'x-hybrie-execution-mode': 'cloud', 'x-hybrie-cloud-provider': p, **h}


def raw(oc, p, **kw):
    "A full completion with its HTTP response, executed in provider `p`."
    kw.setdefault('messages', [{'role': 'user', 'content': 'Hi'}])
    return oc.chat.completions.with_raw_response.create(model=kw.pop('model', MODELS[p]), extra_headers=cloud(p), **kw)


# ---- full and streamed answers, usage, execution headers ----

@pytest.mark.parametrize('p', PROVIDERS)
def test_full_answer(oc, standins, p):
    r = raw(oc, p)
    c = r.parse()
    assert c.choices[0].message.content == f'Hello from {p}!'
    assert c.choices[0].finish_reason == 'stop'
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (11, 4, 15)
    assert r.headers['x-hybrie-executed-by'] == f'cloud:{p}'
    assert 'x-hybrie-fallback-from' not in r.headers
    path, headers, body = standins.last(p)
    auth = headers.get('authorization') or headers.get('x-goog-api-key') or headers.get('x-api-key')
    assert KEYS[f'{p.upper()}_API_KEY'] in auth


@pytest.mark.parametrize('p', PROVIDERS)
def test_streamed_answer(oc, standins, p):
    with oc.chat.completions.with_streaming_response.create(model=MODELS[p], messages=[{'role': 'user', 'content': 'Hi'}],
                                                             stream=True, stream_options={'include_usage': True},
                                                             extra_headers=cloud(p)) as r:
        assert r.headers['x-hybrie-executed-by'] == f'cloud:{p}'
        chunks = list(r.parse())
    text = ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices)
    assert text == f'Hello from {p}!'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == 'stop'
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 15
    path, _, body = standins.last(p)
    if p == 'gemini': assert ':streamGenerateContent' in path and 'alt=sse' in path
    elif p == 'openai': assert body['stream'] and body['stream_options'] == {'include_usage': True}  # usage always asked upstream
    else: assert body['stream']


def test_stream_usage_requested_even_when_client_does_not_ask(oc, standins):
    chunks = list(oc.chat.completions.create(model=MODELS['openai'], messages=[{'role': 'user', 'content': 'Hi'}], stream=True,
                                             extra_headers=cloud('openai')))
    assert all(c.usage is None for c in chunks)
    assert standins.last('openai')[2]['stream_options'] == {'include_usage': True}


# ---- every parameter translated ----

SAMPLING = dict(temperature=0.3, top_p=0.9, stop=['END'], max_tokens=50, seed=7, presence_penalty=0.5, frequency_penalty=0.25,
                extra_body={'top_k': 20})
HISTORY = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'},
           {'role': 'assistant', 'content': 'Hello.'}, {'role': 'user', 'content': 'Weather?'}]


def test_openai_parameters(oc, standins):
    r = raw(oc, 'openai', messages=HISTORY, logprobs=True, top_logprobs=2, logit_bias={'50256': -100}, **SAMPLING)
    b = standins.last('openai')[2]
    assert {k: b[k] for k in ('temperature', 'top_p', 'stop', 'max_completion_tokens', 'seed', 'presence_penalty', 'frequency_penalty',
                              'logprobs', 'top_logprobs', 'logit_bias')} == \
        {'temperature': 0.3, 'top_p': 0.9, 'stop': ['END'], 'max_completion_tokens': 50, 'seed': 7, 'presence_penalty': 0.5,
         'frequency_penalty': 0.25, 'logprobs': True, 'top_logprobs': 2, 'logit_bias': {'50256': -100}}
    assert b['messages'] == HISTORY and 'top_k' not in b
    assert r.headers['x-hybrie-dropped-params'] == 'top_k'


def test_anthropic_parameters(oc, standins):
    r = raw(oc, 'anthropic', messages=HISTORY, **SAMPLING)
    b = standins.last('anthropic')[2]
    assert b['system'] == 'Be brief.' and b['stop_sequences'] == ['END'] and b['max_tokens'] == 50
    assert [m['role'] for m in b['messages']] == ['user', 'assistant', 'user']
    assert not {'temperature', 'top_p', 'top_k', 'seed'} & set(b)  # API 2026-10-21 answers 400 to the sampling knobs
    assert r.headers['x-hybrie-dropped-params'].split(',') == ['temperature', 'top_p', 'top_k', 'presence_penalty', 'frequency_penalty', 'seed']


def test_anthropic_default_max_tokens_and_no_dropped_header(oc, standins):
    r = raw(oc, 'anthropic')
    assert standins.last('anthropic')[2]['max_tokens'] == 4096
    assert 'x-hybrie-dropped-params' not in r.headers


def test_gemini_parameters(oc, standins):
    r = raw(oc, 'gemini', messages=HISTORY, **SAMPLING)
    path, _, b = standins.last('gemini')
    assert path.endswith('/models/gemini-3-flash-preview:generateContent')
    g = b['generationConfig']
    assert {k: g[k] for k in ('temperature', 'topP', 'topK', 'stopSequences', 'maxOutputTokens', 'seed', 'presencePenalty', 'frequencyPenalty')} == \
        {'temperature': 0.3, 'topP': 0.9, 'topK': 20, 'stopSequences': ['END'], 'maxOutputTokens': 50, 'seed': 7,
         'presencePenalty': 0.5, 'frequencyPenalty': 0.25}
    assert b['systemInstruction']['parts'] == [{'text': 'Be brief.'}]
    assert [c['role'] for c in b['contents']] == ['user', 'model', 'user']
    assert 'x-hybrie-dropped-params' not in r.headers


def test_mistral_parameters(oc, standins):
    r = raw(oc, 'mistral', messages=HISTORY, **SAMPLING)
    b = standins.last('mistral')[2]
    assert {k: b[k] for k in ('temperature', 'top_p', 'top_k', 'stop', 'max_tokens', 'random_seed', 'presence_penalty', 'frequency_penalty')} == \
        {'temperature': 0.3, 'top_p': 0.9, 'top_k': 20, 'stop': ['END'], 'max_tokens': 50, 'random_seed': 7, 'presence_penalty': 0.5,
         'frequency_penalty': 0.25}
    assert [m['role'] for m in b['messages']] == ['system', 'user', 'assistant', 'user']
    assert 'x-hybrie-dropped-params' not in r.headers


@pytest.mark.parametrize('p', ['openai', 'gemini', 'mistral'])
def test_explicit_default_temperature_reaches_the_provider(oc, standins, p):
    "A setting the client sent goes upstream even at its usual default (`temperature: 1.0`); one it did not send stays out."
    temperature = lambda b: (b.get('generationConfig') or {}).get('temperature') if p == 'gemini' else b.get('temperature')
    r = raw(oc, p, temperature=1.0)
    assert temperature(standins.last(p)[2]) == 1.0 and 'x-hybrie-dropped-params' not in r.headers
    raw(oc, p)
    assert temperature(standins.last(p)[2]) is None


def test_anthropic_drops_a_default_temperature_without_reporting_it(oc, standins):
    "Anthropic's API refuses `temperature`; dropping one at its default changes nothing, so nothing is reported."
    r = raw(oc, 'anthropic', temperature=1.0)
    assert 'temperature' not in standins.last('anthropic')[2] and 'x-hybrie-dropped-params' not in r.headers


@pytest.mark.parametrize('p', ['openai', 'mistral', 'gemini'])
def test_n_and_response_format(oc, standins, p):
    raw(oc, p, n=1, response_format={'type': 'json_object'})
    b = standins.last(p)[2]
    if p == 'gemini': assert b['generationConfig']['responseMimeType'] == 'application/json'
    else: assert b['response_format'] == {'type': 'json_object'}


@pytest.mark.parametrize('kw,param', [({'n': 2}, 'n')])
def test_anthropic_refuses_what_it_cannot_honour(oc, kw, param):
    with pytest.raises(openai.BadRequestError) as e: raw(oc, 'anthropic', **kw)
    assert e.value.status_code == 400 and e.value.body['param'] == param


# ---- tool calls and thinking ----

@pytest.mark.parametrize('p', PROVIDERS)
def test_tool_call_full(oc, standins, p):
    c = raw(oc, p, messages=[{'role': 'user', 'content': 'Weather in Oslo? @tool'}], tools=TOOLS, tool_choice='required').parse()
    ch = c.choices[0]
    assert ch.finish_reason == 'tool_calls'
    tc = ch.message.tool_calls[0]
    assert tc.function.name == 'get_weather' and json.loads(tc.function.arguments) == {'city': 'Oslo'} and tc.id
    b = standins.last(p)[2]
    if p == 'anthropic':
        assert b['tools'][0]['name'] == 'get_weather' and b['tools'][0]['input_schema']['required'] == ['city']
        assert b['tool_choice'] == {'type': 'any'}
    elif p == 'gemini':
        assert b['tools'][0]['functionDeclarations'][0]['name'] == 'get_weather'
        assert b['toolConfig'] == {'functionCallingConfig': {'mode': 'ANY'}}
    else: assert b['tools'] == TOOLS and b['tool_choice'] in ('required', 'any')


@pytest.mark.parametrize('p', PROVIDERS)
def test_tool_call_streamed(oc, p):
    chunks = list(oc.chat.completions.create(model=MODELS[p], messages=[{'role': 'user', 'content': 'Weather? @tool'}], tools=TOOLS,
                                             stream=True, extra_headers=cloud(p)))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == 'get_weather' and calls[0].id
    assert json.loads(''.join(tc.function.arguments or '' for tc in calls)) == {'city': 'Oslo'}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == 'tool_calls'


@pytest.mark.parametrize('p', PROVIDERS)
def test_tool_results_round_trip(oc, standins, p):
    msgs = [{'role': 'user', 'content': 'Weather in Oslo?'},
            {'role': 'assistant', 'content': None, 'tool_calls': [{'id': 'call_9', 'type': 'function',
                                                                   'function': {'name': 'get_weather', 'arguments': '{"city": "Oslo"}'}}]},
            {'role': 'tool', 'tool_call_id': 'call_9', 'content': 'sunny, 21 C'}]
    assert raw(oc, p, messages=msgs, tools=TOOLS).parse().choices[0].message.content == f'Hello from {p}!'
    b = standins.last(p)[2]
    if p == 'anthropic':
        assert b['messages'][1]['content'] == [{'type': 'tool_use', 'id': 'call_9', 'name': 'get_weather', 'input': {'city': 'Oslo'}}]
        assert b['messages'][2] == {'role': 'user', 'content': [{'type': 'tool_result', 'tool_use_id': 'call_9', 'content': 'sunny, 21 C'}]}
    elif p == 'gemini':
        assert b['contents'][1]['parts'][0]['functionCall']['args'] == {'city': 'Oslo'}
        fr = b['contents'][2]['parts'][0]['functionResponse']
        assert fr['name'] == 'get_weather' and fr['response'] == {'result': 'sunny, 21 C'}
    elif p == 'mistral':  # Mistral takes only ids of nine letters and digits: call and result keep one id
        cid = b['messages'][1]['tool_calls'][0]['id']
        assert len(cid) == 9 and cid.isalnum() and b['messages'][2]['tool_call_id'] == cid
    else: assert b['messages'][2]['tool_call_id'] == 'call_9' and b['messages'][1]['tool_calls'][0]['id'] == 'call_9'


@pytest.mark.parametrize('p', ['anthropic', 'gemini'])
def test_thinking(oc, standins, p):
    c = raw(oc, p, messages=[{'role': 'user', 'content': 'Why? @think'}], extra_body={'thinking_mode': 'on'}).parse()
    assert c.choices[0].message.reasoning_content == 'Let me think.'
    chunks = list(oc.chat.completions.create(model=MODELS[p], messages=[{'role': 'user', 'content': 'Why? @think'}], stream=True,
                                             extra_body={'thinking_mode': 'on'}, extra_headers=cloud(p)))
    assert ''.join(getattr(c.choices[0].delta, 'reasoning_content', None) or '' for c in chunks if c.choices) == 'Let me think.'
    b = standins.last(p)[2]
    if p == 'anthropic': assert b['thinking'] == {'type': 'enabled', 'budget_tokens': 2048}
    else: assert b['generationConfig']['thinkingConfig'] == {'include_thoughts': True}


def test_thinking_dropped_where_the_model_has_none(oc):
    r = raw(oc, 'mistral', extra_body={'thinking_mode': 'on'})
    assert r.headers['x-hybrie-dropped-params'] == 'thinking_mode'


# ---- images ----

def gemini_image(part) -> tuple:
    "(type, bytes) of a Gemini inline-data part as google-genai sends it (proto field names, URL-safe base64; the API takes both)."
    d = part['inlineData']
    return d.get('mimeType') or d.get('mime_type'), base64.urlsafe_b64decode(d['data'])


IMG_MSG = lambda url: [{'role': 'user', 'content': [{'type': 'text', 'text': 'What is this?'}, {'type': 'image_url', 'image_url': {'url': url}}]}]


@pytest.mark.parametrize('p', ['openai', 'anthropic', 'gemini'])
def test_data_url_images(oc, standins, p):
    assert raw(oc, p, messages=IMG_MSG(PNG_URL)).parse().choices[0].message.content == f'Hello from {p}!'
    b = standins.last(p)[2]
    if p == 'openai': assert b['messages'][0]['content'][1] == {'type': 'image_url', 'image_url': {'url': PNG_URL}}
    elif p == 'anthropic':
        assert b['messages'][0]['content'][1] == {'type': 'image', 'source': {'type': 'base64', 'media_type': 'image/png', 'data': PNG_URL.split(',')[1]}}
    else: assert gemini_image(b['contents'][0]['parts'][1]) == ('image/png', PNG)


def test_remote_image_passed_as_url_to_openai_and_mistral(oc, standins):
    url = 'https://images.example.com/cat.png'
    raw(oc, 'openai', messages=IMG_MSG(url))
    assert standins.last('openai')[2]['messages'][0]['content'][1]['image_url']['url'] == url
    raw(oc, 'mistral', model='pixtral-12b-latest', messages=IMG_MSG(url))
    assert standins.last('mistral')[2]['messages'][0]['content'][1] == {'type': 'image_url', 'image_url': url}


def test_remote_image_on_private_address_is_refused(oc, standins):
    for p in ('anthropic', 'gemini'):
        n = len(standins.requests)
        with pytest.raises(openai.BadRequestError) as e: raw(oc, p, messages=IMG_MSG(f'{standins.url}/img/a.png'))
        assert 'private, loopback' in e.value.message and e.value.body['code'] == 'image_url_refused'
        assert len(standins.requests) == n  # nothing went upstream


def test_image_to_a_model_without_vision(oc):
    with pytest.raises(openai.BadRequestError) as e: raw(oc, 'mistral', messages=IMG_MSG(PNG_URL))
    assert 'mistral-small-latest' in e.value.message and e.value.body['param'] == 'messages'


def test_bad_data_url(oc):
    with pytest.raises(openai.BadRequestError) as e: raw(oc, 'anthropic', messages=IMG_MSG('data:text/html;base64,PGgxPg=='))
    assert 'Unsupported image type' in e.value.message


def test_remote_image_fetched_when_private_addresses_allowed(standins):
    "With HYBRIE_IMAGE_ALLOW_PRIVATE=1 (for this loopback test only) a remote image is fetched and sent as bytes."
    env = {**KEYS, **standins.env(), 'HYBRIE_CLOUD_MAX_RETRIES': '0', 'HYBRIE_IMAGE_ALLOW_PRIVATE': '1'}
    with start_server(env=env) as s:
        oc = openai.OpenAI(base_url=s.url, api_key='unused', max_retries=0)
        raw(oc, 'anthropic', messages=IMG_MSG(f'{standins.url}/img/a.png'))
        src = standins.last('anthropic')[2]['messages'][0]['content'][1]['source']
        assert src == {'type': 'base64', 'media_type': 'image/png', 'data': base64.b64encode(PNG).decode()}
        raw(oc, 'gemini', messages=IMG_MSG(f'{standins.url}/img/a.png'))
        assert gemini_image(standins.last('gemini')[2]['contents'][0]['parts'][1]) == ('image/png', PNG)
        with pytest.raises(openai.BadRequestError) as e: raw(oc, 'anthropic', messages=IMG_MSG(f'{standins.url}/img/page'))
        assert 'not an image' in e.value.message


# ---- upstream errors ----

@pytest.mark.parametrize('p', PROVIDERS)
def test_rate_limit_keeps_429_and_retry_after(oc, p):
    with pytest.raises(openai.RateLimitError) as e: raw(oc, p, messages=[{'role': 'user', 'content': '@429'}])
    assert e.value.status_code == 429 and e.value.response.headers['retry-after'] == '7'
    assert e.value.body['message'].startswith(p)


@pytest.mark.parametrize('p', PROVIDERS)
def test_rejected_key_is_502_without_the_key(oc, p):
    with pytest.raises(openai.APIStatusError) as e: raw(oc, p, messages=[{'role': 'user', 'content': '@401'}])
    assert e.value.status_code == 502
    assert e.value.body['message'] == f'{p}: the provider rejected the configured key (HTTP 401).'
    assert 'SECRET' not in e.value.response.text and 'sk-te' not in e.value.response.text


@pytest.mark.parametrize('p', PROVIDERS)
def test_upstream_5xx_is_502(oc, p):
    with pytest.raises(openai.APIStatusError) as e: raw(oc, p, messages=[{'role': 'user', 'content': '@500'}])
    assert e.value.status_code == 502 and e.value.body['type'] == 'api_error' and p in e.value.message


@pytest.mark.parametrize('p', PROVIDERS)
def test_upstream_timeout_is_504(oc, p):
    with pytest.raises(openai.APIStatusError) as e: raw(oc, p, messages=[{'role': 'user', 'content': '@slow'}])
    assert e.value.status_code == 504 and 'did not answer in time' in e.value.message


@pytest.mark.parametrize('p', PROVIDERS)
def test_streamed_errors_keep_their_status(oc, p):
    with pytest.raises(openai.RateLimitError):
        list(oc.chat.completions.create(model=MODELS[p], messages=[{'role': 'user', 'content': '@429'}], stream=True, extra_headers=cloud(p)))


@pytest.mark.parametrize('p', PROVIDERS)
def test_stream_cut_midway_ends_with_an_error(cloud_server, oc, p):
    "The provider drops the connection mid-stream: the client gets the first pieces, then an error event, then the end."
    body = {'model': MODELS[p], 'messages': [{'role': 'user', 'content': '@cut'}], 'stream': True}
    with httpx.stream('POST', cloud_server.url + '/chat/completions', json=body, headers=cloud(p), timeout=30) as r:
        assert r.status_code == 200
        events = [l[6:] for l in r.iter_lines() if l.startswith('data: ')]
    err = json.loads(events[-1])
    assert err['error']['type'] == 'api_error' and err['error']['message'].startswith(p), err
    assert '[DONE]' not in events
    assert any(json.loads(e).get('choices') for e in events[:-1])  # it had started
    got = []
    with pytest.raises(openai.APIError) as e:  # the openai SDK turns the error event into an exception, after the first pieces
        for c in oc.chat.completions.create(**body, extra_headers=cloud(p)): got.append(c)
    assert got and e.value.message.startswith(p)


def test_no_key_reaches_the_log(oc, cloud_server):
    "The server runs with --log-level debug and the SDKs' own debug logging on; after calls that succeed and fail, no key is logged."
    for p in PROVIDERS:
        raw(oc, p)
        list(oc.chat.completions.create(model=MODELS[p], messages=[{'role': 'user', 'content': 'Hi'}], stream=True, extra_headers=cloud(p)))
        for bad in ('@401', '@500'):
            with pytest.raises(openai.APIStatusError): raw(oc, p, messages=[{'role': 'user', 'content': bad}])
    log = cloud_server.log()
    assert 'anthropic._base_client' in log and 'openai._base_client' in log  # the SDKs did log, at debug level
    for k in KEYS.values(): assert k not in log
    assert 'SECRET' not in log


# ---- execution modes ----

def test_default_mode_is_local(oc):
    r = oc.chat.completions.with_raw_response.create(model='smollm2-135m-instruct', messages=[{'role': 'user', 'content': 'Hi'}], max_tokens=3)
    assert r.headers['x-hybrie-executed-by'] == 'local' and r.parse().choices[0].message.content is not None


def test_cloud_mode_runs_a_local_model_id_as_the_default_model(oc, standins):
    r = oc.chat.completions.with_raw_response.create(model='smollm2-135m-instruct', messages=[{'role': 'user', 'content': 'Hi'}],
                                                     extra_headers=cloud('gemini'))
    assert r.headers['x-hybrie-executed-by'] == 'cloud:gemini'
    assert standins.last('gemini')[0].endswith('/models/gemini-3-flash-preview:generateContent')


def test_hybrid_falls_back_when_the_model_is_not_here(oc, standins):
    "qwen3-0.6b is in the catalog but its weights are not on this machine."
    r = oc.chat.completions.with_raw_response.create(model='qwen3-0.6b', messages=[{'role': 'user', 'content': 'Hi'}],
                                                     extra_headers={'x-hybrie-execution-mode': 'hybrid', 'x-hybrie-cloud-provider': 'openai'})
    assert (r.headers['x-hybrie-executed-by'], r.headers['x-hybrie-fallback-from']) == ('cloud:openai', 'local')
    assert r.parse().choices[0].message.content == 'Hello from openai!'
    assert standins.last('openai')[2]['model'] == 'gpt-4.1-mini'


def test_hybrid_falls_back_streaming(oc):
    with oc.chat.completions.with_streaming_response.create(model='qwen3-0.6b', messages=[{'role': 'user', 'content': 'Hi'}], stream=True,
                                                             extra_headers={'x-hybrie-execution-mode': 'hybrid', 'x-hybrie-cloud-provider': 'mistral'}) as r:
        assert (r.headers['x-hybrie-executed-by'], r.headers['x-hybrie-fallback-from']) == ('cloud:mistral', 'local')
        assert ''.join(c.choices[0].delta.content or '' for c in r.parse() if c.choices) == 'Hello from mistral!'


def test_hybrid_runs_locally_when_it_can(oc):
    r = oc.chat.completions.with_raw_response.create(model='smollm2-135m-instruct', messages=[{'role': 'user', 'content': 'Hi'}], max_tokens=3,
                                                     extra_headers={'x-hybrie-execution-mode': 'hybrid', 'x-hybrie-cloud-provider': 'openai'})
    assert r.headers['x-hybrie-executed-by'] == 'local' and 'x-hybrie-fallback-from' not in r.headers


@pytest.mark.parametrize('model,headers,param', [
    ('smollm2-135m-instruct', {'x-hybrie-execution-mode': 'everywhere'}, 'x-hybrie-execution-mode'),
    ('smollm2-135m-instruct', {'x-hybrie-execution-mode': 'cloud', 'x-hybrie-cloud-provider': 'azure'}, 'x-hybrie-cloud-provider'),
    ('smollm2-135m-instruct', {'x-hybrie-execution-mode': 'cloud'}, 'x-hybrie-cloud-provider'),
    ('gpt-4.1-mini', {'x-hybrie-execution-mode': 'local'}, 'model'),
    ('smollm2-135m-instruct', {'x-hybrie-execution-mode': 'local', 'x-hybrie-cloud-provider': 'openai'}, 'x-hybrie-cloud-provider'),
    ('gpt-4.1-mini', {'x-hybrie-execution-mode': 'cloud', 'x-hybrie-cloud-provider': 'anthropic'}, 'x-hybrie-cloud-provider'),
])
def test_routing_errors_are_400(oc, model, headers, param):
    with pytest.raises(openai.BadRequestError) as e:
        oc.chat.completions.create(model=model, messages=[{'role': 'user', 'content': 'Hi'}], extra_headers=headers)
    assert e.value.status_code == 400 and e.value.body['param'] == param


def test_auto_mode_runs_a_cloud_model_at_its_provider(oc):
    "With no mode set, a cloud model /v1/models lists runs at its provider, and names itself in the response."
    r = oc.chat.completions.with_raw_response.create(model='gpt-4.1-mini', messages=[{'role': 'user', 'content': 'Hi'}])
    assert r.headers['x-hybrie-executed-by'] == 'cloud:openai' and r.parse().model == 'gpt-4.1-mini'


def test_a_provider_header_alone_is_honoured(oc, standins):
    r = oc.chat.completions.with_raw_response.create(model='smollm2-135m-instruct', messages=[{'role': 'user', 'content': 'Hi'}],
                                                     extra_headers={'x-hybrie-cloud-provider': 'anthropic'})
    assert r.headers['x-hybrie-executed-by'] == 'cloud:anthropic'
    assert standins.last('anthropic')[2]['model'] == 'claude-sonnet-4-6'


def test_a_local_server_stays_strict_and_a_no_local_gateway_answers_plain_requests(standins):
    env = {'OPENAI_API_KEY': KEYS['OPENAI_API_KEY'], **standins.env(), 'HYBRIE_CLOUD_MAX_RETRIES': '0'}
    body = {'messages': [{'role': 'user', 'content': 'Hi'}]}
    with start_server(env=env | {'HYBRIE_EXECUTION_MODE': 'local'}) as s:
        r = httpx.post(s.url + '/chat/completions', json=body | {'model': 'gpt-4.1-mini'})
        assert r.status_code == 400 and r.json()['error']['param'] == 'model'
    with start_server('--no-local', env=env) as s:
        r = httpx.post(s.url + '/chat/completions', json=body | {'model': 'smollm2-135m-instruct'})
        assert r.status_code == 200 and r.headers['x-hybrie-executed-by'] == 'cloud:openai'


def test_models_lists_cloud_models_with_capabilities(cloud_server):
    data = {m['id']: m for m in httpx.get(cloud_server.url + '/models').json()['data']}
    for p, m in MODELS.items():
        assert data[m]['owned_by'] == p
        assert ('vision' in data[m]['capabilities']) == (p != 'mistral')
    assert 'smollm2-135m-instruct' in data


def test_unconfigured_provider_is_not_offered(standins):
    env = {'OPENAI_API_KEY': KEYS['OPENAI_API_KEY'], **standins.env()}
    with start_server(env=env) as s:
        ids = [m['id'] for m in httpx.get(s.url + '/models').json()['data']]
        assert 'gpt-4.1-mini' in ids and 'claude-sonnet-4-6' not in ids
        r = httpx.post(s.url + '/chat/completions', json={'model': 'claude-sonnet-4-6', 'messages': [{'role': 'user', 'content': 'Hi'}]},
                       headers={'x-hybrie-execution-mode': 'cloud'})
        assert r.status_code == 400 and 'ANTHROPIC_API_KEY' in r.json()['error']['message']
        # one provider configured: cloud mode needs no provider header
        r = httpx.post(s.url + '/chat/completions', json={'model': 'smollm2-135m-instruct', 'messages': [{'role': 'user', 'content': 'Hi'}]},
                       headers={'x-hybrie-execution-mode': 'cloud'})
        assert r.status_code == 200 and r.headers['x-hybrie-executed-by'] == 'cloud:openai'


def test_hybrid_sends_images_for_a_blind_local_model_to_the_cloud(oc, standins):
    r = oc.chat.completions.with_raw_response.create(model='smollm2-135m-instruct', messages=IMG_MSG(PNG_URL),
                                                     extra_headers={'x-hybrie-execution-mode': 'hybrid', 'x-hybrie-cloud-provider': 'anthropic'})
    assert (r.headers['x-hybrie-executed-by'], r.headers['x-hybrie-fallback-from']) == ('cloud:anthropic', 'local')
    assert standins.last('anthropic')[2]['messages'][0]['content'][1]['type'] == 'image'


def test_local_mode_refuses_images_for_a_blind_local_model(oc):
    with pytest.raises(openai.BadRequestError) as e:
        oc.chat.completions.create(model='smollm2-135m-instruct', messages=IMG_MSG(PNG_URL))
    assert 'smollm2-135m-instruct' in e.value.message


def test_hybrid_falls_back_when_the_local_queue_is_full(standins):
    "One sequence decoding, one queued: a third local request would get 429, so under `hybrid` it goes to the cloud."
    import threading
    env = {**KEYS, **standins.env(), 'HYBRIE_CLOUD_MAX_RETRIES': '0'}
    with start_server('--max-batch-size', '1', '--max-queue', '1', env=env) as s:
        oc = openai.OpenAI(base_url=s.url, api_key='unused', max_retries=0)
        long = dict(model='smollm2-135m-instruct', messages=[{'role': 'user', 'content': 'Tell me a long story.'}], max_tokens=400,
                    stream=True, extra_body={'ignore_eos': True})
        started, stop = threading.Event(), threading.Event()
        def hold():
            for _ in oc.chat.completions.create(**long):
                started.set()
                if stop.is_set(): break
        holders = [threading.Thread(target=hold, daemon=True) for _ in range(2)]
        holders[0].start(); assert started.wait(60)
        holders[1].start()
        wait_for(lambda: requests_running(s.root) >= 2, 'the second stream to wait in the queue')
        try:
            with pytest.raises(openai.RateLimitError):  # local only: the queue is full
                oc.chat.completions.create(model='smollm2-135m-instruct', messages=[{'role': 'user', 'content': 'Hi'}])
            r = oc.chat.completions.with_raw_response.create(model='smollm2-135m-instruct', messages=[{'role': 'user', 'content': 'Hi'}],
                                                             extra_headers={'x-hybrie-execution-mode': 'hybrid', 'x-hybrie-cloud-provider': 'openai'})
            assert (r.headers['x-hybrie-executed-by'], r.headers['x-hybrie-fallback-from']) == ('cloud:openai', 'local')
            assert r.parse().choices[0].message.content == 'Hello from openai!'
        finally:
            stop.set()
            for t in holders: t.join(60)


# ---- agents: tools across rounds, thinking and signatures kept, streamed = full ----

LOOP_TOOLS = TOOLS + [{'type': 'function', 'function': {'name': 'get_time', 'description': 'Local time of a city',
                       'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}}]
RESULTS = {('get_weather', 'Oslo'): 'sunny, 21 C', ('get_weather', 'Paris'): 'rain, 12 C', ('get_time', 'Oslo'): '14:05'}


def reassemble(chunks) -> tuple[dict, str]:
    """The message and finish reason a stream adds up to, by OpenAI's rules (checked on the way): a tool call's first delta
    has its `index`, `id`, `type` and `name`, the later ones only argument pieces; a thinking block is the reasoning since
    the previous block, closed by the delta whose `thinking_blocks` carries its signature (a redacted block comes whole)."""
    msg, calls, blocks, since, finish = {'role': 'assistant'}, {}, [], '', None
    for c in chunks:
        if not c.choices: continue
        d, ch = c.choices[0].delta.model_dump(exclude_none=True), c.choices[0]
        for k in ('content', 'reasoning_content', 'reasoning'):
            if k in d: msg[k] = msg.get(k, '') + d[k]
        since += d.get('reasoning_content', '')
        for b in d.get('thinking_blocks') or []:
            blocks.append({'type': 'thinking', 'thinking': since + b['thinking'], 'signature': b['signature']} if b['type'] == 'thinking' else b)
            if b['type'] == 'thinking': since = ''
        for tc in d.get('tool_calls') or []:
            if tc['index'] not in calls:
                assert tc['id'] and tc['type'] == 'function' and tc['function']['name'], tc
                calls[tc['index']] = {'id': tc['id'], 'type': 'function', 'function': {'name': tc['function']['name'], 'arguments': ''}}
            else: assert 'id' not in tc and 'name' not in tc['function'], tc
            calls[tc['index']]['function']['arguments'] += tc['function'].get('arguments') or ''
        finish = ch.finish_reason or finish
    assert sorted(calls) == list(range(len(calls)))
    if calls: msg['tool_calls'] = [calls[k] for k in sorted(calls)]
    if blocks: msg['thinking_blocks'] = blocks
    if 'content' not in msg and not calls: msg['content'] = ''
    return msg, finish


def ask(oc, model, headers, msgs, stream=False, **kw) -> tuple[dict, str]:
    "One turn: the assistant message as a client keeps it (everything it received), and the finish reason."
    if stream: return reassemble(oc.chat.completions.create(model=model, messages=msgs, stream=True, extra_headers=headers, **kw))
    ch = oc.chat.completions.create(model=model, messages=msgs, extra_headers=headers, **kw).choices[0]
    return ch.message.model_dump(exclude_none=True), ch.finish_reason


def agent_loop(oc, model, headers=None, stream=False, max_rounds=6, **kw) -> list[dict]:
    "An agent: ask, run every tool the model calls, send the results back, until it answers; the conversation."
    msgs = [{'role': 'user', 'content': 'Weather in Oslo and Paris, and the time in Oslo? @loop'}]
    for _ in range(max_rounds):
        msg, finish = ask(oc, model, headers, msgs, stream, tools=LOOP_TOOLS, **kw)
        msgs.append(msg)
        if finish != 'tool_calls': return msgs
        for tc in msg['tool_calls']:
            args = json.loads(tc['function']['arguments'])
            msgs.append({'role': 'tool', 'tool_call_id': tc['id'], 'content': RESULTS[tc['function']['name'], args['city']]})
    raise AssertionError('the model never answered')


@pytest.mark.parametrize('stream', [False, True], ids=['full', 'streamed'])
@pytest.mark.parametrize('p', PROVIDERS)
def test_agent_loop(oc, standins, p, stream):
    "The same agent runs against every provider, for several rounds; thinking is on, so Anthropic and Gemini sign their turns."
    msgs = agent_loop(oc, MODELS[p], cloud(p), stream, extra_body={'thinking_mode': 'on'} if p in ('anthropic', 'gemini') else {})
    assert msgs[-1]['content'] == 'Done: sunny, 21 C; rain, 12 C; 14:05'
    assert [len(m.get('tool_calls') or []) for m in msgs if m['role'] == 'assistant'] == [2, 1, 0]
    ids = [tc['id'] for m in msgs for tc in m.get('tool_calls') or []]
    assert len(set(ids)) == 3
    b = standins.last(p)[2]
    if p == 'anthropic':  # every tool turn went back with its thinking, signatures and the redacted block intact
        turns = [m['content'] for m in b['messages'] if m['role'] == 'assistant']
        assert [[x['type'] for x in t] for t in turns] == [['thinking', 'tool_use', 'tool_use'], ['redacted_thinking', 'thinking', 'tool_use']]
        assert 'thinking' in b and msgs[1]['thinking_blocks'][0]['signature'].startswith('sig-')
    elif p == 'gemini':  # the signature rode in the id and went back as the first call's thoughtSignature
        assert '__thought__' in msgs[1]['tool_calls'][0]['id'] and '__thought__' not in msgs[1]['tool_calls'][1]['id']
        turns = [c['parts'] for c in b['contents'] if c['role'] == 'model']
        assert all('thoughtSignature' in t[0] and '__thought__' not in t[0]['functionCall']['id'] for t in turns)


@pytest.mark.parametrize('p', PROVIDERS)
def test_streamed_tool_calls_reassemble_to_the_full_message(oc, p):
    "Two parallel calls (with signed thinking at Anthropic): the streamed deltas add up to exactly the full message."
    msgs = [{'role': 'user', 'content': 'Weather in Oslo and Paris? @loop'}]
    kw = dict(tools=LOOP_TOOLS, extra_body={'thinking_mode': 'on'} if p == 'anthropic' else {})
    full, f1 = ask(oc, MODELS[p], cloud(p), msgs, **kw)
    streamed, f2 = ask(oc, MODELS[p], cloud(p), msgs, stream=True, **kw)
    if p == 'anthropic':  # each answer is signed anew
        for m in (full, streamed): m['thinking_blocks'][0].pop('signature')
    if p == 'gemini':  # so are Gemini's calls, in their ids
        for m in (full, streamed): m['tool_calls'][0]['id'] = m['tool_calls'][0]['id'].split('__thought__')[0]
    assert (streamed, f2) == (full, f1) and f1 == 'tool_calls' and len(full['tool_calls']) == 2


def test_anthropic_tool_turn_without_its_thinking_runs_without_thinking(oc, standins):
    "A client that drops thinking_blocks gets its answer (thinking left off and reported) rather than Anthropic's 400."
    first, _ = ask(oc, MODELS['anthropic'], cloud('anthropic'), [{'role': 'user', 'content': 'Weather? @loop'}], tools=LOOP_TOOLS,
                   extra_body={'thinking_mode': 'on'})
    bare = {k: v for k, v in first.items() if k in ('role', 'content', 'tool_calls')}
    convo = [{'role': 'user', 'content': 'Weather? @loop'}, bare,
             *[{'role': 'tool', 'tool_call_id': tc['id'], 'content': 'sunny'} for tc in bare['tool_calls']]]
    r = raw(oc, 'anthropic', messages=convo, tools=LOOP_TOOLS, extra_body={'thinking_mode': 'on'})
    assert r.parse().choices[0].finish_reason == 'tool_calls' and r.headers['x-hybrie-dropped-params'] == 'thinking_mode'
    assert 'thinking' not in standins.last('anthropic')[2]
    # a block altered on the way is the provider's 400, passed on as a 400
    tampered = [convo[0], {**first, 'thinking_blocks': [{**first['thinking_blocks'][0], 'thinking': 'changed'}]}, *convo[2:]]
    with pytest.raises(openai.BadRequestError) as e: raw(oc, 'anthropic', messages=tampered, tools=LOOP_TOOLS, extra_body={'thinking_mode': 'on'})
    assert 'signature' in e.value.message


def test_gemini_signature_from_google_and_litellm_fields(oc, standins):
    "A client that keeps Google's extra_content (or LiteLLM's provider_specific_fields) instead of the id's signature is served too."
    first, _ = ask(oc, MODELS['gemini'], cloud('gemini'), [{'role': 'user', 'content': 'Weather? @loop'}], tools=LOOP_TOOLS)
    bare_id, _, sig = first['tool_calls'][0]['id'].partition('__thought__')
    for extra in ({'extra_content': {'google': {'thought_signature': sig}}}, {'provider_specific_fields': {'thought_signature': sig}}):
        calls = [{**first['tool_calls'][0], 'id': bare_id, **extra}, first['tool_calls'][1]]
        convo = [{'role': 'user', 'content': 'Weather? @loop'}, {'role': 'assistant', 'content': None, 'tool_calls': calls},
                 *[{'role': 'tool', 'tool_call_id': tc['id'], 'content': 'sunny'} for tc in calls]]
        assert raw(oc, 'gemini', messages=convo, tools=LOOP_TOOLS).parse().choices[0].finish_reason == 'tool_calls'
        assert standins.last('gemini')[2]['contents'][1]['parts'][0]['functionCall']['id'] == bare_id


def test_gemini_call_made_elsewhere_gets_the_placeholder_signature(oc, standins):
    "A conversation begun at another provider goes on at Gemini 3: its unsigned calls get Google's placeholder."
    convo = [{'role': 'user', 'content': 'Weather? @loop'},
             {'role': 'assistant', 'content': None, 'tool_calls': [{'id': 'call_x', 'type': 'function', 'function': {'name': 'get_weather', 'arguments': '{"city": "Oslo"}'}}]},
             {'role': 'tool', 'tool_call_id': 'call_x', 'content': 'sunny'}]
    assert raw(oc, 'gemini', messages=convo, tools=LOOP_TOOLS).parse().choices[0].finish_reason == 'tool_calls'
    assert standins.last('gemini')[2]['contents'][1]['parts'][0]['thoughtSignature'] == 'skip_thought_signature_validator'


# ---- structured output ----

SCHEMAS = {
    'nested': {'type': 'object', 'properties': {'name': {'type': 'string'}, 'address': {'type': 'object', 'properties': {'city': {'type': 'string'}, 'zip': {'type': 'integer', 'minimum': 1000}}, 'required': ['city', 'zip']}}, 'required': ['name', 'address'], 'additionalProperties': False},
    'array_enum': {'type': 'object', 'properties': {'tags': {'type': 'array', 'items': {'enum': ['a', 'b']}, 'minItems': 2}}, 'required': ['tags']},
    'nullable_anyof': {'type': 'object', 'properties': {'n': {'type': ['number', 'null']}, 'id': {'anyOf': [{'type': 'string'}, {'type': 'integer'}]}}, 'required': ['n', 'id']},
    'refs': {'type': 'object', 'properties': {'pet': {'$ref': '#/$defs/pet'}}, 'required': ['pet'], '$defs': {'pet': {'type': 'object', 'properties': {'kind': {'const': 'cat'}}, 'required': ['kind']}}},
    'array_root': {'type': 'array', 'items': {'type': 'string'}},
}


@pytest.mark.parametrize('stream', [False, True], ids=['full', 'streamed'])
@pytest.mark.parametrize('name', list(SCHEMAS))
@pytest.mark.parametrize('p', ['anthropic', 'gemini'])
def test_json_schema_answer(oc, standins, p, name, stream):
    "Anthropic through a forced tool, Gemini through a response schema: the content is JSON valid against the schema."
    rf = {'type': 'json_schema', 'json_schema': {'name': name, 'schema': SCHEMAS[name], 'strict': True}}
    msg, finish = ask(oc, MODELS[p], cloud(p), [{'role': 'user', 'content': 'Describe it.'}], stream, response_format=rf)
    jsonschema.validate(json.loads(msg['content']), SCHEMAS[name])
    assert finish == 'stop' and 'tool_calls' not in msg
    b = standins.last(p)[2]
    if p == 'anthropic':
        assert b['tool_choice'] == {'type': 'tool', 'name': name} and [t['name'] for t in b['tools']] == [name]
    else:
        g = b['generationConfig']
        assert g['responseMimeType'] == 'application/json' and g['responseSchema']['type'] in ('OBJECT', 'ARRAY')


@pytest.mark.parametrize('p', ['anthropic', 'gemini'])
def test_json_object_answer(oc, standins, p):
    msg, finish = ask(oc, MODELS[p], cloud(p), [{'role': 'user', 'content': 'Hi'}], response_format={'type': 'json_object'})
    assert finish == 'stop'
    if p == 'anthropic':
        assert isinstance(json.loads(msg['content']), dict) and standins.last(p)[2]['tool_choice']['type'] == 'tool'
    else: assert standins.last(p)[2]['generationConfig']['responseMimeType'] == 'application/json'


def test_anthropic_json_schema_next_to_tools(oc, standins):
    "With the client's own tools, the answer tool is one more choice, and thinking (refused with a forced tool) is dropped."
    rf = {'type': 'json_schema', 'json_schema': {'name': 'report', 'schema': SCHEMAS['nested']}}
    r = raw(oc, 'anthropic', response_format=rf, tools=TOOLS, extra_body={'thinking_mode': 'on'})
    b = standins.last('anthropic')[2]
    assert [t['name'] for t in b['tools']] == ['get_weather', 'report'] and b['tool_choice'] == {'type': 'any'} and 'thinking' not in b
    assert r.headers['x-hybrie-dropped-params'] == 'thinking_mode'


@pytest.mark.parametrize('schema,param', [
    ({'type': 'object', 'properties': {'email': {'type': 'string', 'format': 'email'}}}, 'response_format.json_schema.schema.properties.email'),
    ({'type': 'object', 'additionalProperties': {'type': 'integer'}}, 'response_format.json_schema.schema'),
    ({'oneOf': [{'type': 'string'}, {'type': 'integer'}]}, 'response_format.json_schema.schema'),
    ({'type': 'object', 'properties': {'child': {'$ref': '#'}}}, 'response_format.json_schema.schema.properties.child.properties.child'),
])
def test_gemini_refuses_a_schema_it_cannot_hold(oc, standins, schema, param):
    n = len(standins.requests)
    with pytest.raises(openai.BadRequestError) as e:
        raw(oc, 'gemini', response_format={'type': 'json_schema', 'json_schema': {'name': 's', 'schema': schema}})
    assert e.value.body['param'] == param and 'cannot be sent to gemini' in e.value.message
    assert len(standins.requests) == n  # nothing went upstream


# ---- logprobs ----

@pytest.mark.parametrize('stream', [False, True], ids=['full', 'streamed'])
@pytest.mark.parametrize('p', ['openai', 'gemini', 'mistral'])
def test_logprobs(oc, standins, p, stream):
    kw = dict(model=MODELS[p], messages=[{'role': 'user', 'content': 'Hi'}], logprobs=True, top_logprobs=2, extra_headers=cloud(p))
    if stream:
        lps = [t for c in oc.chat.completions.create(**kw, stream=True) if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    else: lps = oc.chat.completions.create(**kw).choices[0].logprobs.content
    assert ''.join(t.token for t in lps) == f'Hello from {p}!'
    assert all(t.logprob == -0.25 and len(t.top_logprobs) == 2 for t in lps)
    b = standins.last(p)[2]
    if p == 'gemini': assert (b['generationConfig']['responseLogprobs'], b['generationConfig']['logprobs']) == (True, 2)
    else: assert (b['logprobs'], b['top_logprobs']) == (True, 2)


def test_anthropic_has_no_logprobs_and_says_so(oc):
    r = raw(oc, 'anthropic', logprobs=True)
    assert r.headers['x-hybrie-dropped-params'] == 'logprobs' and r.parse().choices[0].logprobs is None


# ---- bad tools, formats and turns: 400, never 500, for every provider ----

BAD = [
    (dict(tools=[{'type': 'function'}]), 'tools.0'),
    (dict(tools=[{'type': 'function', 'function': {'name': 'get weather'}}]), 'tools.0.function.name'),
    (dict(tools=[{'type': 'function', 'function': {'name': 'f', 'parameters': {'type': 'array'}}}]), 'tools.0.function.parameters'),
    (dict(tools=TOOLS + TOOLS), 'tools.1.function.name'),
    (dict(tools=TOOLS, tool_choice={'type': 'function', 'function': {'name': 'nope'}}), 'tool_choice'),
    (dict(tool_choice='required'), 'tool_choice'),
    (dict(response_format={'type': 'xml'}), 'response_format.type'),
    (dict(response_format={'type': 'json_schema'}), 'response_format.json_schema'),
    (dict(response_format={'type': 'json_schema', 'json_schema': {'name': 'a b', 'schema': {}}}), 'response_format.json_schema.name'),
    (dict(messages=[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'x', 'thinking_blocks': [{'type': 'thinking', 'signature': 's'}]}]), 'messages.1.thinking_blocks.0'),
    (dict(messages=[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'x', 'thinking_blocks': [{'type': 'secret'}]}]), 'messages.1.thinking_blocks.0.type'),
]


@pytest.mark.parametrize('kw,param', BAD, ids=[b[1] + f'-{i}' for i, b in enumerate(BAD)])
@pytest.mark.parametrize('p', PROVIDERS)
def test_bad_tools_and_formats_are_400(oc, p, kw, param):
    with pytest.raises(openai.BadRequestError) as e: raw(oc, p, **kw)
    assert e.value.status_code == 400 and e.value.body['param'] == param, e.value.body


def test_bad_thought_signature_is_400(oc):
    calls = [{'id': 'call_1__thought__***', 'type': 'function', 'function': {'name': 'get_weather', 'arguments': '{}'}}]
    msgs = [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': None, 'tool_calls': calls},
            {'role': 'tool', 'tool_call_id': 'call_1__thought__***', 'content': 'x'}]
    with pytest.raises(openai.BadRequestError) as e: raw(oc, 'gemini', messages=msgs, tools=TOOLS)
    assert e.value.body['param'] == 'messages.1.tool_calls.0.id'
