"""The course-data path a student on a GPU box takes, offline: fabricated course-layout datasets under a temporary
FASTAI_HOME and stand-in ImageNet weights under a temporary TORCH_HOME; every lesson runs on them at the tiny size
with `--data course --pretrained on`, and is checked to have used them."""
import json, os, subprocess
from pathlib import Path
import pytest
from conftest import lesson7

from lessons_lib.standins import CAMVID_CODES, standin_home

@pytest.fixture(scope='module')
def course_env(tmp_path_factory):
    root = tmp_path_factory.mktemp('course')     # 5,000 MNIST files, so the tiny size's every-20th keeps 250
    home = standin_home(root, mnist=(450, 50), camvid=dict(n=8), pets=dict(n=12), lsun=dict(n=120))
    return dict(root=root, env=home['env'], n_camvid=home['camvid'], n_pets=home['pets'], n_lsun=home['lsun'])

def _run(lesson, course_env, tmp_path):
    r = lesson7(lesson, '--data', 'course', '--size', 'tiny', '--pretrained', 'on', '--out', tmp_path, env=course_env['env'], timeout=1200)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return json.loads((tmp_path/lesson/'metrics.json').read_text())

def test_resnet_on_course_mnist(course_env, tmp_path):
    m = _run('resnet', course_env, tmp_path)
    assert m['data'] == 'course' and m['n_train'] + m['n_valid'] == 250

def test_unet_on_course_camvid(course_env, tmp_path):
    m = _run('unet', course_env, tmp_path)
    assert m['n_classes'] == len(CAMVID_CODES) and m['n_train'] + m['n_valid'] == course_env['n_camvid']
    assert m['encoder'] == 'resnet34' and m['encoder_pretrained'] is True             # the stand-in weights were loaded

def test_superres_and_gan_on_course_pets(course_env, tmp_path):
    m = _run('superres', course_env, tmp_path)
    assert m['vgg_pretrained'] == 'True' and m['n_train_pairs'] + len(m['held_out'].split(',')) == course_env['n_pets']
    g = _run('gan', course_env, tmp_path)
    assert g['gen_source'].endswith('superres/generator_mse.pth') and g['critic_seconds'] > 0 and g['gan_batches'] >= 2
    pets = Path(course_env['env']['FASTAI_HOME'])/'data'/'oxford-iiit-pet'
    assert sorted(p.name for p in pets.iterdir()) == ['images']                       # the dataset was not written into

def test_wgan_on_course_lsun_bedrooms(course_env, tmp_path):
    m = _run('wgan', course_env, tmp_path)
    assert m['data'] == 'course' and m['n_train'] == course_env['n_lsun'] - m['n_eval'] and m['judge'] == 'resnet18'
    for k in ('gan', 'wgan', 'wgan_gp', 'fastai_wgan'):
        assert m[f'{k}_confident'] is None and m[f'{k}_fd'] >= 0, k       # no digit classes: the distance only

def test_wgan_without_the_lsun_archive_is_one_line(tmp_path):
    env = {'FASTAI_HOME': str(tmp_path/'fastai'), 'LESSONS_CACHE': str(tmp_path/'cache')}
    r = lesson7('wgan', '--data', 'course', '--size', 'tiny', '--out', tmp_path/'out', env=env, timeout=600)
    assert r.returncode == 1 and 'LSUN_BEDROOMS' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
