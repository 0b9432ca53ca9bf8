"Tests of the foundation: config, embedded data, pretrained policy, checkpoints, memory helper, lesson7 CLI."
import os, shutil, signal, subprocess, sys, textwrap, time, json
from pathlib import Path
import numpy as np, pytest, torch, torchvision
from PIL import Image
from conftest import lesson7, BIN, REPO
from lessons_lib import core, data, weights, memory, cli
from lessons_lib.core import Config, ConfigError, get_config
from lessons_lib.report import stored_headlines

# --- config -----------------------------------------------------------------------------------------------
def test_config_layers_defaults_env_and_args():
    assert get_config({}) == Config()
    env = {'LESSONS_SIZE': 'full', 'LESSONS_DATA': 'course', 'LESSONS_PRETRAINED': 'off', 'LESSONS_DEVICE': 'cpu', 'LESSONS_SEED': '3'}
    assert get_config(env) == Config('full', 'course', 'off', 'cpu', 3)
    assert get_config(env, size='tiny', seed=None).size == 'tiny'

@pytest.mark.parametrize('env,msg', [({'LESSONS_SIZE': 'huge'}, "LESSONS_SIZE='huge' is not allowed; choose one of: small, full, tiny"),
                                     ({'LESSONS_DATA': 'web'}, "LESSONS_DATA='web' is not allowed; choose one of: embedded, course"),
                                     ({'LESSONS_PRETRAINED': 'yes'}, "LESSONS_PRETRAINED='yes' is not allowed; choose one of: auto, on, off"),
                                     ({'LESSONS_DEVICE': 'gpu'}, "LESSONS_DEVICE='gpu' is not a device"),
                                     ({'LESSONS_SEED': '1.5'}, "LESSONS_SEED='1.5' is not an integer")])
def test_config_bad_values_name_setting_value_and_choices(env, msg):
    with pytest.raises(ConfigError) as e: get_config(env)
    assert msg in str(e.value)

# --- embedded data ---------------------------------------------------------------------------------------
def test_mnist_materializes_in_fastai_layout_and_is_reused(fresh_cache, monkeypatch):
    p = data.mnist_path(Config())
    files = list(p.glob('*/*/*.png'))
    assert len(files) == 5000
    assert sorted(d.name for d in (p/'training').iterdir()) == [str(i) for i in range(10)]
    assert len(list(p.glob('training/*/*.png'))) == 4000 and len(list(p.glob('testing/*/*.png'))) == 1000
    assert {Image.open(f).size for f in files[::97]} == {(28, 28)}
    def must_not_rebuild(d): raise AssertionError('rebuilt the cache')
    monkeypatch.setattr(data, '_write_mnist', must_not_rebuild)
    assert data.mnist_path(Config()) == p

def test_interrupted_materialization_leaves_no_broken_cache(fresh_cache):
    "Kill a process halfway through writing MNIST; the next call must build a complete folder."
    code = "from lessons_lib.data import mnist_path; mnist_path()"
    proc = subprocess.Popen([sys.executable, '-c', code], env={**os.environ, 'LESSONS_CACHE': str(fresh_cache)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(fresh_cache.glob('.mnist-*.tmp-*/*/*/*.png'))) < 500: time.sleep(0.02)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert not [d for d in fresh_cache.glob('mnist-*')], 'a half-written folder took the real name'
    assert list(fresh_cache.glob('.mnist-*.tmp-*')), 'the test did not interrupt the build halfway'
    p = data.mnist_path(Config())
    assert len(list(p.glob('*/*/*.png'))) == 5000
    assert not list(fresh_cache.glob('.mnist-*.tmp-*'))

@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    d = tmp_path/'data'; shutil.copytree(REPO/'data', d)
    monkeypatch.setenv('LESSONS_DATA_DIR', str(d)); return d

def test_missing_or_corrupt_data_file_is_named(data_copy, fresh_cache):
    (data_copy/'mnist_5k.npz').unlink()
    with pytest.raises(data.DataError, match=r'mnist_5k\.npz is missing; regenerate data'): data.mnist_path(Config())
    (data_copy/'mnist_5k.npz').write_bytes(b'PK\x03\x04 not really a zip')
    with pytest.raises(data.DataError, match=r'mnist_5k\.npz is unreadable'): data.mnist_path(Config())
    (data_copy/'photos'/'coffee.jpg').write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(data.DataError, match=r'coffee\.jpg is unreadable'): data.photos_path(Config())

def test_photos_folder_in_pets_layout(fresh_cache):
    p = data.photos_path(Config())
    ims = sorted((p/'images').glob('*.jpg'))
    assert len(ims) == len(data.embedded_photo_files()) >= 20 and all(Image.open(f).mode == 'RGB' for f in ims)

def test_course_data_offline_gives_one_clear_message(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv('FASTAI_HOME', str(tmp_path/'fastai'))
    with pytest.raises(data.DataError) as e: data.mnist_path(Config(data='course'))
    msg = str(e.value)
    assert 'URLs.MNIST' in msg and '--data embedded' in msg and str(tmp_path/'fastai'/'archive'/'mnist_png.tgz') in msg
    assert f"its extracted folder at {tmp_path/'fastai'/'data'/'mnist_png'}" in msg
    assert '\n' not in msg

def test_cli_course_data_offline_exits_1_without_traceback(tmp_path):
    r = lesson7('all', '--data', 'course', '--size', 'tiny', '--out', tmp_path, env={'FASTAI_HOME': str(tmp_path/'fa'), 'LESSONS_SIZE': 'tiny'})
    if 'resnet' not in cli.available_lessons(): pytest.skip('no lesson that downloads data is built yet')
    assert r.returncode == 1, r.stderr
    assert 'Traceback' not in r.stderr and 'lesson7: error: could not download the course dataset' in r.stderr

# --- pretrained policy and checkpoints ---------------------------------------------------------------------
def test_pretrained_policy_three_modes(no_network, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    monkeypatch.setattr(weights, '_warned', set())
    assert weights.pretrained_model('resnet18', Config(pretrained='off')).is_pretrained is False
    assert capsys.readouterr().out == ''
    with pytest.raises(weights.WeightsError, match='resnet18-f37072fd.pth on a machine with a network'):
        weights.pretrained_model('resnet18', Config(pretrained='on'))
    m1 = weights.pretrained_model('resnet18', Config(pretrained='auto'))
    m2 = weights.pretrained_model('resnet18', Config(pretrained='auto'))
    out = capsys.readouterr().out
    assert not m1.is_pretrained and out.count('\n') == 1 and 'using random init' in out   # ONE line, once
    sd = torchvision.models.resnet18(weights=None).state_dict()                            # "cached" weights
    weights.weights_file('resnet18').parent.mkdir(parents=True, exist_ok=True); torch.save(sd, weights.weights_file('resnet18'))
    with pytest.raises(weights.WeightsError, match="resnet18-f37072fd.pth is not torchvision's resnet18 weights"):
        weights.pretrained_model('resnet18', Config(pretrained='auto'))                     # random weights fail the hash check
    monkeypatch.setenv('LESSONS_WEIGHTS_UNCHECKED', '1')                                    # stand-ins, knowingly
    for mode in ('auto', 'on'):
        m = weights.pretrained_model('resnet18', Config(pretrained=mode))
        assert m.is_pretrained and torch.equal(m.conv1.weight, sd['conv1.weight'])

def test_checkpoints_atomic_and_checked(tmp_path):
    net = torch.nn.Linear(4, 3)
    p = weights.save_checkpoint(net.state_dict(), tmp_path/'ck.pth')
    assert torch.equal(weights.load_weights(torch.nn.Linear(4, 3), p).weight, net.weight)
    def interrupted(path): path.write_bytes(b'half'); raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): core.atomic_write(p, interrupted)
    assert torch.equal(weights.load_checkpoint(p)['weight'], net.weight)       # the good one survived
    assert [f.name for f in tmp_path.iterdir()] == ['ck.pth']
    (tmp_path/'cut.pth').write_bytes(p.read_bytes()[:50])
    with pytest.raises(weights.CheckpointError, match='cut.pth is unreadable'): weights.load_checkpoint(tmp_path/'cut.pth')
    with pytest.raises(weights.CheckpointError, match='does not match the model'): weights.load_weights(torch.nn.Linear(5, 3), p)

# --- memory helper -------------------------------------------------------------------------------------------
def test_memory_helper_in_a_plain_script():
    code = textwrap.dedent('''
        import torch
        from lessons_lib.memory import experiment
        with experiment('script', verbose=True) as e: x = torch.randn(1000, 1000) @ torch.randn(1000, 1000)
        assert e.report['backend'] == 'light' and e.report['seconds'] >= 0, e.report
        print('ok', x.shape[0])''')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "experiment 'script':" in r.stdout and 'ok 1000' in r.stdout

# --- lesson7 CLI ---------------------------------------------------------------------------------------------
def test_lesson7_help_and_bad_flags(tmp_path):
    r = lesson7('--help'); assert r.returncode == 0 and 'usage: lesson7' in r.stdout and '--resume' in r.stdout
    r = lesson7('all', '--size', 'huge'); assert r.returncode == 2 and "invalid choice: 'huge'" in r.stderr
    r = lesson7('nosuch'); assert r.returncode == 2 and 'usage: lesson7' in r.stderr
    r = lesson7('all', '--device', 'gpu0', '--out', tmp_path); assert r.returncode == 2 and "device='gpu0' is not a device" in r.stderr
    r = lesson7('all', '--image', 'x.png', '--out', tmp_path); assert r.returncode == 2 and '--image is only for the superres lesson' in r.stderr

def test_report_lists_each_lesson(tmp_path):
    core.save_json({'acc': 0.5, 'size': 'small'}, tmp_path/'resnet'/'metrics.json')
    Image.new('RGB', (4, 4)).save(tmp_path/'resnet'/'curves.png')
    txt = cli.write_report(tmp_path, ['resnet', 'unet']).read_text()
    assert '## 1 ResNet on MNIST' in txt and '![resnet: curves](resnet/curves.png)' in txt
    assert '[resnet/metrics.json](resnet/metrics.json)' in txt and '## 2 U-Net' not in txt


def test_nbdev_clean_keeps_the_stored_fingerprint(tmp_path):
    "`make lessons` ends with nbdev-clean: the fingerprint it records must survive it (a string in pyproject's "
    "`allowed_metadata_keys` is taken letter by letter, and the key was dropped)."
    nb = tmp_path/'nbs'/'x.ipynb'; nb.parent.mkdir()
    d = json.loads((REPO/'nbs'/'00_core.ipynb').read_text()); d['metadata']['lessons_lib'] = {'fingerprint': 'abc'}
    nb.write_text(json.dumps(d))
    shutil.copy(REPO/'pyproject.toml', tmp_path/'pyproject.toml')
    subprocess.run([str(BIN/'nbdev-clean'), '--fname', str(nb)], cwd=tmp_path, check=True, capture_output=True)
    assert json.loads(nb.read_text())['metadata'].get('lessons_lib') == {'fingerprint': 'abc'}


def test_adopt_stores_the_outputs_of_a_lesson7_run_only_where_its_fingerprint_holds(tmp_path):
    "`lessons-nb adopt OUT`: a lesson that `lesson7` ran on this code becomes the stored outputs (the prose of nbs/ kept); "
    "one whose code cell has changed since, or that ran at another size, is left alone, with a line naming it."
    import nbformat
    nbs = tmp_path/'nbs'; nbs.mkdir()
    for name, nb_name in cli.LESSONS.items(): shutil.copy(REPO/'nbs'/nb_name, nbs/nb_name)
    def fake_run(name, size='small', marker='from the run'):
        "What `execute_lesson` leaves: the notebook executed (here: one output per code cell), stamped as it stamps it."
        nb = nbformat.read(REPO/'nbs'/cli.LESSONS[name], as_version=4)
        for c in nb.cells:
            if c.cell_type == 'code': c.execution_count = 7; c.outputs = [nbformat.v4.new_output('stream', name='stdout', text=f'{marker}\n'),
                                                   nbformat.v4.new_output('stream', name='stdout', text=f"saved {tmp_path/'out'/name}/x.png\n")]
        nb.metadata['lessons_lib'] = cli._run_stamp(REPO/'nbs'/cli.LESSONS[name], Config(size=size))
        d = tmp_path/'out'/name; d.mkdir(parents=True); nbformat.write(nb, d/cli.LESSONS[name])
        (d/'metrics.json').write_text(json.dumps({**stored_headlines(REPO/'nbs'/cli.LESSONS[name]), 'resnet_acc': 0.123}))
    fake_run('resnet'); fake_run('unet', size='tiny'); fake_run('superres')
    md = nbformat.read(nbs/cli.LESSONS['resnet'], as_version=4)
    md.cells[[c.cell_type for c in md.cells].index('markdown')].source += '\n\nA sentence written after the run.'
    nbformat.write(md, nbs/cli.LESSONS['resnet'])                         # prose: not in the fingerprint
    sr = nbformat.read(nbs/cli.LESSONS['superres'], as_version=4)
    sr.cells[[c.cell_type for c in sr.cells].index('code', 3)].source += '\n# changed after the run'
    nbformat.write(sr, nbs/cli.LESSONS['superres'])                       # code: in it
    said = []
    done = cli.adopt_run(tmp_path/'out', nbs, log=said.append)
    assert done == [nbs/cli.LESSONS['resnet']], said
    got = nbformat.read(nbs/cli.LESSONS['resnet'], as_version=4)
    assert all(c.outputs[0].text == 'from the run\n' for c in got.cells if c.cell_type == 'code')
    assert all(c.outputs[1].text == 'saved out/resnet/x.png\n' for c in got.cells if c.cell_type == 'code')   # no machine path
    assert all(c.execution_count is None for c in got.cells if c.cell_type == 'code')                   # stored clean
    assert 'A sentence written after the run.' in ''.join(c.source for c in got.cells if c.cell_type == 'markdown')
    assert got.metadata['lessons_lib']['fingerprint'] == cli.notebook_fingerprint(REPO/'nbs'/cli.LESSONS['resnet'])
    assert stored_headlines(nbs/cli.LESSONS['resnet'])['resnet_acc'] == 0.123                      # the run's headlines, recorded
    assert any('unet' in s and 'size=tiny' in s and 'not adopted' in s for s in said), said
    assert any('superres' in s and 'ran other code' in s for s in said), said
    assert any('gan: no ' in s for s in said), said
    assert all(not any(o.get('text') == 'from the run\n' for c in nbformat.read(nbs/cli.LESSONS[n], as_version=4).cells
                       if c.cell_type == 'code' for o in c.outputs) for n in ('unet', 'superres'))
