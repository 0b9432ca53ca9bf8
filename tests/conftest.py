import os, signal, socket, subprocess, sys
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent

def ctrl_c_default():
    "Popen's `preexec_fn` for a child a test will Ctrl-C: SIGINT at its default, as in a terminal. A shell's background job "
    "(`make test &`) starts with SIGINT ignored, a child inherits that, and its Python then never raises KeyboardInterrupt."
    signal.signal(signal.SIGINT, signal.SIG_DFL)

@pytest.fixture
def no_network(monkeypatch):
    "Make every outgoing connection fail at once, as on a machine without a network."
    def refuse(*a, **k): raise OSError('network disabled for this test')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)

@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    "An empty LESSONS_CACHE for this test."
    d = tmp_path/'cache'; monkeypatch.setenv('LESSONS_CACHE', str(d)); return d

def lesson7(*args, env=None, timeout=600):
    "Run the `lesson7` console script; return the CompletedProcess."
    return subprocess.run([str(BIN/'lesson7'), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})

@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "`tiny_run(lesson)`: the output folder of one `lesson7 LESSON --size tiny`, run once per test session and shared."
    done = {}
    def run(lesson):
        if lesson not in done:
            out = tmp_path_factory.mktemp(f'tiny-{lesson}')
            r = lesson7(lesson, '--size', 'tiny', '--out', out, timeout=1200)
            assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
            done[lesson] = (out, r)
        return done[lesson]
    return run
