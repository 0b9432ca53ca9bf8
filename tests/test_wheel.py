"The built wheel, installed into a fresh virtual environment, runs a lesson from a folder outside the repository."
import json, os, shutil, subprocess, sys, sysconfig, zipfile
from pathlib import Path
import pytest
from conftest import BIN, REPO

LESSON_NB = '02_unet.ipynb'          # the quickest lesson at tiny: the one executed alone, as a hosted notebook opens it

def _run(cmd, cwd, env, timeout=1200):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r

@pytest.fixture(scope='module')
def wheel_env(tmp_path_factory):
    "`(python, bin, wheel, env, home)`: the wheel built from this checkout, installed alone into a fresh venv whose dependencies are this venv's."
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp/'src'; src.mkdir()                              # built from a copy: setuptools writes build/ beside its sources
    for f in ('pyproject.toml', 'README.md'): shutil.copy(REPO/f, src/f)
    for d in ('lessons_lib', 'data', 'nbs'): shutil.copytree(REPO/d, src/d, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    _run([BIN/'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', tmp/'dist', src], tmp, os.environ)
    whl, = (tmp/'dist').glob('lessons_lib-*.whl')
    venv = tmp/'venv'
    _run([sys.executable, '-m', 'venv', venv], tmp, os.environ)
    py = venv/'bin'/'python'
    _run([py, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', whl], tmp, os.environ)
    # The dependencies (torch, fastai, jupyter...) are this venv's, added after the fresh venv's own site-packages, so no
    # download is needed; a path added by a .pth file has its own .pth files ignored, so this checkout's editable install
    # of lessons_lib stays out: `import lessons_lib` finds the wheel's copy or nothing.
    site = Path(_run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], tmp, os.environ).stdout.strip())
    (site/'_lessons_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith('LESSONS_') and k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    home = tmp/'student'; home.mkdir()                       # a folder of a user's, far from the repository
    env.update(PATH=f"{venv/'bin'}:{env.get('PATH', '')}", LESSONS_CACHE=str(tmp/'cache'), HOME=str(home))
    return py, venv/'bin', whl, env, home

def test_installed_wheel_runs_a_lesson_outside_the_repository(wheel_env):
    py, bin_, whl, env, home = wheel_env
    names = set(zipfile.ZipFile(whl).namelist())
    for f in ['lessons_lib/_data/mnist_5k.npz', 'lessons_lib/_data/photos/chelsea.jpg', 'lessons_lib/_nbs/01_resnet.ipynb',
              'lessons_lib/_nbs/05_wgan.ipynb', 'lessons_lib/core.py']:
        assert f in names, f"{f} is not in {whl.name}"
    where = _run([py, '-c', 'import lessons_lib; print(lessons_lib.__file__)'], home, env).stdout.strip()
    assert str(REPO) not in where and 'site-packages' in where, where
    r = _run([bin_/'lesson7', '--help'], home, env)
    assert 'resnet' in r.stdout and 'Traceback' not in r.stderr
    r = _run([bin_/'lesson7', 'resnet', '--size', 'tiny'], home, env)       # no --out: ./results of the user's folder
    m = json.loads((home/'results'/'resnet'/'metrics.json').read_text())
    assert m['size'] == 'tiny' and 0 <= m['resnet_acc'] <= 1, m
    assert (home/'results'/'resnet'/'01_resnet.ipynb').is_file()

def test_a_lesson_notebook_opened_alone_finds_the_installed_library(wheel_env):
    "A lesson notebook copied alone into a folder (as a hosted notebook opens one) runs; its set-up cell installs nothing."
    import nbformat
    py, bin_, whl, env, home = wheel_env
    nb_dir = home/'alone'; nb_dir.mkdir()
    nb = nbformat.read(REPO/'nbs'/LESSON_NB, as_version=4)
    nbformat.write(nb, nb_dir/LESSON_NB)
    code = ("import nbformat, sys; from nbclient import NotebookClient\n"
            f"nb = nbformat.read({LESSON_NB!r}, as_version=4)\n"
            "NotebookClient(nb, timeout=1200, kernel_name='python3', resources={'metadata': {'path': '.'}}).execute()\n"
            f"nbformat.write(nb, 'executed.ipynb')")
    _run([py, '-c', code], nb_dir, {**env, 'LESSONS_SIZE': 'tiny', 'LESSONS_OUT': str(home/'out')})
    nb = nbformat.read(nb_dir/'executed.ipynb', as_version=4)
    first = next(c for c in nb.cells if c.cell_type == 'code' and 'find_spec' in c.source)
    said = ''.join(o.get('text', '') for o in first.outputs)
    assert 'install' not in said.lower(), f"the set-up cell installed something where lessons_lib is installed: {said!r}"
    assert (home/'out'/'unet'/'metrics.json').is_file()

def _setup_cell(nb=REPO/'nbs'/'01_resnet.ipynb') -> str:
    import nbformat
    return next(c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == 'code' and "find_spec('lessons_lib')" in c.source)

def test_every_notebook_opens_with_the_same_set_up_cell():
    "One set-up cell, the same in every notebook (hidden on the library's pages), before anything imports lessons_lib."
    import nbformat
    want = _setup_cell()
    for nb in sorted((REPO/'nbs').glob('0*.ipynb')):
        code = [c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == 'code']
        first = next(i for i, s in enumerate(code) if 'lessons_lib' in s.replace('#| default_exp', ''))
        assert code[first].removeprefix('#| hide\n') == want, f"{nb.name}: its first cell using lessons_lib is not the set-up cell"

def test_set_up_cell_without_network_says_what_to_run(tmp_path):
    "Where lessons_lib is missing and pip cannot reach its source: one line with the command to run by hand."
    venv = tmp_path/'venv'
    _run([sys.executable, '-m', 'venv', venv], tmp_path, os.environ)
    env = {**{k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')},
           'GIT_TERMINAL_PROMPT': '0', 'PIP_INDEX_URL': 'http://127.0.0.1:9/simple', 'PIP_NO_INPUT': '1',
           'GIT_CONFIG_COUNT': '1', 'GIT_CONFIG_KEY_0': 'url.http://127.0.0.1:9/.insteadOf', 'GIT_CONFIG_VALUE_0': 'https://github.com/'}
    r = subprocess.run([str(venv/'bin'/'python'), '-c', _setup_cell()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    last = r.stderr.strip().splitlines()
    assert len(last) == 1 and 'pip could not install lessons_lib' in last[0] and "pip install 'lessons_lib @ git+" in last[0], r.stderr

def test_set_up_cell_names_both_versions_when_the_library_is_older(tmp_path):
    old = tmp_path/'old'/'lessons_lib'; old.mkdir(parents=True); (old/'__init__.py').write_text('__version__ = "0.1.0"\n')
    r = subprocess.run([sys.executable, '-c', _setup_cell()], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**os.environ, 'PYTHONPATH': str(old.parent)})
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0, r.stderr
    assert 'needs lessons_lib 0.2.0 or later' in r.stderr and 'has 0.1.0' in r.stderr, r.stderr
