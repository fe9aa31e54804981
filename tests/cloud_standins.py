"""Loopback stand-ins for the cloud providers, speaking each provider's real wire format.

One Starlette app serves all four under path prefixes, so a test points the runtime's
`*_BASE_URL`s at one loopback port:

- OpenAI:    POST /openai/v1/chat/completions            (JSON, or SSE `data:` chunks + `[DONE]`)
- Anthropic: POST /anthropic/v1/messages                 (JSON, or the Messages SSE event sequence)
- Gemini:    POST /gemini/{version}/models/{m}:generateContent and :streamGenerateContent?alt=sse (google-genai 3.x sends v1)
- Mistral:   POST /mistral/v1/chat/completions           (JSON, or SSE `data:` chunks + `[DONE]`)
- GET /img/a.png: a tiny PNG, for remote image fetching.

What a stand-in does is chosen by a directive in the last user message's text:
`@429`, `@401`, `@500` (errors in the provider's own error shape), `@slow` (answers after
3 s), `@cut` (a stream that stops mid-way: the connection drops), `@tool` (a tool call),
`@think` (reasoning first). Otherwise it answers `Hello from <provider>!` in four pieces.
Every request is recorded in `StandIns.requests` as (provider, path, headers, body).
"""
import asyncio, base64, json, threading, time
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PNG = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')
PIECES = lambda p: ['Hello', ' from ', p, '!']


def _last_user_text(provider, body) -> str:
    if provider == 'gemini':
        for c in reversed(body.get('contents', [])):
            if c.get('role') == 'user': return ' '.join(p.get('text', '') for p in c.get('parts', []))
        return ''
    for m in reversed(body.get('messages', [])):
        if m.get('role') == 'user':
            c = m.get('content')
            if isinstance(c, str): return c
            return ' '.join(p.get('text', '') for p in c if isinstance(p, dict) and p.get('type') == 'text')
    return ''


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
        self.app = Starlette(routes=[
            Route('/openai/v1/chat/completions', self.openai_like('openai'), methods=['POST']),
            Route('/mistral/v1/chat/completions', self.openai_like('mistral'), methods=['POST']),
            Route('/anthropic/v1/messages', self.anthropic, methods=['POST']),
            Route('/gemini/{version}/models/{rest:path}', self.gemini, methods=['POST']),
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

    # --- OpenAI and Mistral: chat completions ---
    def openai_like(self, provider):
        async def handler(request: Request):
            body, text, err = await self._record(provider, request)
            if err: return err
            model, cid, created = body['model'], 'chatcmpl-standin', int(time.time())
            usage = {'prompt_tokens': 11, 'completion_tokens': 4, 'total_tokens': 15}
            tool = '@tool' in text
            reasoning = 'Let me think.' if '@think' in text else None
            if not body.get('stream'):
                msg = {'role': 'assistant', 'content': None if tool else ''.join(PIECES(provider))}
                if reasoning: msg['reasoning_content'] = reasoning
                if tool: msg['tool_calls'] = [{'id': 'call_1', 'type': 'function',
                                               'function': {'name': 'get_weather', 'arguments': '{"city": "Oslo"}'}}]
                return JSONResponse({'id': cid, 'object': 'chat.completion', 'created': created, 'model': model,
                                     'choices': [{'index': 0, 'message': msg, 'finish_reason': 'tool_calls' if tool else 'stop'}],
                                     'usage': usage})
            def chunk(delta, finish=None, use=None):
                d = {'id': cid, 'object': 'chat.completion.chunk', 'created': created, 'model': model,
                     'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}] if delta is not None else []}
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

    # --- Anthropic: messages ---
    async def anthropic(self, request: Request):
        body, text, err = await self._record('anthropic', request)
        if err: return err
        tool, think = '@tool' in text, '@think' in text
        content = []
        if think: content.append({'type': 'thinking', 'thinking': 'Let me think.', 'signature': 'sig'})
        if tool: content.append({'type': 'tool_use', 'id': 'toolu_1', 'name': 'get_weather', 'input': {'city': 'Oslo'}})
        else: content.append({'type': 'text', 'text': ''.join(PIECES('anthropic'))})
        stop = 'tool_use' if tool else 'end_turn'
        msg = {'id': 'msg_standin', 'type': 'message', 'role': 'assistant', 'model': body['model'], 'content': content,
               'stop_reason': stop, 'stop_sequence': None, 'usage': {'input_tokens': 11, 'output_tokens': 4}}
        if not body.get('stream'): return JSONResponse(msg)
        ev = lambda name, d: f'event: {name}\ndata: {json.dumps({"type": name, **d})}\n\n'
        out = [ev('message_start', {'message': {**msg, 'content': [], 'stop_reason': None, 'usage': {'input_tokens': 11, 'output_tokens': 1}}})]
        for i, b in enumerate(content):
            if b['type'] == 'thinking':
                out += [ev('content_block_start', {'index': i, 'content_block': {'type': 'thinking', 'thinking': ''}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'thinking_delta', 'thinking': b['thinking']}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'signature_delta', 'signature': 'sig'}})]
            elif b['type'] == 'tool_use':
                out += [ev('content_block_start', {'index': i, 'content_block': {'type': 'tool_use', 'id': b['id'], 'name': b['name'], 'input': {}}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'input_json_delta', 'partial_json': '{"ci'}}),
                        ev('content_block_delta', {'index': i, 'delta': {'type': 'input_json_delta', 'partial_json': 'ty": "Oslo"}'}})]
            else:
                out.append(ev('content_block_start', {'index': i, 'content_block': {'type': 'text', 'text': ''}}))
                out += [ev('content_block_delta', {'index': i, 'delta': {'type': 'text_delta', 'text': p}}) for p in PIECES('anthropic')]
            out.append(ev('content_block_stop', {'index': i}))
        out += [ev('message_delta', {'delta': {'stop_reason': stop, 'stop_sequence': None}, 'usage': {'output_tokens': 4}}),
                ev('message_stop', {})]
        return _sse(out, cut='@cut' in text)

    # --- Gemini: generateContent / streamGenerateContent?alt=sse ---
    async def gemini(self, request: Request):
        body, text, err = await self._record('gemini', request)
        if err: return err
        model, _, method = request.path_params['rest'].partition(':')
        tool, think = '@tool' in text, '@think' in text
        usage = {'promptTokenCount': 11, 'candidatesTokenCount': 4, 'totalTokenCount': 15}
        def resp(parts, finish=None, use=None):
            c = {'index': 0, 'content': {'role': 'model', 'parts': parts}}
            if finish: c['finishReason'] = finish
            d = {'candidates': [c], 'modelVersion': model}
            if use: d['usageMetadata'] = use
            return d
        parts = ([{'text': 'Let me think.', 'thought': True}] if think else []) + \
                ([{'functionCall': {'name': 'get_weather', 'args': {'city': 'Oslo'}}}] if tool else [{'text': p} for p in PIECES('gemini')])
        if method == 'generateContent':
            return JSONResponse(resp([{'text': ''.join(PIECES('gemini'))}] if not tool and not think else parts, 'STOP', usage))
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
