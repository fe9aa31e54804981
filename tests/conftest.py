"""Shared pytest fixtures: real `hybrie serve` processes on free ports, driven by real clients."""
import contextlib, os, socket, subprocess, sys, tempfile, time
from pathlib import Path
import httpx, pytest

HYBRIE = str(Path(sys.executable).parent/'hybrie')
BASE_ENV = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
            'HYBRIE_CONFIG': '/nonexistent/hybrie.toml', 'PYTHONUNBUFFERED': '1'}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    "A `hybrie serve` process: its base URL (`.url`, ending in /v1), `.root` and captured output (`.log()`)."
    def __init__(self, *args, env=None, timeout=180):
        self.port = free_port()
        self.root = f'http://127.0.0.1:{self.port}'
        self.url = self.root + '/v1'
        self.logfile = tempfile.NamedTemporaryFile('w+', prefix='hybrie-serve-', suffix='.log', delete=False)
        self.proc = subprocess.Popen([HYBRIE, 'serve', '--port', str(self.port), *args], stdout=self.logfile,
                                     stderr=subprocess.STDOUT, env={**os.environ, **BASE_ENV, **(env or {})})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f'hybrie serve exited with {self.proc.returncode}:\n{self.log()}')
            try:
                if httpx.get(self.root + '/health', timeout=1).status_code == 200: return
            except httpx.HTTPError: pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f'hybrie serve did not become healthy in {timeout}s:\n{self.log()}')

    def log(self) -> str: return Path(self.logfile.name).read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(15)
            except subprocess.TimeoutExpired: self.proc.kill()


@contextlib.contextmanager
def start_server(*args, env=None, timeout=180):
    "Run `hybrie serve *args` on a free port for the duration of the block; yields the `Server`."
    s = Server(*args, env=env, timeout=timeout)
    try: yield s
    finally: s.stop()


@pytest.fixture(scope='session')
def server():
    "One server with the bundled default model, shared by the tests of a session."
    with start_server() as s: yield s


@pytest.fixture(scope='session')
def client(server):
    from openai import OpenAI
    return OpenAI(base_url=server.url, api_key='unused', max_retries=0)


@pytest.fixture
def aclient(server):
    "An async client (per test: an async client belongs to one event loop)."
    from openai import AsyncOpenAI
    return AsyncOpenAI(base_url=server.url, api_key='unused', max_retries=0)
