"""Shared pytest fixtures: real `hybrie serve` processes on free ports, driven by real clients."""
import contextlib, os, socket, subprocess, sys, tempfile, time
from pathlib import Path
import httpx, pytest

HYBRIE = str(Path(sys.executable).parent/'hybrie')
BASE_ENV = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
            'HYBRIE_CONFIG': '/nonexistent/hybrie.toml', 'PYTHONUNBUFFERED': '1',
            'HYBRIE_GRPC_PORT': '0'}  # no gRPC unless a test asks (`--grpc-port N`): servers side by side would all want 9090


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


@pytest.fixture(scope='session')
def tiny_adapter(tmp_path_factory) -> str:
    "A real LoRA adapter folder for the bundled model, trained for two steps: enough to be loaded and named, not to change much."
    from hybrie.config import Catalog
    from hybrie.loader import load_model
    from hybrie.adapters import train_lora
    lm = load_model(Catalog().resolve('smollm2-135m-instruct'), 'cpu')
    return str(train_lora(lm, tmp_path_factory.mktemp('tiny-adapter')/'tiny', 'Who are you?', 'A tiny adapter.', steps=2))


def wait_for(cond, timeout=60, every=0.1, what='the condition'):
    "Poll `cond()` until it returns something truthy; fail after `timeout` seconds."
    deadline = time.time() + timeout
    while time.time() < deadline:
        if v := cond(): return v
        time.sleep(every)
    raise AssertionError(f'{what} did not hold within {timeout}s')


@pytest.fixture(scope='module')
def standins():
    "Stand-in upstreams speaking the four cloud providers' wire formats (`cloud_standins`), one set per test module."
    from cloud_standins import StandIns
    s = StandIns().start()
    yield s
    s.stop()
