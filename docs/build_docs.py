"""Build the static documentation site from the executed notebooks, offline: `python docs/build_docs.py [SITE_DIR]`.

It assembles `_docs_src/` (a home page from README.md's lesson table, one page per notebook with its stored outputs,
one API page per module of lessons_lib) and runs mkdocs (mkdocs-material, mkdocs-jupyter, mkdocstrings) on it.
Quarto, nbdev's own renderer, cannot be installed offline; these install from PyPI alone.
"""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT/'_docs_src'                  # assembled pages (generated, ignored by git)
CONFIG = ROOT/'_docs_src.yml'           # the generated mkdocs config (mkdocs wants it outside docs_dir)


def _title(nb: Path) -> str:
    "The notebook's `# Title` cell."
    for c in json.loads(nb.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown' and src.startswith('# '): return src.splitlines()[0][2:].strip()
    return nb.stem


def _module(nb: Path):
    "The module a notebook exports (`#| default_exp NAME`), or None."
    for c in json.loads(nb.read_text())['cells']:
        m = re.search(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source']))
        if m: return m.group(1)
    return None


def _home(readme: str) -> str:
    "The README's opening paragraph and its lesson table, as the site's home page."
    intro = readme.split('\n## ')[0]
    table = next(s for s in readme.split('\n## ') if s.startswith('The notebooks'))
    return intro + '\n\n## ' + table.replace('`nbs/', '`').rstrip() + '\n'


def assemble() -> dict:
    "Write `_docs_src/` and return the mkdocs nav."
    shutil.rmtree(SRC, ignore_errors=True); (SRC/'lessons').mkdir(parents=True); (SRC/'api').mkdir()
    (SRC/'index.md').write_text(_home((ROOT/'README.md').read_text()))
    lessons, api = [], []
    for nb in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        shutil.copy(nb, SRC/'lessons'/nb.name)
        lessons.append({f'{nb.stem}: {_title(nb)}': f'lessons/{nb.name}'})
        mod = _module(nb)
        if mod:
            (SRC/'api'/f'{mod}.md').write_text(f'# lessons_lib.{mod}\n\nExported from [`{nb.name}`](../lessons/{nb.stem}/).\n\n'
                                                f'::: lessons_lib.{mod}\n    options:\n      show_source: false\n      members_order: source\n')
            api.append({f'lessons_lib.{mod}': f'api/{mod}.md'})
    return [{'Home': 'index.md'}, {'Notebooks': lessons}, {'API': api}]


def config(nav) -> dict:
    return dict(site_name='lessons_lib', site_description="fast.ai lesson 7, skip connections: notebooks and library",
                docs_dir=str(SRC), site_dir=None, use_directory_urls=True, nav=nav,
                theme=dict(name='material', font=False, features=['navigation.sections']),
                plugins=['search', dict(**{'mkdocs-jupyter': dict(include_source=True, execute=False, ignore_h1_titles=True)}),
                         dict(mkdocstrings=dict(handlers=dict(python=dict(paths=[str(ROOT)], options=dict(docstring_style=None, show_if_no_docstring=True)))))],
                markdown_extensions=['tables', 'admonition'])


def main(site=None):
    site = Path(site or ROOT/'_site').resolve()
    nav = assemble()
    cfg = config(nav); cfg['site_dir'] = str(site)
    CONFIG.write_text(json.dumps(cfg, indent=1))      # JSON is YAML
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '-f', str(CONFIG)], check=True, cwd=ROOT, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'})
    print(f'site in {site} ({sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20:.1f} MB); open {site/"index.html"}')


if __name__ == '__main__': main(*sys.argv[1:])
