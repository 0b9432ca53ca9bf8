"Nothing lost, nobody in: killed runs resume, a poisoned weights cache is refused, bad input gives one line (issue 16)."
import gc, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import psutil, pytest, torch
from PIL import Image
from conftest import lesson7, BIN, REPO, ctrl_c_default
from lessons_lib.core import Config
from lessons_lib.weights import load_checkpoint


def one_line_error(r, *needles):
    "The run failed with `lesson7: error: ...` on one line containing every needle, and no traceback."
    assert r.returncode in (1, 2), (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    assert 'Traceback' not in r.stderr, r.stderr[-3000:]
    line = next((l for l in r.stderr.splitlines() if l.startswith('lesson7: error:') or 'error:' in l), '')
    for n in needles: assert n in line, (n, r.stderr[-2000:])


# ---- 1. a malicious pickle in torch's hub cache never runs ----
def test_poisoned_hub_cache_is_refused_by_name(tmp_path):
    marker = tmp_path/'pwned'
    torch_home = tmp_path/'torch'; ck = torch_home/'hub'/'checkpoints'/'vgg16_bn-6c64b313.pth'; ck.parent.mkdir(parents=True)
    code = f"import torch, os\nclass E:\n    def __reduce__(self): return (os.system, ('touch {marker}',))\ntorch.save({{'x': E()}}, {str(ck)!r})"
    subprocess.run([sys.executable, '-c', code], check=True)
    r = lesson7('superres', '--size', 'tiny', '--pretrained', 'auto', '--out', tmp_path/'out', env={'TORCH_HOME': str(torch_home)})
    assert not marker.exists(), 'the pickle in the cache ran'
    one_line_error(r, 'vgg16_bn-6c64b313.pth')


# ---- 2. a SIGKILLed training continues from its last completed epoch, and ends where an uninterrupted one does ----
@pytest.fixture(scope='module')
def superres_tiny(tiny_run):
    "One uninterrupted `lesson7 superres --size tiny`, the reference."
    out, _ = tiny_run('superres')
    return out, json.loads((out/'superres'/'metrics.json').read_text())

def _kill_tree(proc):
    "SIGKILL `proc` and every process under it (the lesson's kernel runs in a session of its own); gone ones are skipped."
    try: tree = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    except psutil.NoSuchProcess: tree = []                 # it ended by itself: nothing left to kill
    for p in tree:
        try: p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess: pass
    proc.wait()

def test_sigkill_mid_training_then_resume_continues_and_matches(superres_tiny, tmp_path):
    _, ref = superres_tiny
    out = tmp_path/'out'; ck = out/'superres'/'train_mse.pth'; log = tmp_path/'killed_run.log'
    with open(log, 'wb') as f:
        proc = subprocess.Popen([str(BIN/'lesson7'), 'superres', '--size', 'tiny', '--out', str(out)],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, epoch = time.time() + 600, 0
    while time.time() < deadline and proc.poll() is None:
        try: epoch = load_checkpoint(ck)['epoch'] if ck.is_file() else 0
        except Exception: epoch = 0                      # being replaced right now: look again
        if epoch >= 1: break
        time.sleep(0.05)
    ended = proc.poll()                                  # None: still running, killed now
    _kill_tree(proc)
    assert epoch >= 1, f"no checkpoint of a finished epoch before the run ended (exit {ended}) or 600 s passed:\n{log.read_text(errors='replace')[-3000:]}"
    done = load_checkpoint(ck)
    assert done['stage'] == 0 and 1 <= done['epoch'] < 4, done['epoch']      # killed inside the MSE stage
    assert not (out/'superres'/'metrics.json').exists()
    r = lesson7('superres', '--size', 'tiny', '--out', out, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"mse generator (resolution): resuming from {ck} (stage 1/1, after epoch {done['epoch']})" in r.stdout, r.stdout[-3000:]
    assert f"mse_plain generator (watermark): resuming from {ck.parent/'train_mse_plain_watermark.pth'} (its training is complete)" in r.stdout
    m = json.loads((out/'superres'/'metrics.json').read_text())
    for k in ('psnr_mse', 'psnr_feature', 'ssim_mse', 'sharpness_feature', 'lr_find_losses'):   # lr_find too: its batches are seeded
        assert m[k] == pytest.approx(ref[k], abs=1e-6), k


def _same_metrics(m, ref):
    "Every number of `ref`'s metrics.json (but the seconds, and the config: `resume` differs) is in `m`, equal."
    keys = [k for k in ref if 'seconds' not in k and k not in ('config', 'notebook')]
    assert keys and [k for k in keys if k not in m] == []
    for k in keys:
        floats = isinstance(ref[k], float) or isinstance(ref[k], list) and all(isinstance(v, float) for v in ref[k])
        assert m[k] == (pytest.approx(ref[k], abs=1e-6, nan_ok=True) if floats else ref[k]), (k, m[k], ref[k])

# ---- issue 33 item 2: a finished run resumed ends as it did (it failed in `epoch_table`: no `metric_names`) ----
def test_finished_superres_resumed_gives_the_same_metrics(superres_tiny, tmp_path):
    out, ref = superres_tiny
    shutil.copytree(out/'superres', tmp_path/'superres', ignore=shutil.ignore_patterns('upscaled'))
    r = lesson7('superres', '--size', 'tiny', '--out', tmp_path, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    said = [l.strip() for l in r.stdout.splitlines() if ': resuming from ' in l]
    for job in ('mse_plain generator (resolution)', 'mse_plain generator (watermark)', 'mse generator (resolution)',
                'mse generator (watermark)', 'feature-loss generator'):       # every training of lesson 3, each from its own file
        assert any(f'{job}: resuming from ' in l and l.endswith('(its training is complete)') for l in said), (job, said)
    _same_metrics(json.loads((tmp_path/'superres'/'metrics.json').read_text()), ref)

def test_sigkill_after_the_last_stage_then_resume_matches(superres_tiny, tmp_path):
    _, ref = superres_tiny
    out = tmp_path/'out'; ck = out/'superres'/'train_feature.pth'; log = tmp_path/'killed_run.log'
    with open(log, 'wb') as f:
        proc = subprocess.Popen([str(BIN/'lesson7'), 'superres', '--size', 'tiny', '--out', str(out)],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, stage = time.time() + 900, 0
    while time.time() < deadline and proc.poll() is None:
        try: stage = load_checkpoint(ck)['stage'] if ck.is_file() else 0
        except Exception: stage = 0                      # being replaced right now: look again
        if stage >= 1: break                             # the feature training (one stage) says it is complete
        time.sleep(0.05)
    ended = proc.poll()
    _kill_tree(proc)
    tail = log.read_text(errors='replace')[-3000:]
    assert stage >= 1, f"no complete feature training before the run ended (exit {ended}):\n{tail}"
    assert not (out/'superres'/'metrics.json').exists()  # killed after the training, before the lesson's end
    r = lesson7('superres', '--size', 'tiny', '--out', out, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'feature-loss generator: resuming from' in r.stdout, r.stdout[-3000:]
    assert 'its training is complete' in r.stdout, r.stdout[-3000:]
    _same_metrics(json.loads((out/'superres'/'metrics.json').read_text()), ref)

# ---- 5. a checkpoint made with other settings is refused in one line ----
def test_resume_with_other_settings_is_refused(superres_tiny, tmp_path):
    shutil.copytree(superres_tiny[0]/'superres', tmp_path/'superres', ignore=shutil.ignore_patterns('upscaled'))
    out = tmp_path                                       # a copy: the refused run must not touch the module's reference run
    r = lesson7('superres', '--size', 'tiny', '--seed', '7', '--out', out, '--resume')   # (another seed: refused as another size is, without small's data and lr_find first)
    one_line_error(r, 'train_mse_plain.pth was made with other settings', "seed: 42 there, 7 here")


# ---- 3. resuming a finished U-Net lesson works (it crashed in `learner_summary`) ----
def test_unet_resume_after_a_complete_run(tiny_run):
    tmp_path, _ = tiny_run('unet')
    m1 = json.loads((tmp_path/'unet'/'metrics.json').read_text())
    r = lesson7('unet', '--size', 'tiny', '--out', tmp_path, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'handwritten U-Net: resuming from' in r.stdout and 'its training is complete' in r.stdout
    m2 = json.loads((tmp_path/'unet'/'metrics.json').read_text())
    assert (m2['miou'], m2['acc_nonvoid'], m2['train_seconds']) == (m1['miou'], m1['acc_nonvoid'], m1['train_seconds'])


# ---- 7. stale temp files of a killed write are cleaned; new files follow the umask ----
def test_stale_temp_files_cleaned_and_umask_followed(tmp_path):
    d = tmp_path/'resnet'; d.mkdir()
    stale = d/'.plain.pth.k3j2h1.tmp'; stale.write_bytes(b'half a checkpoint')
    os.utime(stale, (time.time() - 7200,) * 2)       # (no writer's pid in its name: stale by its age)
    old = os.umask(0o027)
    try:
        from lessons_lib.core import lesson_dir, save_json
        assert lesson_dir(Config(out=str(tmp_path)), 'resnet') == d
        assert not stale.exists()
        f = save_json({'a': 1}, d/'m.json')
        assert f.stat().st_mode & 0o777 == 0o640
    finally: os.umask(old)


# ---- 8-10. bad flags: one line, before any work ----
@pytest.mark.parametrize('args,needles', [
    (['--device', 'cuda:7'], ["device='cuda:7' is not available on this machine; it has: cpu"]),
    (['--device', 'mps'], ["device='mps' is not available on this machine"]),
    (['--seed', '99999999999999999999'], ['seed=99999999999999999999 is out of range; use 0 to 4294967295']),
])
def test_bad_device_and_seed_are_one_line(args, needles, tmp_path):
    if torch.cuda.is_available() and 'cuda:7' in args and torch.cuda.device_count() > 7: pytest.skip('this machine has 8 GPUs')
    r = lesson7('resnet', '--size', 'tiny', '--out', tmp_path, *args)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    for n in needles: assert n in r.stderr

def test_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    f = tmp_path/'results'; f.write_text('not a folder')
    t0 = time.time()
    r = lesson7('resnet', '--size', 'tiny', '--out', f)
    one_line_error(r, 'is a file; choose another --out')
    assert time.time() - t0 < 60

def test_read_only_out_is_refused_before_any_work(tmp_path):
    d = tmp_path/'ro'; (d/'resnet').mkdir(parents=True)
    if os.geteuid() == 0:                                 # root writes anywhere: make the folder immutable instead
        if shutil.which('chattr') is None or subprocess.run(['chattr', '+i', str(d/'resnet')]).returncode != 0:
            pytest.skip('running as root and chattr +i is not available to make a read-only folder')
    else: (d/'resnet').chmod(0o555)
    try:
        r = lesson7('resnet', '--size', 'tiny', '--out', d)
        one_line_error(r, f"output folder {d/'resnet'} is not writable")
        assert not (d/'resnet'/'cnn.pth').exists()
    finally:
        if os.geteuid() == 0: subprocess.run(['chattr', '-i', str(d/'resnet')])
        else: (d/'resnet').chmod(0o755)


# ---- 12. a truncated embedded photo is named by its file in data/ ----
def test_truncated_embedded_photo_names_the_source_file(tmp_path):
    data = tmp_path/'data'; shutil.copytree(REPO/'data', data)
    p = data/'photos'/'coffee.jpg'; p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
    r = lesson7('superres', '--size', 'tiny', '--out', tmp_path/'out', env={'LESSONS_DATA_DIR': str(data), 'LESSONS_CACHE': str(tmp_path/'c')})
    one_line_error(r, f'embedded photo {p} is unreadable')


# ---- 13. EXIF-rotated photos keep their shape; 15. long upscales show progress ----
def test_upscale_exif_rotation_and_tile_progress(superres_tiny, tmp_path):
    out, _ = superres_tiny
    im = Image.new('RGB', (60, 40), (120, 30, 200)); exif = im.getexif(); exif[0x0112] = 6
    im.save(tmp_path/'turned.jpg', exif=exif)
    Image.new('RGB', (1100, 700), (20, 120, 40)).save(tmp_path/'big.png')
    r = lesson7('superres', '--size', 'tiny', '--out', out, '--image', tmp_path/'turned.jpg', '--image', tmp_path/'big.png')
    assert r.returncode == 0, r.stderr[-2000:]
    turned = next((out/'superres'/'upscaled').glob('turned-*_x2.png'))
    assert Image.open(turned).size == (80, 120)                  # shown portrait, 40x60 -> 80x120, not squashed
    assert 'big.png: tile 15/15' in r.stdout and r.stdout.count('big.png: tile') >= 5, r.stdout[-2000:]


# ---- 14. a FeatureLoss that is never closed lets go of its hooks when collected ----
def test_unclosed_feature_loss_releases_hooks():
    from lessons_lib.losses import FeatureLoss, vgg_features
    feats = vgg_features(Config(pretrained='off'))
    hooks = lambda: sum(len(m._forward_hooks) for m in feats.modules())
    fl = FeatureLoss(feats); fl(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert hooks() == 3
    del fl; gc.collect()
    assert hooks() == 0


# ---- the interrupt message says whether anything was kept ----
def test_interrupt_before_any_checkpoint_says_so(tmp_path):
    proc = subprocess.Popen([str(BIN/'lesson7'), 'resnet', '--size', 'tiny', '--out', str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default)
    deadline = time.time() + 300
    def kernel_started():                 # torch's import spawns short-lived helpers too: wait for the kernel itself
        try: return any('ipykernel' in ' '.join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True))
        except psutil.Error: return False
    while time.time() < deadline and proc.poll() is None and not kernel_started(): time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert 'no checkpoint had been written yet; rerun to start again' in err or 'rerun with --resume' in err, err[-2000:]
    if not list((tmp_path/'resnet').glob('*.pth')): assert 'no checkpoint had been written yet' in err


# ---- the course-data path: weights a run needs are checked before any training ----
def test_pretrained_on_without_weights_fails_before_training(tmp_path):
    t0 = time.time()
    r = lesson7('superres', '--size', 'tiny', '--pretrained', 'on', '--out', tmp_path, env={'TORCH_HOME': str(tmp_path/'torch')})
    one_line_error(r, 'vgg16_bn-6c64b313.pth')
    assert not list((tmp_path/'superres').glob('train_*.pth')) and time.time() - t0 < 120


# ---- 11. an unreadable image in a segmentation folder is named, with what to do ----
def test_unreadable_scene_image_is_named(tmp_path):
    from lessons_lib.segdata import digit_scenes_path, seg_dls, SegDataError
    src = digit_scenes_path(10, 5); bad = tmp_path/'scenes'; shutil.copytree(src, bad)
    (bad/'images'/'scene_00003.png').write_bytes(b'\x89PNG not really')
    with pytest.raises(SegDataError, match=r'image .*scene_00003.png is unreadable .*remove or replace'): seg_dls(bad)
