"""The course-data path a student on a GPU box takes, offline: fabricated course-layout datasets under a temporary
FASTAI_HOME and stand-in ImageNet weights under a temporary TORCH_HOME; every lesson runs on them at the tiny size
with `--data course --pretrained on`, and is checked to have used them."""
import json, os, subprocess
from pathlib import Path
import numpy as np, pytest, torch, torchvision
from PIL import Image
from conftest import lesson7

CAMVID_CODES = ('Animal Archway Bicyclist Bridge Building Car CartLuggagePram Child Column_Pole Fence LaneMkgsDriv LaneMkgsNonDriv '
                'Misc_Text MotorcycleScooter OtherMoving ParkingBlock Pedestrian Road RoadShoulder Sidewalk SignSymbol Sky '
                'SUVPickupTruck TrafficCone TrafficLight Train Tree Truck_Bus Tunnel VegetationMisc Void Wall').split()

def _mnist(root, rng):
    for split, n in (('training', 450), ('testing', 50)):       # 5,000 files, so the tiny size's every-20th keeps 250
        for c in range(10):
            d = root/'mnist_png'/split/str(c); d.mkdir(parents=True)
            for i in range(n): Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(d/f'{c}{i}.png')

def _camvid(root, rng, n=8, size=(160, 120)):
    d = root/'camvid'; (d/'images').mkdir(parents=True); (d/'labels').mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(d/'images'/f'0016E5_{i:05d}.png')
        m = Image.fromarray(rng.integers(0, len(CAMVID_CODES), (size[1], size[0]), dtype=np.uint8), 'L').convert('P')
        m.save(d/'labels'/f'0016E5_{i:05d}_P.png')
    (d/'codes.txt').write_text('\n'.join(CAMVID_CODES) + '\n')
    (d/'valid.txt').write_text('\n'.join(f'0016E5_{i:05d}.png' for i in range(n - 2, n)) + '\n')
    return n

def _pets(root, rng, n=12):
    d = root/'oxford-iiit-pet'/'images'; d.mkdir(parents=True)
    modes = ['RGB', 'L', 'CMYK', 'RGBA']
    for i in range(n):
        w, h = int(rng.integers(300, 500)), int(rng.integers(300, 450))
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(modes[i % 4])
        (im.convert('RGB') if modes[i % 4] == 'RGBA' else im).save(d/f'pet_{i}.jpg', quality=90)
    return n

def _lsun(root, rng, n=120):
    for i in range(n):                                              # bedrooms in subfolders, as the archive has them
        d = root/'bedroom'/f'{i % 3}'/f'{i % 5}'; d.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(40, 80)), int(rng.integers(40, 80))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d/f'room_{i}.jpg', quality=90)
    return n

@pytest.fixture(scope='module')
def course_env(tmp_path_factory):
    root = tmp_path_factory.mktemp('course')
    rng = np.random.default_rng(0)
    data = root/'fastai'/'data'
    _mnist(data, rng); n_camvid = _camvid(data, rng); n_pets = _pets(data, rng); n_lsun = _lsun(data, rng)
    ck = root/'torch'/'hub'/'checkpoints'; ck.mkdir(parents=True)
    from lessons_lib.weights import weights_file
    for name in ('resnet34', 'vgg16_bn', 'resnet18'):
        torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), ck/weights_file(name).name)
    env = {'FASTAI_HOME': str(root/'fastai'), 'TORCH_HOME': str(root/'torch'), 'LESSONS_WEIGHTS_UNCHECKED': '1',
           'LESSONS_CACHE': str(root/'cache')}
    return dict(root=root, env=env, n_camvid=n_camvid, n_pets=n_pets, n_lsun=n_lsun)

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
