"""`report.md` (lessons_lib.report), from fake output folders built with the real keys: the metrics the lessons' notebooks
stored (their committed outputs). Cheap: no lesson runs."""
import json, os, re, shutil, subprocess
from pathlib import Path
import nbformat
import pytest
from PIL import Image
from lessons_lib import cli, report
from lessons_lib.report import HEADLINES, lookup, record_headlines, stored_headlines, write_report
from conftest import BIN, REPO

# The metrics of one stored run (a883100's committed outputs, as their notebooks showed them), frozen so that the report's
# expected text below does not move with each refresh of the notebooks.
FROZEN = json.loads((Path(__file__).parent/'report_metrics.json').read_text())
HW = dict(device='cpu', cpu='Intel(R) Xeon(R) Processor', bf16=True, precision='bfloat16', processes=1,
          channels_last_min_width=128, cpu_threads=2)


@pytest.mark.parametrize('lesson', list(HEADLINES))
def test_headlines_read_the_keys_the_lessons_save(lesson):
    "Every path a headline reads is in the metrics its notebook saved; its key figure is one the notebook saves."
    # what the notebook's run saved in metrics.json, as `lessons-nb refresh` / `adopt` recorded it beside the outputs
    m, h = stored_headlines(REPO/'nbs'/cli.LESSONS[lesson]), HEADLINES[lesson]
    assert [p for p in h.paths if lookup(m, p) is None] == []
    if h.sweep: assert all(q.key in m[h.sweep.key][0] for q in (h.sweep.by, *h.sweep.columns))
    src = ''.join(''.join(c['source']) for c in json.loads((REPO/'nbs'/cli.LESSONS[lesson]).read_text())['cells'])
    assert f"out/'{h.figure}'" in src, h.figure


def _fake_run(out: Path, changes=None, drop=(), seconds=100.0):
    "An output folder as `lesson7 all` leaves it, with the frozen run's metrics (`changes` and `drop` applied)."
    for n, nb in cli.LESSONS.items():
        d = out/n; d.mkdir(parents=True)
        m = {**FROZEN[n], **(changes or {}).get(n, {})}
        for k in drop: m.pop(k, None)
        for i, f in enumerate(['a_first', HEADLINES[n].figure.removesuffix('.png'), 'z_last']):
            Image.new('RGB', (4, 4)).save(d/f'{f}.png'); os.utime(d/f'{f}.png', (1e9 + 10 * i,) * 2)
        (d/nb).write_text('{}')
        m.update(size='small', data='embedded', config=dict(size='small', seed=42, out=str(out)), hardware=HW,
                 seconds=seconds, notebook=str(d/nb))
        (d/'metrics.json').write_text(json.dumps(m))
    return out


def _fake_nbs(d: Path, size='small'):
    "Notebooks whose metadata hold the committed run's headlines, as `lessons-nb refresh` will record them."
    d.mkdir()
    for n, nb in cli.LESSONS.items():
        nbformat.write(nbformat.v4.new_notebook(metadata={'lessons_lib': dict(fingerprint='f' * 16, size=size, data='embedded')}), d/nb)
        record_headlines(d/nb, FROZEN[n])
    return d


def test_report_reads_as_a_report(tmp_path):
    out = _fake_run(tmp_path/'results', changes=dict(superres=dict(psnr_outside_wm_mse=25.55)), drop=['critic_acc'])
    txt = write_report(out, list(cli.LESSONS), nbs=_fake_nbs(tmp_path/'nbs'), started=None).read_text()
    for row in ('| date | ', '| size | small |', '| data | embedded |', '| device | cpu |', '| seed | 42 |',
                '| CPU | Intel(R) Xeon(R) Processor (2 threads) |', '| precision | bfloat16 |', '| commit | ',
                '| total time | 500 s (8 min 20 s) |', 'headlines recorded for 5 of 5 lessons'):
        assert row in txt, row
    # headlines in words, with units, this run beside the stored run
    assert '**This run:** 44-layer plain net: final training loss 0.60 vs 0.09 with skips.' in txt
    assert ('**This run:** held-out PSNR outside the watermark: bicubic 25.41 dB, MSE 25.55 dB, feature loss 25.05 dB; '
            'inside it: bicubic 10.39 dB, MSE 22.03 dB.') in txt
    assert ('**Stored run:** held-out PSNR outside the watermark: bicubic 25.41 dB, MSE 25.48 dB, feature loss 25.05 dB; '
            'inside it: bicubic 10.39 dB, MSE 22.03 dB.') in txt
    assert '| outside the watermark: MSE, the jobs in turn (the box out of the loss, then in) | 25.55 dB | 25.48 dB |' in txt
    assert "| outside the watermark: the course's plain MSE |" not in txt     # a number neither run has: no row
    assert '| ResNet: validation accuracy | 98.6% | 98.6% |' in txt and '| ResNet: training time | 63 s | 63 s |' in txt
    assert '| original GAN: generator steps | 3,681 steps | 3,681 steps |' in txt
    assert '| 44 | 0.602 (0.602) | 0.092 (0.092) | 84.9% (84.9%) | 95.6% (95.6%) |' in txt         # nested: the depth sweep
    assert '| pretrained critic: accuracy, real vs generated | — | 90.3% |' in txt                     # missing in this run
    # the key figure, the rest linked (relative) in the order made, never dumped
    assert '![resnet: depth_sweep](resnet/depth_sweep.png)' in txt
    assert 'other figures: [a_first](resnet/a_first.png), [z_last](resnet/z_last.png).' in txt
    assert '[superres/metrics.json](superres/metrics.json)' in txt and '[wgan/05_wgan.ipynb](wgan/05_wgan.ipynb)' in txt
    assert str(tmp_path) not in txt and '](/' not in txt and not re.search(r'(^|[\s(])/(work|tmp|home)/', txt)
    assert 'lr_find_losses' not in txt and 'gen_source' not in txt and 'generator_mse' not in txt
    assert len(txt.splitlines()) < 200, len(txt.splitlines())


def test_a_tiny_or_older_run_is_shown_as_far_as_it_goes(tmp_path):
    "Keys missing (an older metrics.json, a lesson at tiny), a sweep of other depths, a lesson not run: no crash."
    out = tmp_path/'out'
    sweep = [dict(depth=2, plain_train_loss=2.3, resnet_train_loss=2.2)]
    report.atomic_write(out/'resnet'/'metrics.json', lambda p: p.write_text(json.dumps(dict(size='tiny', resnet_acc=0.1, depth_sweep=sweep))))
    report.atomic_write(out/'unet'/'metrics.json', lambda p: p.write_text(json.dumps(dict(size='tiny'))))
    txt = write_report(out, ['resnet', 'unet', 'gan'], nbs=_fake_nbs(tmp_path/'nbs')).read_text()
    assert '| lessons | resnet, unet (not run: gan) |' in txt and '## 4 ' not in txt
    assert "This run's size is tiny, the stored run's small: their numbers are not comparable." in txt
    assert '**This run:** 2-layer plain net: final training loss 2.30 vs 2.20 with skips.' in txt
    assert '| 2 | 2.300 | 2.200 | — | — |' in txt                                     # no stored row for 2 layers
    assert '| the course\'s CNN: validation accuracy | — | 95.6% |' in txt
    assert '| device | — |' in txt and '## 2 U-Net' in txt and '**This run:**' not in txt.split('## 2 U-Net')[1]


def test_write_report_keeps_cli_signature_and_reads_the_committed_notebooks(tmp_path):
    "`write_report(out, names)` as cli calls it: the stored run is the notebooks' of this repository."
    out = _fake_run(tmp_path/'results')
    p = write_report(out, ['resnet'])
    assert p == out/'report.md'
    n = sum(bool(stored_headlines(REPO/'nbs'/nb)) for nb in ('01_resnet.ipynb',))
    assert f'headlines recorded for {n} of 1 lessons' in p.read_text()


def test_without_notebooks_there_is_no_stored_run(tmp_path, monkeypatch):
    monkeypatch.setenv('LESSONS_NBS', str(tmp_path/'nowhere'))
    txt = write_report(_fake_run(tmp_path/'results'), ['unet']).read_text()
    assert '| stored run | none found (no notebooks beside this copy of lessons_lib) |' in txt
    assert '| hand-written U-Net: mean IoU over classes | 0.817 | — |' in txt


def test_recorded_headlines_survive_nbdev_clean_beside_the_fingerprint(tmp_path):
    "`make lessons` ends with nbdev-clean: the headlines recorded after the refresh must stay, and the fingerprint too."
    nb = tmp_path/'nbs'/'03_superres.ipynb'; nb.parent.mkdir()
    d = json.loads((REPO/'nbs'/'00_core.ipynb').read_text()); d['metadata']['lessons_lib'] = {'fingerprint': 'abc'}
    nb.write_text(json.dumps(d))
    vals = record_headlines(nb, FROZEN['superres'])
    assert vals['psnr_mse'] == pytest.approx(25.398, abs=1e-3) and 'lr_find_losses' not in vals
    shutil.copy(REPO/'pyproject.toml', tmp_path/'pyproject.toml')
    subprocess.run([str(BIN/'nbdev-clean'), '--fname', str(nb)], cwd=tmp_path, check=True, capture_output=True)
    meta = json.loads(nb.read_text())['metadata']['lessons_lib']
    assert meta['fingerprint'] == 'abc' and meta['headlines'] == vals == stored_headlines(nb)


def test_a_resumed_lesson_says_so_beside_its_time(tmp_path):
    "A lesson resumed from checkpoints ran for seconds its training did not take: the section and the total say so."
    out = _fake_run(tmp_path/'results', seconds=126.0)
    f = out/'superres'/'metrics.json'; m = json.loads(f.read_text())
    m['config']['resume'] = True; f.write_text(json.dumps(m))
    txt = write_report(out, list(cli.LESSONS), nbs=_fake_nbs(tmp_path/'nbs'), started=None).read_text()
    assert '## 3 Super-resolution: pixel MSE, the jobs in turn, then the feature loss (ran 126 s, resumed from its checkpoints)' in txt
    assert '| total time | 630 s (10 min 30 s); resumed from checkpoints: superres (their training before the resume is not in it) |' in txt
    assert '## 1 ResNet on MNIST: skip connections (ran 126 s)' in txt                 # the lessons that were not resumed: as before
