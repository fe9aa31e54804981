"""Loopback stand-ins for the cloud providers, speaking each provider's real wire format.

One Starlette app serves all four under path prefixes, so a test points the runtime's
`*_BASE_URL`s at one loopback port:

- OpenAI:    POST /openai/v1/chat/completions            (JSON, or SSE `data:` chunks + `[DONE]`)
- Anthropic: POST /anthropic/v1/messages                 (JSON, or the Messages SSE event sequence), /v1/messages/count_tokens
- Gemini:    POST /gemini/{version}/models/{m}:generateContent and :streamGenerateContent?alt=sse (google-genai 3.x sends v1)
- Mistral:   POST /mistral/v1/chat/completions           (JSON, or SSE `data:` chunks + `[DONE]`)
- POST /openai/v1/embeddings, /mistral/v1/embeddings: a 3-dimensional vector per input (3 tokens an input)
- GET /img/a.png: a tiny PNG, for remote image fetching.

What a stand-in does is chosen by a directive in the last user message's text:
`@429`, `@401`, `@500` (errors in the provider's own error shape), `@slow` (answers after
3 s), `@cut` (a stream that stops mid-way: the connection drops), `@tool` (a tool call),
`@think` (reasoning first). Otherwise it answers `Hello from <provider>!` in four pieces.
Every request is recorded in `StandIns.requests` as (provider, path, headers, body).

`@loop` plays an agent's tools: while the conversation holds fewer than three tool results
it calls tools (two `get_weather` calls at once, then one `get_time`), then it answers
`Done: <the results>`. Each provider does it in its own wire format, and checks what comes
back as its API does: Anthropic (with thinking on) signs its thinking, adds a redacted block
in the second round, and answers 400 when a tool turn comes back without its blocks or with
a block altered; Gemini 3 signs the first call of a turn and answers 400 when it comes back
unsigned; Mistral answers 400 to a tool call id that is not nine letters and digits. A
forced tool (Anthropic) or a response schema (Gemini) is answered with an instance of its
schema, and logprobs, when asked, come with the text (OpenAI, Mistral, Gemini).
"""
import asyncio, base64, json, re, threading, time
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PNG = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')
PIECES = lambda p: ['Hello', ' from ', p, '!']


def _last_user_text(provider, body) -> str:
    "The text of the last user message that has text (tool results are user turns at Anthropic and Gemini)."
    if provider == 'gemini':
        for c in reversed(body.get('contents', [])):
            if c.get('role') == 'user' and (t := ' '.join(p['text'] for p in c.get('parts', []) if 'text' in p)): return t
        return ''
    for m in reversed(body.get('messages', [])):
        if m.get('role') == 'user':
            c = m.get('content')
            if isinstance(c, str): return c
            if t := ' '.join(p.get('text', '') for p in c if isinstance(p, dict) and p.get('type') == 'text'): return t
    return ''


ROUNDS = [[('get_weather', {'city': 'Oslo'}), ('get_weather', {'city': 'Paris'})], [('get_time', {'city': 'Oslo'})]]
NEEDED = sum(len(r) for r in ROUNDS)


def _loop_step(results):
    "(round, calls) while tools are due, else (None, final text)."
    if len(results) >= NEEDED: return None, 'Done: ' + '; '.join(results)
    r = 0 if len(results) < len(ROUNDS[0]) else 1
    return r, ROUNDS[r]


def sample(schema, root=None):
    "An instance of a JSON Schema or a Gemini schema (upper-case types, snake or camel case keys, local `$ref`s)."
    root = schema if root is None else root
    if '$ref' in schema:
        target = root
        for part in schema['$ref'].removeprefix('#').strip('/').split('/'):
            if part: target = target[part]
        return sample(target, root)
    if 'const' in schema: return schema['const']
    g = lambda *ks: next((schema[k] for k in ks if k in schema), None)
    if (alts := g('anyOf', 'any_of')): return sample(alts[0], root)
    if (e := g('enum')): return e[0]
    t = (schema.get('type') or 'object')
    t = t[0] if isinstance(t, list) else t
    t = t.lower()
    if t == 'object':
        props = g('properties') or {}
        return {k: sample(v, root) for k, v in props.items()}
    if t == 'array':
        n = max(1, g('minItems', 'min_items') or 1)
        return [sample(g('items') or {}, root) for _ in range(n)]
    if t == 'integer': return int(g('minimum') or 0) + 1
    if t == 'number': return float(g('minimum') or 0) + 0.5
    if t == 'boolean': return True
    if t == 'null': return None
    return 'x' * max(1, g('minLength', 'min_length') or 1)


def _bad_request(provider, msg):
    if provider == 'anthropic': return JSONResponse({'type': 'error', 'error': {'type': 'invalid_request_error', 'message': msg}}, 400)
    if provider == 'gemini': return JSONResponse({'error': {'code': 400, 'message': msg, 'status': 'INVALID_ARGUMENT'}}, 400)
    if provider == 'mistral': return JSONResponse({'object': 'error', 'message': msg, 'type': 'invalid_request_error', 'param': None, 'code': '3230'}, 400)
    return JSONResponse({'error': {'message': msg, 'type': 'invalid_request_error', 'param': None, 'code': None}}, 400)


def _token_logprobs(text, top):
    "OpenAI-shaped logprobs of `text` as one token (with Mistral's `token_id`, which its SDK requires)."
    t = {'token': text, 'logprob': -0.25, 'bytes': list(text.encode()), 'token_id': 7}
    return {'content': [{**t, 'top_logprobs': [t, {'token': '?', 'logprob': -3.0, 'bytes': [63], 'token_id': 8}][:max(top, 1)]}]}


def _error(provider, status):
    msg = {429: 'Rate limit reached for requests', 401: 'Incorrect API key provided: sk-te...RET1',
           500: 'The server had an error while processing your request'}[status]
    headers = {'retry-after': '7'} if status == 429 else {}
    if provider == 'anthropic':
        typ = {429: 'rate_limit_error', 401: 'authentication_error', 500: 'api_error'}[status]
        body = {'type': 'error', 'error': {'type': typ, 'message': msg}}
    elif provider == 'gemini':
        st = {429: 'RESOURCE_EXHAUSTED', 401: 'UNAUTHENTICATED', 500: 'INTERNAL'}[status]
        body = {'error': {'code': status, 'message': msg, 'status': st}}
    elif provider == 'mistral': body = {'object': 'error', 'message': msg, 'type': 'error', 'param': None, 'code': str(status)}
    else: body = {'error': {'message': msg, 'type': 'requests' if status == 429 else 'invalid_request_error', 'param': None, 'code': None}}
    return JSONResponse(body, status, headers)


def _sse(events, cut=False):
    async def gen():
        for i, e in enumerate(events):
            if cut and i == 3: raise ConnectionAbortedError('stand-in drops the connection mid-stream')
            yield e.encode()
            await asyncio.sleep(0)
    return StreamingResponse(gen(), media_type='text/event-stream')


def _data(d) -> str: return f'data: {json.dumps(d)}\n\n'


class StandIns:
    "The four provider stand-ins on one loopback port (`.url`), with the requests they saw."
    def __init__(self):
        self.requests = []
        self.signed, self.redacted, self.gemini_signed = set(), set(), set()  # what the stand-ins signed, to check what comes back
        self.app = Starlette(routes=[
            Route('/openai/v1/chat/completions', self.openai_like('openai'), methods=['POST']),
            Route('/mistral/v1/chat/completions', self.openai_like('mistral'), methods=['POST']),
            Route('/anthropic/v1/messages', self.anthropic, methods=['POST']),
            Route('/anthropic/v1/messages/count_tokens', self.anthropic_count, methods=['POST']),
            Route('/gemini/{version}/models/{rest:path}', self.gemini, methods=['POST']),
            Route('/openai/v1/embeddings', self.embeddings('openai'), methods=['POST']),
            Route('/mistral/v1/embeddings', self.embeddings('mistral'), methods=['POST']),
            Route('/img/a.png', lambda r: Response(PNG, media_type='image/png')),
            Route('/img/page', lambda r: Response('<h1>no</h1>', media_type='text/html')),
        ])

    def last(self, provider):
        "The last (path, headers, body) `provider` received."
        for p, path, h, b in reversed(self.requests):
            if p == provider: return path, h, b
        raise AssertionError(f'{provider} received nothing')

    async def _record(self, provider, request: Request):
        body = json.loads(await request.body())
        self.requests.append((provider, request.url.path + ('?' + request.url.query if request.url.query else ''),
                              dict(request.headers), body))
        text = _last_user_text(provider, body)
        for status in (429, 401, 500):
            if f'@{status}' in text: return body, text, _error(provider, status)
        if '@slow' in text: await asyncio.sleep(3)
        return body, text, None

    # --- OpenAI and Mistral: embeddings (a 3-dimensional vector per input, 3 tokens an input) ---
    def embeddings(self, provider):
        async def handler(request: Request):
            body = json.loads(await request.body())
            self.requests.append((provider, request.url.path, dict(request.headers), body))
            inputs = body.get('input', body.get('inputs'))
            inputs = [inputs] if isinstance(inputs, str) else inputs
            data = [{'object': 'embedding', 'index': i, 'embedding': [0.25, 0.5, float(i)]} for i in range(len(inputs))]
            return JSONResponse({'id': 'emb-standin', 'object': 'list', 'data': data, 'model': body['model'],
                                 'usage': {'prompt_tokens': 3 * len(inputs), 'total_tokens': 3 * len(inputs)}})
        return handler

    # --- OpenAI and Mistral: chat completions ---
    def openai_like(self, provider):
        async def handler(request: Request):
            body, text, err = await self._record(provider, request)
            if err: return err
            model, cid, created = body['model'], 'chatcmpl-standin', int(time.time())
            usage = {'prompt_tokens': 11, 'completion_tokens': 4, 'total_tokens': 15}
            if provider == 'mistral':  # Mistral's own id rule
                ids = [tc['id'] for m in body['messages'] for tc in m.get('tool_calls') or []] + \
                      [m['tool_call_id'] for m in body['messages'] if m.get('tool_call_id')]
                if bad := [i for i in ids if not re.fullmatch(r'[A-Za-z0-9]{9}', i)]:
                    return _bad_request(provider, f'Tool call id was {bad[0]} but must be a-z, A-Z, 0-9, with a length of 9.')
            if '@loop' in text: return self.openai_loop(provider, body, cid, created, usage)
            tool = '@tool' in text
            reasoning = 'Let me think.' if '@think' in text else None
            lp = (lambda t: _token_logprobs(t, body.get('top_logprobs') or 0)) if body.get('logprobs') else (lambda t: None)
            if not body.get('stream'):
                msg = {'role': 'assistant', 'content': None if tool else ''.join(PIECES(provider))}
                if reasoning: msg['reasoning_content'] = reasoning
                if tool: msg['tool_calls'] = [{'id': 'call_1', 'type': 'function',
                                               'function': {'name': 'get_weather', 'arguments': '{"city": "Oslo"}'}}]
                full_lp = None if tool else lp(msg['content'])
                return JSONResponse({'id': cid, 'object': 'chat.completion', 'created': created, 'model': model,
                                     'choices': [{'index': 0, 'message': msg, 'logprobs': full_lp, 'finish_reason': 'tool_calls' if tool else 'stop'}],
                                     'usage': usage})
            def chunk(delta, finish=None, use=None):
                d = {'id': cid, 'object': 'chat.completion.chunk', 'created': created, 'model': model,
                     'choices': [{'index': 0, 'delta': delta, 'logprobs': lp(delta['content']) if (delta or {}).get('content') else None,
                                  'finish_reason': finish}] if delta is not None else []}
                if use: d['usage'] = use
                return _data(d)
            ev = [chunk({'role': 'assistant', 'content': ''})]
            if reasoning: ev.append(chunk({'reasoning_content': reasoning}))
            if tool and provider == 'mistral':  # Mistral streams each tool call whole, in one delta
                ev.append(chunk({'tool_calls': [{'id': 'call_1', 'type': 'function', 'function': {'name': 'get_weather', 'arguments': '{"city": "Oslo"}'}}]}))
            elif tool:
                ev += [chunk({'tool_calls': [{'index': 0, 'id': 'call_1', 'type': 'function', 'function': {'name': 'get_weather', 'arguments': '{"ci'}}]}),
                       chunk({'tool_calls': [{'index': 0, 'function': {'arguments': 'ty": "Oslo"}'}}]})]
            else: ev += [chunk({'content': p}) for p in PIECES(provider)]
            if provider == 'mistral':  # Mistral sends usage with the last choice chunk
                ev.append(chunk({'content': ''}, 'tool_calls' if tool else 'stop', usage))
            else:
                ev.append(chunk({}, 'tool_calls' if tool else 'stop'))
                if (body.get('stream_options') or {}).get('include_usage'): ev.append(chunk(None, use=usage))
            ev.append('data: [DONE]\n\n')
            return _sse(ev, cut='@cut' in text)
        return handler

    def openai_loop(self, provider, body, cid, created, usage):
        "`@loop` in the OpenAI shape (Mistral: ids of nine characters, each call streamed whole and numbered 0)."
        r, step = _loop_step([m['content'] for m in body['messages'] if m['role'] == 'tool'])
        ids = [(f'r{r}k{k}abcde' if provider == 'mistral' else f'call_r{r}_{k}') for k in range(len(step))] if r is not None else []
        calls = [{'id': i, 'type': 'function', 'function': {'name': n, 'arguments': json.dumps(a)}} for i, (n, a) in zip(ids, step)] if r is not None else []
        finish = 'tool_calls' if calls else 'stop'
        base = {'id': cid, 'created': created, 'model': body['model']}
        if not body.get('stream'):
            msg = {'role': 'assistant', 'content': None if calls else step}
            if calls: msg['tool_calls'] = calls
            return JSONResponse({**base, 'object': 'chat.completion', 'choices': [{'index': 0, 'message': msg, 'finish_reason': finish}], 'usage': usage})
        chunk = lambda delta, f=None: _data({**base, 'object': 'chat.completion.chunk', 'choices': [{'index': 0, 'delta': delta, 'finish_reason': f}]})
        ev = [chunk({'role': 'assistant', 'content': ''})]
        for k, c in enumerate(calls):
            if provider == 'mistral': ev.append(chunk({'tool_calls': [{**c, 'index': 0}]}))
            else:
                a = c['function']['arguments']
                ev += [chunk({'tool_calls': [{'index': k, 'id': c['id'], 'type': 'function', 'function': {'name': c['function']['name'], 'arguments': ''}}]}),
                       chunk({'tool_calls': [{'index': k, 'function': {'arguments': a[:5]}}]}), chunk({'tool_calls': [{'index': k, 'function': {'arguments': a[5:]}}]})]
        if not calls: ev += [chunk({'content': step[:6]}), chunk({'content': step[6:]})]
        ev += [chunk({}, finish), _data({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage}), 'data: [DONE]\n\n']
        return _sse(ev)

    # --- Anthropic: messages ---
    async def anthropic(self, request: Request):
        body, text, err = await self._record('anthropic', request)
        if err: return err
        if body.get('thinking'):  # Anthropic's checks of a thinking conversation
            for i, m in enumerate(body['messages']):
                c = m['content'] if isinstance(m['content'], list) else []
                if m['role'] == 'assistant' and any(b['type'] == 'tool_use' for b in c):
                    if c[0]['type'] not in ('thinking', 'redacted_thinking'):
                        return _bad_request('anthropic', f'messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{c[0]["type"]}`.')
                for b in c:
                    if b['type'] == 'thinking' and (b['thinking'], b.get('signature')) not in self.signed or \
                       b['type'] == 'redacted_thinking' and b.get('data') not in self.redacted:
                        return _bad_request('anthropic', f'messages.{i}: Invalid `signature` in `thinking` block')
        tool, think = '@tool' in text, '@think' in text
        content, forced = [], (body.get('tool_choice') or {}).get('type') == 'tool'
        if forced:
            t = next(t for t in body['tools'] if t['name'] == body['tool_choice']['name'])
            content.append({'type': 'tool_use', 'id': 'toolu_answer', 'name': t['name'], 'input': sample(t['input_schema'])})
        elif '@loop' in text:
            r, step = _loop_step([b['content'] for m in body['messages'] if isinstance(m['content'], list)
                                  for b in m['content'] if b['type'] == 'tool_result'])
            if r is not None and body.get('thinking'):
                if r == 1:
                    self.redacted.add(f'REDACTED-{len(self.requests)}')
                    content.append({'type': 'redacted_thinking', 'data': f'REDACTED-{len(self.requests)}'})
                content.append({'type': 'thinking', 'thinking': f'Round {r}: call the tools.', 'signature': f'sig-{len(self.requests)}'})
                self.signed.add((content[-1]['thinking'], content[-1]['signature']))
            if r is None: content.append({'type': 'text', 'text': step})
            else: content += [{'type': 'tool_use', 'id': f'toolu_r{r}_{k}', 'name': n, 'input': a} for k, (n, a) in enumerate(step)]
            tool = r is not None
        else:
            if think: content.append({'type': 'thinking', 'thinking': 'Let me think.', 'signature': 'sig'})
            if tool: content.append({'type': 'tool_use', 'id': 'toolu_1', 'name': 'get_weather', 'input': {'city': 'Oslo'}})
            else: content.append({'type': 'text', 'text': ''.join(PIECES('anthropic'))})
        stop = 'tool_use' if tool or forced else 'end_turn'
        msg = {'id': 'msg_standin', 'type': 'message', 'role': 'assistant', 'model': body['model'], 'content': content,
               'stop_reason': stop, 'stop_sequence': None, 'usage': {'input_tokens': 11, 'output_tokens': 4}}
        if not body.get('stream'): return JSONResponse(msg)
        ev = lambda name, d: f'event: {name}\ndata: {json.dumps({"type": name, **d})}\n\n'
        out = [ev('message_start', {'message': {**msg, 'content': [], 'stop_reason': None, 'usage': {'input_tokens': 11, 'output_tokens': 1}}})]
        for i, b in enumerate(content):
            if b['type'] == 'thinking':
                t = b['thinking']
                out += [ev('content_block_start', {'index': i, 'content_block': {'type': 'thinking', 'thinking': ''}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'thinking_delta', 'thinking': t[:4]}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'thinking_delta', 'thinking': t[4:]}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'signature_delta', 'signature': b['signature']}})]
            elif b['type'] == 'redacted_thinking':
                out.append(ev('content_block_start', {'index': i, 'content_block': b}))
            elif b['type'] == 'tool_use':
                a = json.dumps(b['input'])
                out += [ev('content_block_start', {'index': i, 'content_block': {'type': 'tool_use', 'id': b['id'], 'name': b['name'], 'input': {}}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'input_json_delta', 'partial_json': a[:4]}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'input_json_delta', 'partial_json': a[4:]}})]
            else:
                out.append(ev('content_block_start', {'index': i, 'content_block': {'type': 'text', 'text': ''}}))
                pieces = PIECES('anthropic') if b['text'] == ''.join(PIECES('anthropic')) else [b['text'][:6], b['text'][6:]]
                out += [ev('content_block_delta', {'index': i, 'delta': {'type': 'text_delta', 'text': p}}) for p in pieces]
            out.append(ev('content_block_stop', {'index': i}))
        out += [ev('message_delta', {'delta': {'stop_reason': stop, 'stop_sequence': None}, 'usage': {'output_tokens': 4}}),
                ev('message_stop', {})]
        return _sse(out, cut='@cut' in text)

    async def anthropic_count(self, request: Request):
        "Anthropic's token count: 3 per message and 5 per tool here, so a test can tell what was counted."
        body, text, err = await self._record('anthropic', request)
        if err: return err
        return JSONResponse({'input_tokens': 3 * len(body['messages']) + 5 * len(body.get('tools') or []) + (7 if body.get('system') else 0)})

    # --- Gemini: generateContent / streamGenerateContent?alt=sse ---
    async def gemini(self, request: Request):
        body, text, err = await self._record('gemini', request)
        if err: return err
        model, _, method = request.path_params['rest'].partition(':')
        if model.startswith('gemini-3'):  # Gemini 3 wants the first call of every turn signed
            for i, c in enumerate(body.get('contents', [])):
                calls = [p for p in c['parts'] if 'functionCall' in p]
                sig = calls and calls[0].get('thoughtSignature')
                if calls and (not sig or base64.urlsafe_b64decode(sig + '=' * (-len(sig) % 4)) not in self.gemini_signed
                              and sig != 'skip_thought_signature_validator'):
                    return _bad_request('gemini', f'Function call is missing a thought_signature in functionCall parts (contents.{i}).')
        tool, think = '@tool' in text, '@think' in text
        gc = body.get('generationConfig') or {}
        usage = {'promptTokenCount': 11, 'candidatesTokenCount': 4, 'totalTokenCount': 15}
        def resp(parts, finish=None, use=None):
            c = {'index': 0, 'content': {'role': 'model', 'parts': parts}}
            texts = [p['text'] for p in parts if 'text' in p and not p.get('thought')]
            if gc.get('responseLogprobs') and texts:
                c['logprobsResult'] = {'chosenCandidates': [{'token': t, 'logProbability': -0.25} for t in texts],
                                       'topCandidates': [{'candidates': [{'token': t, 'logProbability': -0.25}, {'token': '?', 'logProbability': -3.0}][:gc.get('logprobs') or 1]} for t in texts]}
            if finish: c['finishReason'] = finish
            d = {'candidates': [c], 'modelVersion': model}
            if use: d['usageMetadata'] = use
            return d
        parts = ([{'text': 'Let me think.', 'thought': True}] if think else []) + \
                ([{'functionCall': {'name': 'get_weather', 'args': {'city': 'Oslo'}}}] if tool else [{'text': p} for p in PIECES('gemini')])
        whole = None if tool or think else [{'text': ''.join(PIECES('gemini'))}]
        if schema := gc.get('responseSchema'):
            a = json.dumps(sample(schema))
            parts, whole = [{'text': a[:5]}, {'text': a[5:]}], [{'text': a}]
        elif '@loop' in text:
            r, step = _loop_step([p['functionResponse']['response']['result'] for c in body['contents'] for p in c['parts'] if 'functionResponse' in p])
            if r is None: parts, whole = [{'text': step[:6]}, {'text': step[6:]}], [{'text': step}]
            else:
                parts = [{'functionCall': {'id': f'fc_r{r}_{k}', 'name': n, 'args': a}} for k, (n, a) in enumerate(step)]
                sig = f'gsig-{len(self.requests)}'.encode()
                self.gemini_signed.add(sig)
                parts[0]['thoughtSignature'] = base64.b64encode(sig).decode()
                whole = parts
        if method == 'generateContent':
            return JSONResponse(resp(whole or parts, 'STOP', usage))
        assert method == 'streamGenerateContent' and request.query_params.get('alt') == 'sse', method
        ev = [_data(resp([p], use={'promptTokenCount': 11})) for p in parts[:-1]]
        ev.append(_data(resp([parts[-1]], 'STOP', usage)))
        return _sse(ev, cut='@cut' in text)

    # --- running ---
    def start(self):
        import socket
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, host='127.0.0.1', port=port, log_level='critical'))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started: time.sleep(0.02)
        self.url = f'http://127.0.0.1:{port}'
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(5)

    def env(self) -> dict:
        "The runtime environment that points every provider at these stand-ins."
        return {'OPENAI_BASE_URL': f'{self.url}/openai/v1', 'ANTHROPIC_BASE_URL': f'{self.url}/anthropic',
                'GEMINI_BASE_URL': f'{self.url}/gemini', 'MISTRAL_BASE_URL': f'{self.url}/mistral'}
