"""The realtime voice loop against the same pipeline as three sequential HTTP calls, side by side on one server.

For each turn, a question spoken by the bundled Piper voice is streamed into `/v1/realtime` in 100 ms chunks at the pace of
real time (server VAD ends the turn), and the time from `input_audio_buffer.speech_stopped` to the first
`response.output_audio.delta` is measured, with the whole reply's timing. The anchor answers the same question the way a
client without the realtime API would: `POST /v1/audio/transcriptions` (the spoken question as WAV), then
`POST /v1/chat/completions` (the same model, instructions and token cap), then `POST /v1/audio/speech` (pcm, whole), one after
the other; its full time is from the start of the upload to the last byte of speech. Turns alternate between the two, so load
on the machine falls on both alike.

Figures: first audio p50/p90 and its ratio to the anchor's full time (targets: <= 0.5x and <= 1.0 s p50), the loop's real-time
factor (time to make the reply's audio / its duration; < 1 means it is made faster than it plays) and playback underruns (a
delta that arrives after a player starting at the first delta would have needed it).

    python benchmarks/bench_realtime.py [--turns 10] [--max-tokens 40]
"""
import argparse, asyncio, base64, io, json, os, platform, statistics, time, wave
from pathlib import Path
import httpx, numpy as np, websockets
from common import ROOT, git_sha, start_server

QUESTIONS = ['What is the capital of France?', 'How many legs does a spider have?', 'What color is the sky on a clear day?',
             'Name a fruit that is yellow.', 'What do bees make?', 'Where does the sun rise?', 'What is two plus two?',
             'Which animal says moo?', 'What is the opposite of hot?', 'How many days are in a week?',
             'What do you call a baby dog?', 'What is frozen water called?']
INSTRUCTIONS = 'You are a helpful voice assistant. Answer in one or two short sentences.'
CHUNK = 4_800  # 100 ms of pcm16 at 24 kHz


def pct(xs, p): return float(np.percentile(xs, p)) if xs else None


def speech(url:str, text:str) -> bytes:
    "`text` spoken by the server's bundled Piper voice: pcm16 at 24 kHz, with 0.4 s of silence before and 1.5 s after."
    pcm = httpx.post(url + '/audio/speech', json={'model': 'tts-1', 'voice': 'alloy', 'input': text, 'response_format': 'pcm'}, timeout=300).content
    return bytes(19_200) + pcm + bytes(72_000)


def wav(pcm:bytes) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, 'wb') as w: w.setnchannels(1); w.setsampwidth(2); w.setframerate(24_000); w.writeframes(pcm)
    return buf.getvalue()


async def realtime_turn(url:str, pcm:bytes, max_tokens:int) -> dict:
    "One spoken turn through `/v1/realtime` with server VAD; times from the client's side."
    async with websockets.connect(url.replace('http', 'ws') + '/realtime', max_size=None) as ws:
        await ws.send(json.dumps({'type': 'session.update', 'session': {'type': 'realtime', 'instructions': INSTRUCTIONS,
                                  'max_output_tokens': max_tokens, 'audio': {'input': {'turn_detection': {'type': 'server_vad', 'silence_duration_ms': 500}}}}}))
        async def send():
            for i in range(0, len(pcm), CHUNK):
                await ws.send(json.dumps({'type': 'input_audio_buffer.append', 'audio': base64.b64encode(pcm[i:i+CHUNK]).decode()}))
                await asyncio.sleep(0.1)
        sender = asyncio.create_task(send())
        stop = first = None; arrivals = []  # (seconds after speech_stopped, seconds of audio in the delta)
        async for m in ws:
            e = json.loads(m); now = time.perf_counter()
            if e['type'] == 'input_audio_buffer.speech_stopped': stop = now
            elif e['type'] == 'response.output_audio.delta':
                first = first or now
                arrivals.append((now - stop, len(base64.b64decode(e['delta']))/48_000))
            elif e['type'] == 'response.done':
                status = e['response']['status']; break
            elif e['type'] == 'error': raise RuntimeError(e['error'])
        sender.cancel()
    audio = sum(a for _, a in arrivals)
    # a player that starts at the first delta and plays straight through: does any delta come after it is needed?
    t0, played, underruns = arrivals[0][0], 0.0, 0
    for t, a in arrivals:
        if t - t0 > played + 1e-3: underruns += 1
        played += a
    return {'first_audio_s': first - stop, 'reply_audio_s': audio, 'last_audio_s': arrivals[-1][0], 'status': status,
            'rtf': (arrivals[-1][0] - arrivals[0][0]) / max(audio - arrivals[0][1], 1e-9), 'underruns': underruns}


def sequential_turn(url:str, pcm:bytes, max_tokens:int) -> dict:
    "The same turn as three HTTP calls, one after the other."
    with httpx.Client(timeout=600) as h:
        t0 = time.perf_counter()
        text = h.post(url + '/audio/transcriptions', files={'file': ('q.wav', wav(pcm))}, data={'model': 'whisper-1'}).json()['text']
        t1 = time.perf_counter()
        reply = h.post(url + '/chat/completions', json={'model': 'smollm2-135m-instruct', 'max_tokens': max_tokens, 'messages': [
            {'role': 'system', 'content': INSTRUCTIONS}, {'role': 'user', 'content': text}]}).json()['choices'][0]['message']['content']
        t2 = time.perf_counter()
        audio = h.post(url + '/audio/speech', json={'model': 'tts-1', 'voice': 'alloy', 'input': reply or '...', 'response_format': 'pcm',
                                                    'stream': False}).content
        t3 = time.perf_counter()
    return {'full_s': t3 - t0, 'transcribe_s': t1 - t0, 'chat_s': t2 - t1, 'speech_s': t3 - t2, 'reply_audio_s': len(audio)/48_000}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--turns', type=int, default=10)
    ap.add_argument('--max-tokens', type=int, default=40)
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'realtime-cpu.json'))
    a = ap.parse_args()
    with start_server() as srv:
        spoken = [speech(srv.url, q) for q in QUESTIONS]
        asyncio.run(realtime_turn(srv.url, spoken[0], a.max_tokens)); sequential_turn(srv.url, spoken[0], a.max_tokens)  # warm both paths
        rt, seq = [], []
        for i in range(a.turns):
            pcm = spoken[i % len(spoken)]
            rt.append(asyncio.run(realtime_turn(srv.url, pcm, a.max_tokens)))
            seq.append(sequential_turn(srv.url, pcm, a.max_tokens))
            print(f'turn {i}: realtime first audio {rt[-1]["first_audio_s"]:.2f}s (rtf {rt[-1]["rtf"]:.2f}), '
                  f'sequential full {seq[-1]["full_s"]:.2f}s', flush=True)
    first = [r['first_audio_s'] for r in rt]; full = [s['full_s'] for s in seq]
    out = {
        'benchmark': 'realtime', 'git_sha': git_sha(), 'device': 'cpu', 'cpu': platform.processor() or platform.machine(),
        'cores': os.cpu_count(), 'load_average_at_end': os.getloadavg(),
        'params': {'turns': a.turns, 'max_output_tokens': a.max_tokens, 'chunk_ms': 100, 'silence_duration_ms': 500,
                   'models': {'chat': 'smollm2-135m-instruct', 'stt': 'whisper-tiny.en', 'tts': 'piper en_US-joe-medium'}},
        'realtime': {'first_audio_p50_s': pct(first, 50), 'first_audio_p90_s': pct(first, 90),
                     'rtf_p50': pct([r['rtf'] for r in rt], 50), 'rtf_max': max(r['rtf'] for r in rt),
                     'underruns_total': sum(r['underruns'] for r in rt), 'turns': rt},
        'sequential_http': {'full_p50_s': pct(full, 50), 'full_p90_s': pct(full, 90), 'turns': seq},
        'ratios': {'first_audio_p50_over_sequential_full_p50': pct(first, 50) / pct(full, 50)},
        'targets': {'first_audio_over_sequential_full': 0.5, 'first_audio_p50_s': 1.0, 'rtf': 1.0},
    }
    out['met'] = {'ratio': out['ratios']['first_audio_p50_over_sequential_full_p50'] <= 0.5, 'first_audio_p50': pct(first, 50) <= 1.0,
                  'rtf': out['realtime']['rtf_p50'] < 1.0}
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ('ratios', 'met')} | {'first_audio_p50_s': pct(first, 50), 'first_audio_p90_s': pct(first, 90),
                      'sequential_full_p50_s': pct(full, 50), 'rtf_p50': out['realtime']['rtf_p50']}, indent=1))


if __name__ == '__main__':
    main()
