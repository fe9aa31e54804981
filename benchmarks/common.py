"""What the benchmarks share: the repository root, the offline environment for servers, free ports, the git sha,
timing, `hybrie serve` processes, and one streamed chat request measured from the client side.

Run a benchmark as `python benchmarks/bench_X.py`: Python puts `benchmarks/` on the path, so `from common import ...`
works without any path setup. Nothing here imports from `tests/`.
"""
import contextlib, json, os, socket, subprocess, sys, tempfile, time
from pathlib import Path
import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # where this venv's `hybrie` and `transformers` commands are
OFFLINE = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'PYTHONUNBUFFERED': '1'}
ENV = {**os.environ, **OFFLINE}  # the environment of server processes: this one, offline
NO_CONFIG = {'HYBRIE_CONFIG': '/nonexistent/hybrie.toml'}  # a server that reads no config file: defaults and env only
NO_GRPC = {'HYBRIE_GRPC_PORT': '0'}  # no gRPC unless a benchmark asks (`--grpc-port N`): servers side by side would all want 9090


def free_port() -> int:
    "A TCP port free on 127.0.0.1 now."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def git_sha(short=False) -> str|None:
    "The checked-out commit (None outside a git checkout)."
    try: return subprocess.run(['git', 'rev-parse', *(['--short'] if short else []), 'HEAD'], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip() or None
    except OSError: return None


def timed(f):
    "(seconds, result) of calling `f()`."
    t = time.perf_counter(); out = f()
    return time.perf_counter() - t, out


def wait_healthy(url, proc, timeout=300):
    "Wait until GET `url` answers 200; fail if `proc` exits first or `timeout` seconds pass."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None: raise RuntimeError(f'server exited with {proc.returncode}')
        try:
            if httpx.get(url, timeout=1).status_code == 200: return
        except httpx.HTTPError: pass
        time.sleep(0.3)
    raise RuntimeError(f'{url} did not answer in {timeout}s')


class HybrieServer:
    "A `hybrie serve` process on a free port: `.root`, `.url` (ending in /v1), its output in `.log()`."
    def __init__(self, *args, env=None, timeout=300):
        self.port = free_port()
        self.root = f'http://127.0.0.1:{self.port}'
        self.url = self.root + '/v1'
        self.logfile = tempfile.NamedTemporaryFile('w+', prefix='bench-hybrie-', suffix='.log', delete=False)
        self.proc = subprocess.Popen([str(BIN/'hybrie'), 'serve', '--port', str(self.port), *args], stdout=self.logfile,
                                     stderr=subprocess.STDOUT, env={**ENV, **NO_CONFIG, **NO_GRPC, **(env or {})})
        try: wait_healthy(self.root + '/health', self.proc, timeout)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f'{e}\n{self.log()}') from None

    def log(self) -> str: return Path(self.logfile.name).read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(30)
            except subprocess.TimeoutExpired: self.proc.kill()


@contextlib.contextmanager
def start_server(*args, env=None, timeout=300):
    "Run `hybrie serve *args` for the duration of the block; yields the `HybrieServer`."
    s = HybrieServer(*args, env=env, timeout=timeout)
    try: yield s
    finally: s.stop()


# ---------------------------------------------------------------- one streamed chat request, timed by the client
PROMPTS = ['Write a long story about a lighthouse keeper.', 'Explain how rain forms, in detail.',
           'Describe a walk through a busy market.', 'Write an essay about the history of bread.',
           'Tell me about the planets of the solar system.', 'Describe how a bicycle works.',
           'Write a letter to a friend about a summer holiday.', 'Explain why the sky is blue.']


def msgs(i): return [{'role': 'user', 'content': PROMPTS[i % len(PROMPTS)]}]


async def one_stream(client, url, model, i, n_tokens, extra):
    "Time to first token, tokens and decode tokens/s of one greedy streamed chat completion (prompt `i`) at `url`."
    body = {'model': model, 'messages': msgs(i), 'max_tokens': n_tokens, 'temperature': 0, 'stream': True,
            'stream_options': {'include_usage': True}, **extra}
    t0 = time.perf_counter(); first = last = None; chunks = 0; usage = None
    async with client.stream('POST', url + '/v1/chat/completions', json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith('data: ') or line == 'data: [DONE]': continue
            d = json.loads(line[6:])
            if d.get('usage'): usage = d['usage']
            if d.get('choices') and d['choices'][0]['delta'].get('content'):
                now = time.perf_counter(); chunks += 1
                first = first or now; last = now
    tokens = (usage or {}).get('completion_tokens') or chunks
    return {'ttft': first - t0, 'tokens': tokens, 'decode': (tokens - 1) / (last - first) if last > first else 0}
