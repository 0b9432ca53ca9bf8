"Faults of lesson 3 and its data: a bad or damaged cache, huge photos, wrong inputs, temporary files, installed data."
import ctypes, errno, json, os, shutil, subprocess, sys, tracemalloc
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import REPO, lesson7
from lessons_lib import data, superres
from lessons_lib.core import Config, LessonsError
from lessons_lib.crappify import crappify_folder, crappify_jpeg
from lessons_lib.superres import (superres_generator, save_generator, upscale_tensor, upscale_image, upscale_files,
                                  load_generator)
from lessons_lib.weights import save_checkpoint

TINY = Config(size='tiny', pretrained='off')

def fresh_generator():
    "A fresh tiny generator: it starts as bicubic."
    return superres_generator(TINY, 'handwritten', 'symmetric')

def photo(w=96, h=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))

# ---- 1. the cache: unusable, or damaged ------------------------------------------------------------------
def test_file_shaped_cache_is_one_line_naming_it(tmp_path, monkeypatch):
    f = tmp_path/'not-a-folder'; f.write_text('x')
    monkeypatch.setenv('LESSONS_CACHE', str(f))
    with pytest.raises(LessonsError) as e: data.photos_path(Config())      # a CacheError
    msg = str(e.value)
    assert f'LESSONS_CACHE={f}' in msg and f'{f} is a file' in msg, msg
    assert 'set LESSONS_CACHE to a writable folder' in msg, msg
    assert '\n' not in msg

def test_file_shaped_cache_through_lesson7_is_one_line(tmp_path):
    "The lesson's kernel hits the cache first thing: `lesson7` says one line naming LESSONS_CACHE, not a traceback."
    f = tmp_path/'cache-file'; f.write_text('x')
    r = lesson7('superres', '--size', 'tiny', '--pretrained', 'off', '--out', tmp_path/'out',
                env={'LESSONS_CACHE': str(f)})
    assert r.returncode == 1, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith('lesson7: error: the cache folder') and f'LESSONS_CACHE={f}' in err[-1], r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and 'a bug' not in r.stderr

def _without_dac_override():
    "In the child, before exec: drop CAP_DAC_OVERRIDE from the bounding set, so that root obeys write permissions too."
    PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1
    if ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), 'prctl(PR_CAPBSET_DROP)')

def test_read_only_cache(tmp_path, monkeypatch):
    "A read-only cache that holds a dataset serves it; one that must be written to is one line naming LESSONS_CACHE."
    cache = tmp_path/'ro-cache'
    monkeypatch.setenv('LESSONS_CACHE', str(cache))
    data.photos_path(Config())
    env = {**os.environ, 'LESSONS_CACHE': str(cache)}
    for p in [cache, *cache.rglob('*')]: p.chmod(0o555 if p.is_dir() else 0o444)
    code = ("from lessons_lib.data import photos_path, mnist_path\n"
            "from lessons_lib.core import LessonsError\n"
            "print('photos', photos_path())\n"
            "try: mnist_path()\n"
            "except LessonsError as e: print('error', e)\n")
    try: r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300,
                            preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as e: pytest.skip(f'cannot run without write permission here: {e}')
    finally:
        for p in [cache, *cache.rglob('*')]: p.chmod(0o755 if p.is_dir() else 0o644)
    out = r.stdout.splitlines()
    assert r.returncode == 0, r.stderr[-2000:]
    assert out[0].startswith(f'photos {cache}/photos-'), out
    assert out[1].startswith(f'error the cache folder {cache} (LESSONS_CACHE={cache}) is not writable '
                             '(Permission denied)'), out

def test_disk_full_while_building_is_a_cache_error(fresh_cache):
    def fill(d): raise OSError(errno.ENOSPC, 'No space left on device', str(d/'x.png'))
    with pytest.raises(LessonsError, match=r'could not be written \(No space left on device\); set LESSONS_CACHE'):
        data.materialize('demo', fill)

def test_truncated_file_in_materialized_folder_is_rebuilt(fresh_cache, capsys):
    p = data.photos_path(Config())
    f = p/'images'/'rocket.jpg'
    f.write_bytes(f.read_bytes()[:2000])
    capsys.readouterr()
    assert data.photos_path(Config()) == p
    said = capsys.readouterr().out
    assert f'rebuilding the cache folder {p}' in said and 'rocket.jpg is not what was built there' in said, said
    with Image.open(f) as im: im.load()                                          # whole again
    assert data.photos_path(Config()) == p and capsys.readouterr().out == ''      # and then trusted, silently

def test_truncated_crappified_image_is_made_again(fresh_cache, capsys):
    src = data.photos_path(Config())/'images'
    pairs = crappify_folder(src, variants=2)
    hr, lr = pairs[3]
    whole = lr.read_bytes()
    lr.write_bytes(whole[:len(whole) // 3])
    capsys.readouterr()
    assert crappify_folder(src, variants=2) == pairs
    said = capsys.readouterr().out
    assert f'{lr} is damaged' in said and 'making it again' in said, said
    assert lr.read_bytes() == whole == crappify_jpeg(Image.open(hr), lr.stem + hr.suffix)

# ---- 2. huge photos in bounded memory ------------------------------------------------------------------
def test_large_image_is_upscaled_tile_by_tile_without_a_whole_float_copy():
    gen, img = fresh_generator(), photo(1000, 750)
    ticks = []
    tracemalloc.start()                                   # numpy's arrays are traced (torch's storage is not)
    try:
        out = upscale_image(gen, img, progress=lambda k, n: ticks.append((k, n)))
        _, peak = tracemalloc.get_traced_memory()
    finally: tracemalloc.stop()
    assert out.size == (2000, 1500)
    assert ticks == [(k, 12) for k in range(1, 13)]                     # 3 rows x 4 columns of 512-px tiles
    whole_float = 2000 * 1500 * 3 * 4
    assert peak < whole_float / 3, (peak, whole_float)                 # never a float copy of the whole output
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((2000, 1500), Image.BICUBIC)))    # still bicubic

def test_output_over_the_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile
    big = tmp_path/'big.jpg'
    Image.new('RGB', (6200, 6200), (90, 120, 150)).save(big, quality=50)   # x2: 153.8 megapixels
    def must_not_decode(self): raise AssertionError('decoded the photo before refusing it')
    monkeypatch.setattr(ImageFile.ImageFile, 'load', must_not_decode)
    cfg = Config(size='tiny', out=str(tmp_path/'out'))
    with pytest.raises(LessonsError) as e: upscale_files(cfg, big)        # one path, not a list
    want = f'image {big} would be upscaled to 12400x12400 = 154 megapixels, over the limit of 150 megapixels'
    assert want in str(e.value), str(e.value)
    assert not (tmp_path/'out'/'superres'/'upscaled').exists()

# ---- 3. wrong inputs said plainly -----------------------------------------------------------------------
@pytest.mark.parametrize('bad, msg', [(lambda x: x * 255, 'values 0-255? divide by 255'),
                                      (lambda x: (x * 255).to(torch.uint8), 'got torch.uint8: pass x.float() / 255'),
                                      (lambda x: x.masked_fill(x > 0.5, float('nan')), 'NaN or infinite values'),
                                      (lambda x: x[None], 'got shape (1, 3, 40, 48)'),
                                      (lambda x: x.numpy(), 'takes a tensor (3, h, w), got a ndarray')])
def test_upscale_tensor_refuses_what_it_does_not_take(bad, msg):
    x = torch.rand(3, 40, 48)
    with pytest.raises(LessonsError) as e: upscale_tensor(fresh_generator(), bad(x))          # an UpscaleInputError
    assert msg in str(e.value), str(e.value)

def test_upscale_image_takes_a_path_a_str_or_an_array(tmp_path):
    gen, img = fresh_generator(), photo()
    img.save(tmp_path/'p.png')
    want = np.asarray(upscale_image(gen, img))
    for given in (tmp_path/'p.png', str(tmp_path/'p.png'), np.asarray(img)):
        assert np.array_equal(np.asarray(upscale_image(gen, given)), want), type(given)
    with pytest.raises(superres.UpscaleInputError, match='got a float64 array of shape'):
        upscale_image(gen, np.asarray(img) / 255)
    with pytest.raises(superres.UpscaleInputError, match='use upscale_tensor'): upscale_image(gen, torch.rand(3, 8, 8))
    with pytest.raises(superres.UpscaleInputError, match='no such file'): upscale_image(gen, str(tmp_path/'nope.png'))

def test_upscale_files_takes_one_path(tmp_path):
    cfg = Config(size='tiny', pretrained='off', out=str(tmp_path/'out'))
    save_generator(fresh_generator(), tmp_path/'out'/'superres'/'generator_feature.pth')
    photo(40, 30).save(tmp_path/'a.png')
    (src, dest), = upscale_files(cfg, str(tmp_path/'a.png'), log=lambda s: None)
    assert src == tmp_path/'a.png' and Image.open(dest).size == (80, 60)

@pytest.mark.parametrize('arch', [dict(encoder='handwritten', widths='symmetric', depth=5),
                                  dict(encoder='resnet99', widths='symmetric'), dict(widths='symmetric')])
def test_foreign_generator_checkpoint_is_a_checkpoint_error(tmp_path, arch):
    save_checkpoint(dict(model={}, arch=arch, meta={}), tmp_path/'g.pth')
    with pytest.raises(LessonsError, match='holds a generator of another architecture'):
        load_generator(tmp_path/'g.pth', TINY)

# ---- 4. temporary files -----------------------------------------------------------------------------------
def test_lesson3_leaves_no_temporary_folder():
    "The cells that save a generator and a photo to try them use folders that are removed (`TemporaryDirectory`)."
    nb = Path(os.environ.get('LESSONS_NBS') or REPO/'nbs')/'03_superres.ipynb'
    code = [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
    assert [s for s in code if 'mkdtemp' in s] == []
    assert sum('tempfile.TemporaryDirectory()' in s for s in code) >= 2

# ---- 5. the embedded data of an installed copy -------------------------------------------------------------
def test_installed_copy_reads_the_package_data(tmp_path, monkeypatch):
    import lessons_lib
    monkeypatch.delenv('LESSONS_DATA_DIR', raising=False)
    assert data.repo_data_dir() == Path(lessons_lib.__file__).resolve().parent.parent/'data'   # a checkout: data/
    pkg = tmp_path/'site-packages'/'lessons_lib'
    (pkg/'_data'/'photos').mkdir(parents=True)
    shutil.copy(REPO/'data'/'photos'/'rocket.jpg', pkg/'_data'/'photos')
    monkeypatch.setattr(lessons_lib, '__file__', str(pkg/'__init__.py'))
    assert data.repo_data_dir() == pkg/'_data'
    assert data.embedded_photo_files() == [pkg/'_data'/'photos'/'rocket.jpg']
    with pytest.raises(data.DataError) as e: data.load_mnist_arrays()
    assert f"{pkg/'_data'/'mnist_5k.npz'} is missing" in str(e.value) and 'reinstall it' in str(e.value), str(e.value)
    assert 'git' not in str(e.value)
    monkeypatch.setenv('LESSONS_DATA_DIR', str(tmp_path))
    assert data.repo_data_dir() == tmp_path                                     # the variable still wins
