"""The audio API of a real `hybrie serve` (bundled Whisper tiny.en and Piper joe), through the official openai SDK."""
import io, json, re, time, wave
import av, httpx, numpy as np, openai, pytest
from conftest import start_server
from transcripts import words, wer

TEXT = ('The quick brown fox jumps over the lazy dog. Seven silver spoons sat on the kitchen table. '
        'Please call me back tomorrow morning.')
MAGIC = {'mp3': (b'ID3', b'\xff\xfb', b'\xff\xf3', b'\xff\xe3'), 'opus': (b'OggS',), 'aac': (b'\xff\xf1', b'\xff\xf9'),
         'flac': (b'fLaC',), 'wav': (b'RIFF',)}


def decode(data:bytes, rate=16000) -> np.ndarray:
    "Decode with PyAV, independently of the server: mono float samples at `rate`."
    out = []
    with av.open(io.BytesIO(data)) as c:
        rs = av.AudioResampler(format='flt', layout='mono', rate=rate)
        for f in c.decode(audio=0):
            for g in rs.resample(f): out.append(g.to_ndarray().reshape(-1))
        for g in rs.resample(None): out.append(g.to_ndarray().reshape(-1))
    return np.concatenate(out)

def encode(samples:np.ndarray, fmt:str, codec:str, rate=16000) -> bytes:
    "Write `samples` (float, 16 kHz) into container `fmt` with `codec`, with PyAV on a seekable buffer."
    buf = io.BytesIO()
    with av.open(buf, 'w', format=fmt) as c:
        s = c.add_stream(codec, rate=48000 if codec == 'libopus' else rate, layout='mono')
        f = av.AudioFrame.from_ndarray((samples*32767).astype(np.int16)[None, :], format='s16', layout='mono')
        f.sample_rate = rate
        for p in s.encode(f): c.mux(p)
        for p in s.encode(None): c.mux(p)
    return buf.getvalue()


@pytest.fixture(scope='module')
def spoken(client):
    "The sample text, spoken by the server as WAV."
    return client.audio.speech.create(model='tts-1', voice='alloy', input=TEXT, response_format='wav').content


@pytest.fixture(scope='module')
def samples(spoken): return decode(spoken)


# --- speech ---

@pytest.mark.parametrize('fmt', ['mp3', 'opus', 'aac', 'flac', 'wav'])
def test_speech_formats_have_their_real_structure(client, fmt):
    r = client.audio.speech.create(model='tts-1', voice='alloy', input='Hello from the speech endpoint.', response_format=fmt)
    data = r.content
    assert data.startswith(MAGIC[fmt]), (fmt, data[:12])
    if fmt == 'wav': assert data[8:12] == b'WAVE'
    secs = len(decode(data))/16000
    assert 1.0 < secs < 5.0, secs


def test_whole_wav_carries_its_true_length(server):
    "A WAV answer is sent whole: Content-Length, and RIFF and data sizes that `wave` reads as the real duration."
    r = httpx.post(server.url + '/audio/speech', json={'model': 'tts-1', 'voice': 'alloy', 'input': TEXT, 'response_format': 'wav'},
                   timeout=120)
    assert r.status_code == 200 and int(r.headers['content-length']) == len(r.content)
    data = r.content
    assert int.from_bytes(data[4:8], 'little') == len(data) - 8
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        frames = w.getnframes()
        assert len(w.readframes(frames + 1000)) == 2*frames  # the data chunk holds exactly the samples it declares
    samples = len(decode(data, 24000))  # PyAV's count, independent of the header
    assert abs(frames - samples) <= 24, (frames, samples)
    assert 4.0 < frames/24000 < 20.0, frames/24000


def test_streamed_wav_on_request(server):
    "`stream: true` (a HybrIE extension) streams a WAV too, with placeholder sizes; it still decodes whole."
    with httpx.stream('POST', server.url + '/audio/speech', timeout=120,
                      json={'model': 'tts-1', 'voice': 'alloy', 'input': TEXT, 'response_format': 'wav', 'stream': True}) as r:
        assert r.status_code == 200 and 'content-length' not in r.headers
        data = r.read()
    assert data[:4] == b'RIFF' and data[4:8] == b'\xff\xff\xff\xff'
    assert 4.0 < len(decode(data))/16000 < 20.0


def test_speech_pcm_is_24khz_s16le(client):
    data = client.audio.speech.create(model='tts-1', voice='nova', input='Hello from the speech endpoint.', response_format='pcm').content
    assert len(data) % 2 == 0
    pcm = np.frombuffer(data, '<i2')
    assert 1.0 < len(pcm)/24000 < 5.0 and np.abs(pcm).max() > 5000


def test_speed_changes_duration(client):
    def secs(speed):
        return len(decode(client.audio.speech.create(model='tts-1', voice='alloy', input=TEXT, response_format='flac', speed=speed).content))/16000
    slow, fast = secs(0.5), secs(2.0)
    assert fast < 0.4*slow, (slow, fast)


def test_speech_streams_before_synthesis_ends(client):
    text = ' '.join(f'This is sentence number {i} of a long text that takes a while to speak.' for i in range(12))
    t0 = time.perf_counter()
    with client.audio.speech.with_streaming_response.create(model='tts-1', voice='alloy', input=text, response_format='mp3') as r:
        assert r.headers['content-type'] == 'audio/mpeg'
        times, data = [], b''
        for chunk in r.iter_bytes():
            times.append(time.perf_counter() - t0); data += chunk
    assert len(times) >= 3, len(times)
    assert times[0] < 0.5*times[-1], times
    assert len(decode(data))/16000 > 20


def test_voices_and_aliases(server, client):
    v = httpx.get(server.url + '/audio/voices').json()
    assert v['object'] == 'list'
    joe = next(x for x in v['data'] if x['model'] == 'piper-en-us-joe-medium')
    assert joe['id'] == 'en_US-joe-medium' and 'alloy' in joe['openai_voices']
    ids = {m.id: m for m in client.models.list().data}
    for alias in ('whisper-1', 'tts-1', 'tts-1-hd'): assert alias in ids
    for voice in ('joe', 'en_US-joe-medium', 'shimmer'):
        r = client.audio.speech.create(model='piper-en-us-joe-medium', voice=voice, input='Hi.', response_format='wav')
        assert r.content[:4] == b'RIFF'


@pytest.mark.parametrize('kw, err', [
    (dict(model='tts-1', voice='darth-vader', input='hi'), openai.BadRequestError),
    (dict(model='tts-1', voice='alloy', input=''), openai.BadRequestError),
    (dict(model='tts-1', voice='alloy', input='... ?!'), openai.BadRequestError),
    (dict(model='tts-1', voice='alloy', input='hi', response_format='ogg'), openai.BadRequestError),
    (dict(model='tts-1', voice='alloy', input='hi', speed=4.5), openai.BadRequestError),
    (dict(model='tts-1', voice='alloy', input='x'*5000), openai.BadRequestError),
    (dict(model='tts-9', voice='alloy', input='hi'), openai.NotFoundError),
    (dict(model='whisper-tiny.en', voice='alloy', input='hi'), openai.BadRequestError),
])
def test_speech_errors(client, kw, err):
    with pytest.raises(err) as e: client.audio.speech.create(**kw)
    assert e.value.message and e.value.status_code in (400, 404)


# --- transcription ---

def test_round_trip_low_wer(client, spoken):
    r = client.audio.transcriptions.create(model='whisper-1', file=('speech.wav', spoken))
    assert wer(TEXT, r.text) <= 0.1, r.text


@pytest.mark.parametrize('fmt, container, codec', [
    ('mp3', 'mp3', 'libmp3lame'), ('flac', 'flac', 'flac'), ('ogg', 'ogg', 'libopus'),
    ('webm', 'webm', 'libopus'), ('m4a', 'ipod', 'aac'), ('wav', 'wav', 'pcm_s16le'),
])
def test_uploads_in_several_containers(client, samples, fmt, container, codec):
    data = encode(samples, container, codec)
    r = client.audio.transcriptions.create(model='whisper-1', file=(f'speech.{fmt}', data))
    assert wer(TEXT, r.text) <= 0.15, (fmt, r.text)


@pytest.mark.parametrize('fmt', ['mp3', 'opus', 'flac', 'aac'])
def test_server_speech_transcribes_back(client, fmt):
    data = client.audio.speech.create(model='tts-1', voice='alloy', input=TEXT, response_format=fmt).content
    r = client.audio.transcriptions.create(model='whisper-1', file=(f'speech.{fmt}', data))
    assert wer(TEXT, r.text) <= 0.15, (fmt, r.text)


def test_transcript_formats(client, spoken):
    f = ('speech.wav', spoken)
    text = client.audio.transcriptions.create(model='whisper-1', file=f, response_format='text')
    assert isinstance(text, str) and wer(TEXT, text) <= 0.1
    srt = client.audio.transcriptions.create(model='whisper-1', file=f, response_format='srt')
    blocks = srt.strip().split('\n\n')
    for i, b in enumerate(blocks, 1):
        n, stamps, *lines = b.split('\n')
        assert n == str(i) and re.fullmatch(r'\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}', stamps) and lines, b
    vtt = client.audio.transcriptions.create(model='whisper-1', file=f, response_format='vtt')
    assert vtt.startswith('WEBVTT\n\n')
    assert re.search(r'^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}$', vtt, re.M)


def test_verbose_json_segments_and_words(client, spoken):
    r = client.audio.transcriptions.create(model='whisper-1', file=('speech.wav', spoken), response_format='verbose_json',
                                           timestamp_granularities=['word', 'segment'])
    assert r.language == 'en' and r.duration > 5
    assert r.segments and all(s.start <= s.end for s in r.segments)
    assert wer(TEXT, ' '.join(w.word for w in r.words)) <= 0.1
    starts = [w.start for w in r.words]
    assert starts == sorted(starts) and r.words[-1].end <= r.duration + 0.5
    seg_only = client.audio.transcriptions.create(model='whisper-1', file=('speech.wav', spoken), response_format='verbose_json')
    assert seg_only.segments and not getattr(seg_only, 'words', None)


def test_streamed_transcript(client, spoken):
    events = list(client.audio.transcriptions.create(model='whisper-1', file=('speech.wav', spoken), stream=True))
    assert [e.type for e in events][-1] == 'transcript.text.done'
    assert all(e.type == 'transcript.text.delta' for e in events[:-1]) and len(events) >= 2
    assert ''.join(e.delta for e in events[:-1]).strip() == events[-1].text
    assert wer(TEXT, events[-1].text) <= 0.1


@pytest.mark.parametrize('file, msg', [
    (('empty.wav', b''), 'empty'),
    (('noise.mp3', bytes(range(256))*40), 'could not be decoded'),
    (('page.wav', b'<html><body>not audio</body></html>'), 'could not be decoded'),
    (('fake.wav', b'RIFF\x24\x00\x00\x00WAVEfmt '), 'could not be decoded'),
])
def test_garbage_uploads_400(client, file, msg):
    with pytest.raises(openai.BadRequestError) as e: client.audio.transcriptions.create(model='whisper-1', file=file)
    assert e.value.status_code == 400 and msg in e.value.message and e.value.param == 'file'


def test_video_without_audio_400(client):
    buf = io.BytesIO()
    with av.open(buf, 'w', format='mp4') as out:
        st = out.add_stream('mpeg4', rate=10); st.width, st.height, st.pix_fmt = 64, 64, 'yuv420p'
        for _ in range(10):
            for p in st.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format='rgb24')): out.mux(p)
        for p in st.encode(None): out.mux(p)
    with pytest.raises(openai.BadRequestError) as e: client.audio.transcriptions.create(model='whisper-1', file=('clip.mp4', buf.getvalue()))
    assert 'no audio track' in e.value.message


def test_transcription_errors(client, server, spoken):
    f = ('speech.wav', spoken)
    with pytest.raises(openai.NotFoundError): client.audio.transcriptions.create(model='whisper-9', file=f)
    with pytest.raises(openai.BadRequestError) as e: client.audio.transcriptions.create(model='whisper-1', file=f, language='de')
    assert 'English-only' in e.value.message
    with pytest.raises(openai.BadRequestError) as e: client.audio.transcriptions.create(model='whisper-1', file=f, response_format='docx')
    with pytest.raises(openai.BadRequestError) as e: client.audio.translations.create(model='whisper-1', file=f)
    assert 'cannot translate' in e.value.message
    r = httpx.post(server.url + '/audio/transcriptions', json={'model': 'whisper-1'})
    assert r.status_code == 400 and 'multipart' in r.json()['error']['message']


def test_oversize_upload_413(spoken):
    with start_server(env={'HYBRIE_MAX_UPLOAD_MB': '0.1'}) as s:
        c = openai.OpenAI(base_url=s.url, api_key='unused', max_retries=0)
        with pytest.raises(openai.APIStatusError) as e: c.audio.transcriptions.create(model='whisper-1', file=('big.wav', spoken))
        assert e.value.status_code == 413 and e.value.code == 'file_too_large'
        big = spoken * 20  # several MB: refused from its Content-Length, before the body is read
        r = httpx.post(s.url + '/audio/transcriptions', files={'file': ('big.wav', big)}, data={'model': 'whisper-1'}, timeout=30)
        assert r.status_code == 413
        assert c.audio.transcriptions.create(model='whisper-1', file=('small.wav', spoken[:60000])).text


def test_audio_overload_429_and_places_come_back(spoken):
    "One audio request in flight at most: a burst gets 429s with Retry-After, and afterwards requests pass again."
    import asyncio
    with start_server(env={'HYBRIE_MAX_QUEUE': '0', 'HYBRIE_MAX_BATCH_SIZE': '1'}) as s:
        async def burst():
            async with httpx.AsyncClient(timeout=300) as c:
                tr = [c.post(s.url + '/audio/transcriptions', files={'file': ('a.wav', spoken)}, data={'model': 'whisper-1'}) for _ in range(4)]
                sp = [c.post(s.url + '/audio/speech', json={'model': 'tts-1', 'voice': 'alloy', 'input': TEXT}) for _ in range(2)]
                return await asyncio.gather(*tr, *sp)
        codes = [r.status_code for r in asyncio.run(burst())]
        assert 200 in codes and 429 in codes, codes
        c = openai.OpenAI(base_url=s.url, api_key='unused', max_retries=0)
        with c.audio.speech.with_streaming_response.create(model='tts-1', voice='alloy', input=TEXT) as r:
            next(r.iter_bytes())  # leave a stream half read: its place must come back once the server sees it closed
        deadline = time.time() + 20
        while True:
            try: c.audio.speech.create(model='tts-1', voice='alloy', input='Back?', response_format='pcm'); break
            except openai.RateLimitError:
                assert time.time() < deadline, 'the abandoned stream kept its place'
                time.sleep(0.5)
        for _ in range(3):
            assert c.audio.transcriptions.create(model='whisper-1', file=('a.wav', spoken)).text
            assert c.audio.speech.create(model='tts-1', voice='alloy', input='Still here.', response_format='wav').content[:4] == b'RIFF'
