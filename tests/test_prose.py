"The lesson book's prose rules (tests/prose_check.py): every lesson reads as a lesson, and the check can fail."
import copy, json
import pytest
from prose_check import NOTES, check_notebook, lesson_notebooks, typed_measurements

LESSONS = lesson_notebooks()


@pytest.mark.parametrize('nb', LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_reads_as_a_lesson(nb):
    assert check_notebook(nb) == []


def _with(tmp_path, nb, change):
    d = json.loads(nb.read_text())
    change(d)
    p = tmp_path/nb.name
    p.write_text(json.dumps(d))
    return p

def _first_markdown(d):
    return next(c for c in d['cells'] if c['cell_type'] == 'markdown' and not ''.join(c['source']).startswith('#'))

@pytest.mark.parametrize('typed', ['the MSE model gains 1.57 dB over bicubic', 'it reached 98.7% on the held-out digits',
                                   'a PSNR of 25.46 on the held-out photos', 'the epoch took 54 s', 'mIoU 0.810 against 0.139'])
def test_a_planted_typed_number_fails(tmp_path, typed):
    nb = LESSONS[0]
    planted = _with(tmp_path, nb, lambda d: _first_markdown(d)['source'].append(f'\n\nAs measured, {typed}.\n'))
    assert any('typed measured value' in p for p in check_notebook(planted)), typed


@pytest.mark.parametrize('fine', ['the course trains at `lr=1e-3` with `pct_start=0.9`', 'crops of 128 px, batch 32, 10 epochs',
                                  'the course reached `99.52%` on full MNIST', 'seven training photos and 16 variants',
                                  'a loss of $W(p, q) = 0.5$'])
def test_settings_and_quoted_facts_pass(fine):
    assert typed_measurements(f'In this lesson {fine}.') == [], fine


def test_the_notes_section_is_exempt_and_the_rest_is_not(tmp_path):
    nb = LESSONS[0]
    def add_notes(d):
        d['cells'].append(dict(cell_type='markdown', id='abcd0001', metadata={}, source=[f'{NOTES}\n', 'Measured: 1.57 dB, 54 s.\n']))
    assert check_notebook(_with(tmp_path, nb, add_notes)) == []
    def drop_summary(d):
        for c in d['cells']:
            if c['cell_type'] == 'markdown': c['source'] = [l.replace('## Summary', '## Recap') for l in c['source']]
    assert any("no '## Summary'" in p for p in check_notebook(_with(tmp_path, nb, drop_summary)))


def test_a_machine_path_in_an_output_fails(tmp_path):
    nb = LESSONS[0]
    def plant(d):
        c = next(c for c in d['cells'] if c['cell_type'] == 'code')
        c.setdefault('outputs', []).append(dict(output_type='stream', name='stdout', text=['saved /work/main/results/x.png\n']))
    assert any('machine path' in p for p in check_notebook(_with(tmp_path, nb, plant)))


def test_too_many_words_fail(tmp_path):
    nb = LESSONS[0]
    long = _with(tmp_path, nb, lambda d: _first_markdown(d)['source'].append('\n' + 'word ' * 1600 + '\n'))
    assert any('words of markdown' in p for p in check_notebook(long))


@pytest.mark.parametrize('what', ['a long cell', 'a long output', 'a warning'])
def test_long_code_long_output_and_warnings_fail(tmp_path, what):
    nb = LESSONS[0]
    def plant(d):
        c = next(c for c in d['cells'] if c['cell_type'] == 'code' and not ''.join(c['source']).startswith('#|'))
        if what == 'a long cell': c['source'] = [f'x{i} = {i}\n' for i in range(31)]
        elif what == 'a long output': c['outputs'] = [dict(output_type='stream', name='stdout', text=[f'epoch {i}\n' for i in range(41)])]
        else: c['outputs'] = [dict(output_type='stream', name='stderr', text=['/x/fastai/learner.py:9: UserWarning: You are shadowing\n'])]
    found = check_notebook(_with(tmp_path, nb, plant))
    assert any({'a long cell': 'lines (at most 30)', 'a long output': 'output has 41 lines', 'a warning': 'shows a warning'}[what] in p
               for p in found), found
