"""A throwaway PostgreSQL cluster for the tests: initdb on a temporary folder, started with pg_ctl on a free loopback port.

`tools/test` installs PostgreSQL from the Debian packages when it is missing; as root (CI) the cluster runs as the
`postgres` user, which the package creates (PostgreSQL refuses to run as root). fsync is off: the tests kill consoles,
never the database, and a cluster that is thrown away needs no durability.
"""
import glob, os, shutil, socket, subprocess, tempfile, uuid


def pg_tool(name: str) -> str:
    "The path of a PostgreSQL server program (`initdb`, `pg_ctl`): on PATH, else the newest Debian install."
    found = shutil.which(name) or (sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'), key=lambda p: int(p.split('/')[4]))[-1:] or [None])[0]
    if not found: raise RuntimeError(f'PostgreSQL is not installed (no `{name}`): run ./tools/test, which installs it, or apt-get install postgresql')
    return found


class PgCluster:
    "A PostgreSQL cluster of its own: `.url(db)`, `.create_database()`, `.data` (its files), `.stop()`."
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix='hybrie-pg-')
        self.data, self.log = os.path.join(self.root, 'data'), os.path.join(self.root, 'server.log')
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0)); self.port = s.getsockname()[1]
        self.as_user = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
        if self.as_user: shutil.chown(self.root, 'postgres', 'postgres')
        self._run(pg_tool('initdb'), '-D', self.data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync')
        self._run(pg_tool('pg_ctl'), '-D', self.data, '-l', self.log, '-w', '-t', '60', 'start', '-o',
                  f'-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200')

    def _run(self, *cmd):
        r = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True)
        if r.returncode: raise RuntimeError(f'{" ".join(cmd[:2])} failed: {r.stdout}{r.stderr}')

    def url(self, db='postgres') -> str: return f'postgresql://postgres@127.0.0.1:{self.port}/{db}'

    def create_database(self) -> str:
        "A new empty database; its `postgresql://` URL."
        import psycopg
        name = 'console_' + uuid.uuid4().hex[:10]
        with psycopg.connect(self.url(), autocommit=True) as c: c.execute(f'CREATE DATABASE {name}')
        return self.url(name)

    def files_contain(self, needle: bytes) -> bool:
        "Whether any file of the cluster (tables, WAL) holds `needle`, after a checkpoint wrote everything out."
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as c: c.execute('CHECKPOINT')
        for d, _, files in os.walk(self.data):
            for f in files:
                try:
                    if needle in open(os.path.join(d, f), 'rb').read(): return True
                except OSError: pass
        return False

    def stop(self):
        subprocess.run([*self.as_user, pg_tool('pg_ctl'), '-D', self.data, '-m', 'immediate', 'stop'], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
