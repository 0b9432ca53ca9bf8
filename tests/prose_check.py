"""The lesson book's prose rules, checked on the lesson notebooks (`nbs/0[1-5]_*.ipynb` and `nbs/01b_landscape.ipynb`).

Run as a script for a report (`python tests/prose_check.py [notebooks...]`); `tests/test_prose.py` runs the same check.

The rules (docs/contributing.md, "Writing a lesson"):
1. A measured value is never typed in a lesson's markdown: the run prints it (a code cell's output, or
   `Markdown(f"...")`). Typed, it goes stale at the next re-execution. The check flags, in markdown outside
   code spans (`...`) and equations ($...$):
   - a number with a unit of measure: dB, %, s, seconds, minutes, ms, MB, GB, GiB, MiB;
   - a decimal number within a few words after a metric's name (PSNR, SSIM, accuracy, mIoU, IoU, loss,
     sharpness, blockiness, Fréchet, FD, confident, valley), or just before dB/PSNR/SSIM/accuracy/mIoU.
   Course settings and facts from papers may stay typed: write them in a code span (`lr=1e-3`, `pct_start=0.9`)
   or in words.
2. What was tried while building a lesson goes to its last section, a markdown cell that starts with
   "## Notes from building this lesson"; everything from there on is exempt from rules 1 and 3.
3. At most MAX_WORDS words of markdown in a lesson before that section.
4. Every lesson has a "## Summary" and an "## Exercises" section.
5. No output of any lesson shows a machine's absolute path (/work/, /home/..., /root/, /tmp/, /Users/...).
6. No code cell of a lesson is over MAX_CODE_LINES lines: a longer piece of code is an exported function (in the
   lesson's module, with a docstring) or several cells, each read before the next.
7. No output of a lesson is over MAX_OUTPUT_LINES lines of text (an epoch log as a table or a plot, not a wall);
   an HTML table counts as its rendering, not as lines.
8. No warning in a lesson's stored outputs (`UserWarning`, `FutureWarning`, ...): a warning the lesson expects is
   filtered in its cell, with a comment saying why.
"""
from __future__ import annotations
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_WORDS = 1500
MAX_CODE_LINES, MAX_OUTPUT_LINES = 30, 40
WARNING = re.compile(r'\b\w*Warning:')
NOTES = '## Notes from building this lesson'
UNITS = r'(?:dB|%|s|sec|seconds?|minutes?|ms|MB|GB|GiB|MiB)'
METRICS = r'(?:PSNR|SSIM|accuracy|mIoU|IoU|loss|sharpness|blockiness|Fréchet|FD|confident|valley)'
MEASURED = [
    re.compile(rf'(?<![\w.\-/])\d[\d,]*(?:\.\d+)?\s?{UNITS}(?![\w/])'),
    re.compile(rf'\b{METRICS}\b[^.\n:;]{{0,30}}?(?<![\w.])\d*\.\d+'),
    re.compile(r'(?<![\w.])\d+\.\d+\s?[^.\n\d]{0,12}?\b(?:dB|PSNR|SSIM|accuracy|mIoU)\b'),
]
PATH = re.compile(r'(?:/work/|/home/[\w.-]+|/root/|/tmp/|/Users/[\w.-]+|[A-Z]:\\\\Users)')
CODE_SPAN = re.compile(r'```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$', re.S)

def lesson_notebooks(root=ROOT) -> list[Path]:
    nbs = Path(root)/'nbs'
    return sorted([*nbs.glob('0[1-5]_*.ipynb'), nbs/'01b_landscape.ipynb'])

def _text(source) -> str: return ''.join(source) if isinstance(source, list) else source

def lesson_markdown(nb: dict) -> tuple[list[str], list[str]]:
    "(markdown cells before the notes section, markdown cells of the notes section)."
    before, notes, in_notes = [], [], False
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        s = _text(c['source'])
        if s.lstrip().startswith(NOTES): in_notes = True
        (notes if in_notes else before).append(s)
    return before, notes

def typed_measurements(md: str) -> list[str]:
    "The typed measured values in markdown `md` (rule 1), each with a little context."
    plain = CODE_SPAN.sub(lambda m: ' ' * len(m.group()), md)
    spans = sorted((m.start(), m.end()) for rx in MEASURED for m in rx.finditer(plain))
    merged = []
    for a, b in spans:                                  # one hit per typed value, however many rules it breaks
        if merged and a <= merged[-1][1]: merged[-1][1] = max(merged[-1][1], b)
        else: merged.append([a, b])
    return [' '.join(plain[max(0, a - 30):b + 10].split()) for a, b in merged]

def words(texts) -> int: return sum(len(t.split()) for t in texts)     # as `wc -w` counts them

def output_text(c) -> str:
    out = []
    for o in c.get('outputs', []):
        out.append(_text(o.get('text', '')))
        for k, v in o.get('data', {}).items():
            if k.startswith('text/') or k.endswith('json'): out.append(_text(v) if not isinstance(v, dict) else json.dumps(v))
        out.append(' '.join(o.get('traceback', [])))
    return '\n'.join(out)

def output_lines(c) -> int:
    "Lines of text a code cell's outputs show: streams and plain text (an output with an HTML form is shown as that)."
    n = 0
    for o in c.get('outputs', []):
        if o.get('output_type') == 'stream': n += len(_text(o.get('text', '')).splitlines())
        elif 'text/html' not in o.get('data', {}) and 'image/png' not in o.get('data', {}):
            n += len(_text(o.get('data', {}).get('text/plain', '')).splitlines())
    return n

def check_notebook(path) -> list[str]:
    "Every broken rule of the lesson notebook at `path`, one line each (none: it reads as a lesson)."
    nb = json.loads(Path(path).read_text())
    name, problems = Path(path).name, []
    before, notes = lesson_markdown(nb)
    for md in before:
        for h in typed_measurements(md): problems.append(f"{name}: a typed measured value (print it from the run): ...{h}...")
    n = words(before)
    if n > MAX_WORDS: problems.append(f"{name}: {n} words of markdown before '{NOTES}' (at most {MAX_WORDS})")
    heads = [l.strip() for md in before for l in md.splitlines() if l.startswith('#')]
    for sec in ('## Summary', '## Exercises'):
        if not any(h.startswith(sec) for h in heads): problems.append(f"{name}: no '{sec}' section")
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code': continue
        if m := PATH.search(output_text(c)): problems.append(f"{name}: cell {i}'s output shows a machine path ({m.group()}...)")
        if (k := len(_text(c['source']).splitlines())) > MAX_CODE_LINES:
            problems.append(f"{name}: code cell {i} has {k} lines (at most {MAX_CODE_LINES})")
        if (k := output_lines(c)) > MAX_OUTPUT_LINES: problems.append(f"{name}: cell {i}'s output has {k} lines (at most {MAX_OUTPUT_LINES})")
        if m := WARNING.search(output_text(c)): problems.append(f"{name}: cell {i}'s output shows a warning ({m.group()}...)")
    return problems

def report(paths) -> int:
    bad = 0
    for p in paths:
        nb = json.loads(Path(p).read_text())
        before, notes = lesson_markdown(nb)
        probs = check_notebook(p)
        print(f"{Path(p).name}: {words(before)} words before the notes, {words(notes)} in them; {len(probs)} problems")
        for q in probs: print('  ' + q)
        bad += len(probs)
    return bad

if __name__ == '__main__':
    sys.exit(1 if report([Path(a) for a in sys.argv[1:]] or lesson_notebooks()) else 0)
