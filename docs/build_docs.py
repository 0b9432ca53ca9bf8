"""Build the static documentation site from the executed notebooks, offline: `python docs/build_docs.py [SITE_DIR]`.

Quarto, nbdev's own renderer, cannot be installed offline, so this does what nbdev's renderer does, then hands the
pages to mkdocs (mkdocs-material, mkdocs-jupyter, mkdocstrings), which install from PyPI alone:

- each notebook becomes a page at nbdev's address (`05_wgan.ipynb` -> `wgan.html`, numeric prefix dropped), with
  `#| hide`, `#| default_exp` and `#| exporti` cells left out, the other directive lines stripped, and each
  `#| export` cell shown as nbdev's `show_doc` shows it: the signature and docstring of every public function and class
  it defines (with docments as a table), its code one click away in a closed `<details>`;
- beside each page, `wgan.html.md`: the page as markdown, as nbdev writes it; the `Docs:` line nbdev puts in each
  module's docstring points there;
- math is typeset by MathJax 3, copied into the site from a Python package (django-static-mathjax), never a CDN;
- code wraps instead of scrolling sideways (docs/assets/extra.css);
- the site works opened from disk: no directory URLs, and search runs from `file://` (mkdocs-material's offline
  plugin, with its iframe-worker shim shipped in docs/assets rather than fetched);
- the navigation puts the lessons first (each lesson with its helper notebooks), then the library foundations
  (the `00_*` notebooks), the API pages (mkdocstrings) and the notes in `docs/*.md`;
- the home page is README.md as it is, its links made to work on the site, and an index of every notebook (title and
  summary from each notebook's title cell) in place of a README section listing the notebooks, or after it all.

Stored outputs that show a machine's paths are reported (`machine_paths`), not hidden: the notebooks are the place to
fix them.
"""
import ast, copy, html, io, json, os, re, shutil, subprocess, sys, tokenize, tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent/'assets'
SRC = ROOT/'_docs_src'                  # assembled pages (generated, ignored by git)
CONFIG = ROOT/'_docs_src.yml'           # the generated mkdocs config (mkdocs wants it outside docs_dir)
PROJECT = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
GIT_URL = PROJECT.get('urls', {}).get('Repository', '').rstrip('/')
DOC_URL = PROJECT.get('urls', {}).get('Documentation', '').rstrip('/')
DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+):?(.*)$')
HIDDEN = {'hide', 'default_exp', 'exporti'}                 # cells nbdev's renderer leaves out
EXPORT = {'export', 'exp'}                                  # cells shown as show_doc (`exports` shows its code)
# A machine's own paths in a stored output: a home, a work tree or an installed package (temporary folders are fine).
MACHINE_PATH = re.compile(r'(?:/(?:work|home|Users|root|srv|mnt)/[\w.-]+/|[A-Za-z]:\\Users\\|\bsite-packages\b)')


# ----------------------------------------------------------------------------------------------------------- notebooks
@dataclass
class Notebook:
    path: Path
    cells: list
    meta: dict

    @classmethod
    def read(cls, path):
        nb = json.loads(path.read_text())
        return cls(path, nb['cells'], nb)

    @property
    def stem(self): return self.path.stem
    @property
    def page(self):
        "nbdev's page name (`nbdev.config.nbpath2html`): the numeric prefix dropped, lower case."
        return re.sub(r'^\d+[a-zA-Z0-9]*_', '', self.stem.lower())
    @property
    def html(self): return f'{self.page}.html'
    @property
    def module(self):
        "The module the notebook exports (`#| default_exp NAME`), or None."
        for c in self.cells:
            m = re.search(r'^\s*#\s*\|\s*default_exp\s+(\S+)', _src(c), re.M)
            if m: return m.group(1)
    def _title_cell(self):
        return next((_src(c) for c in self.cells if c['cell_type'] == 'markdown' and _src(c).startswith('# ')), '')
    @property
    def title(self): return (self._title_cell().splitlines() or [f'# {self.stem}'])[0][2:].strip()
    @property
    def summary(self):
        "The title cell's `> ...` lines."
        lines = [l[1:].strip() for l in self._title_cell().splitlines()[1:] if l.startswith('>')]
        return ' '.join(lines)
    @property
    def number(self): return int(re.match(r'\d+', self.stem).group())
    @property
    def is_lesson(self): return self.number > 0
    @property
    def is_main(self): return bool(re.match(r'^\d+_', self.stem))


def notebooks():
    nbs = [Notebook.read(p) for p in sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))]
    pages = {}
    for nb in nbs:
        if nb.page in pages or nb.page == 'index':
            raise SystemExit(f'{nb.path.name} and {pages.get(nb.page, "the home page")} would both be {nb.html}: rename one')
        pages[nb.page] = nb.path.name
    return nbs


def _src(cell): return ''.join(cell['source'])
def _text(x): return ''.join(x) if isinstance(x, list) else x


def directives(src):
    "nbdev's directives (`#| name args`) at the top of a cell, and the source without them."
    lines, ds = src.splitlines(), {}
    while lines and (m := DIRECTIVE.match(lines[0])):
        ds[m.group(1)] = m.group(2).strip(); lines.pop(0)
    return ds, '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------- show_doc
def _md_inline(s):
    "A docstring's or docment's markdown, inline: escaped, with `code`, **bold** and *emphasis*."
    s = html.escape(s, quote=False)
    s = re.sub(r'`([^`]+)`', r'<code>\1</code>', s)
    s = re.sub(r'\*\*([^*]+)\*\*', r'<strong>\1</strong>', s)
    return re.sub(r'(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])', r'<em>\1</em>', s)


def _comments(src):
    "Line number -> text of the comment on that line."
    try: toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError): return {}
    return {t.start[0]: t.string.lstrip('#').strip() for t in toks if t.type == tokenize.COMMENT}


def _seg(src, node):
    "A node's source as written (`2e-4`, not `0.0002`), on one line."
    return ' '.join((ast.get_source_segment(src, node) or ast.unparse(node)).split())


def _params(args: ast.arguments, comments, src, drop_first=False):
    "`(name, annotation, default, docment)` per parameter, the docment being the comment on the line it ends on."
    pos = args.posonlyargs + args.args
    defaults = [None] * (len(pos) - len(args.defaults)) + list(args.defaults)
    items = list(zip(pos, defaults))[1 if drop_first else 0:]
    if args.vararg: items.append((args.vararg, None))
    items += list(zip(args.kwonlyargs, args.kw_defaults))
    if args.kwarg: items.append((args.kwarg, None))
    ends = [max(a.end_lineno, d.end_lineno if d is not None else 0) for a, d in items]
    res = []
    for i, (a, d) in enumerate(items):
        last_on_line = i == len(items) - 1 or ends[i + 1] != ends[i]
        name = ('*' if a is args.vararg else '**' if a is args.kwarg else '') + a.arg
        res.append((name, _seg(src, a.annotation) if a.annotation else '', _seg(src, d) if d is not None else '',
                    comments.get(ends[i], '') if last_on_line else ''))
    return res


def _signature(name, params, ret=''):
    "`name(a:int=1, b=None) -> T`, with a `*` before the keyword-only ones."
    return f'{name}({", ".join(p + (":" + a if a else "") + ("=" + d if d else "") for p, a, d, _ in params)})' + \
        (f' -> {ret}' if ret else '')


def _fields(cls: ast.ClassDef, comments, src):
    "A dataclass's fields as parameters."
    res = []
    for n in cls.body:
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and 'ClassVar' not in ast.unparse(n.annotation):
            res.append((n.target.id, _seg(src, n.annotation), _seg(src, n.value) if n.value else '',
                        comments.get(n.end_lineno, '')))
    return res


class ShowDoc:
    "nbdev's show_doc of one function or class: its signature, docstring, docments, and the public methods of a class."
    def __init__(self, name, sig, doc, params, methods=()):
        self.name, self.sig, self.doc, self.params, self.methods = name, sig, (doc or '').strip(), params, list(methods)

    def html(self):
        "As HTML with no blank line (a markdown cell keeps it whole): the signature, the docstring, the docments table."
        doc = ''.join(f'<p>{_md_inline(p)}</p>' for p in re.split(r'\n\s*\n', self.doc) if p.strip())
        table = ''
        if any(p[3] for p in self.params):
            table = ('<table class="showdoc-params"><thead><tr><th></th><th>Type</th><th>Default</th><th>Details</th></tr></thead><tbody>'
                     + ''.join(f'<tr><td><strong>{html.escape(p)}</strong></td><td>{html.escape(a)}</td><td>{html.escape(d)}</td>'
                               f'<td>{_md_inline(c)}</td></tr>' for p, a, d, c in self.params) + '</tbody></table>')
        methods = ''
        if self.methods:
            methods = '<ul class="showdoc-methods">' + ''.join(
                f'<li><code>{html.escape(sig)}</code>' + (f': {_md_inline(doc)}' if doc else '') + '</li>' for sig, doc in self.methods) + '</ul>'
        return (f'<div class="showdoc" id="{html.escape(self.name)}"><pre class="showdoc-sig"><code>{html.escape(self.sig)}</code></pre>'
                f'{doc}{table}{methods}</div>')

    def markdown(self):
        "As nbdev's `.html.md` pages write it."
        out = [f'### `{self.name}`', f'```python\n{self.sig}\n```']
        if self.doc: out.append(self.doc)
        if any(p[3] for p in self.params):
            cell = lambda x: x.replace('|', '\\|')
            out.append('\n'.join(['| | Type | Default | Details |', '|---|---|---|---|'] +
                                 [f'| **{cell(p)}** | {cell(a)} | {cell(d)} | {cell(c)} |' for p, a, d, c in self.params]))
        if self.methods: out.append('\n'.join(f'- `{sig}`' + (f': {doc}' if doc else '') for sig, doc in self.methods))
        return '\n\n'.join(out)


def _decorators(n): return [ast.unparse(d) for d in n.decorator_list]


def show_docs(src):
    """A `ShowDoc` for each public function and class an exported cell defines, as nbdev's `show_doc` shows them.
    A `@patch`ed function is shown as `Class.name`; a class's public methods are listed after it."""
    try: tree = ast.parse(src)
    except SyntaxError: return []
    comments, res = _comments(src), []
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if n.name.startswith('_'): continue
            name, drop = n.name, False
            if any(d.split('(')[0].split('.')[-1] == 'patch' for d in _decorators(n)):
                first = (n.args.posonlyargs + n.args.args)[:1]
                cls = ast.unparse(first[0].annotation) if first and first[0].annotation else ''
                name, drop = (f'{cls}.{n.name}' if cls else n.name), True
            params = _params(n.args, comments, src, drop)
            res.append(ShowDoc(name, _signature(name, params, _seg(src, n.returns) if n.returns else ''), ast.get_docstring(n), params))
        elif isinstance(n, ast.ClassDef) and not n.name.startswith('_'):
            init = next((b for b in n.body if isinstance(b, ast.FunctionDef) and b.name == '__init__'), None)
            if any('dataclass' in d for d in _decorators(n)): params = _fields(n, comments, src)
            elif init: params = _params(init.args, comments, src, drop_first=True)
            else: params = None
            bases = ', '.join(ast.unparse(b) for b in n.bases)
            sig = _signature(n.name, params) if params is not None else f'class {n.name}' + (f'({bases})' if bases else '')
            methods = [(f'{n.name}.{m.name}' if 'property' in _decorators(m) else
                        _signature(f'{n.name}.{m.name}', _params(m.args, comments, src, 'staticmethod' not in _decorators(m))),
                        (ast.get_docstring(m) or '').strip())
                       for m in n.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not m.name.startswith('_')]
            res.append(ShowDoc(n.name, sig, ast.get_docstring(n), params or [], methods))
    return res


def _assigned(src):
    "Names a cell assigns at its top level."
    try: tree = ast.parse(src)
    except SyntaxError: return []
    return [t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)]


def _only_imports(src):
    try: tree = ast.parse(src)
    except SyntaxError: return False
    return all(isinstance(n, (ast.Import, ast.ImportFrom)) or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
               for n in tree.body)


def _highlight(code):
    "Python, highlighted as mkdocs-material styles it, on one line of HTML (newlines as `&#10;`), so that no blank line ends the block."
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    out = highlight(code, PythonLexer(), HtmlFormatter(cssclass='highlight', wrapcode=True)).rstrip('\n')
    return out.replace('\n', '&#10;')


def export_cell(src):
    """The markdown cell that stands for an `#| export` cell: show_doc of what it defines, its code in a closed `<details>`;
    the cell's metadata keeps the markdown version for the `.html.md` page."""
    if _only_imports(src): return None
    docs = show_docs(src)
    names = [d.name for d in docs] or _assigned(src)
    label = 'Source' if docs else 'Source: ' + ', '.join(f'<code>{html.escape(n)}</code>' for n in names[:4]) + (', …' if len(names) > 4 else '')
    parts = [f'### `{d.name}`\n\n{d.html()}' for d in docs]
    parts.append(f'<details class="showdoc-source"><summary>{label}</summary>{_highlight(src)}</details>')
    md = '\n\n'.join(d.markdown() for d in docs)
    return dict(cell_type='markdown', metadata={'lessons_docs': {'markdown': md}}, source='\n\n'.join(parts))


# ----------------------------------------------------------------------------------------------------------- links
def _page_of(repo_path: Path, nbs, extra):
    "The site page (docs_dir path) a repository file is shown as, or None."
    if repo_path == Path('README.md'): return 'index.md'
    for nb in nbs:
        if repo_path == Path('nbs')/nb.path.name: return f'{nb.page}.ipynb'
    if repo_path in extra: return extra[repo_path]
    return None


def _usable(p: Path) -> bool:
    "The file is in the work tree and not ignored by git (so it is in a fresh clone too)."
    if not (ROOT/p).is_file(): return False
    r = subprocess.run(['git', 'check-ignore', '-q', str(p)], cwd=ROOT, capture_output=True)
    return r.returncode != 0


def fix_links(md: str, where: Path, nbs, extra, html_targets=False, warn=print):
    """Make the relative links and images of markdown from repository file `where` work on the site: a notebook, README
    or docs page links its page; an image is copied into the site; any other file of the repository links GitHub; a
    link to a file that is not in the repository is left as text, with a warning. `html_targets`: write `page.html`
    (in a notebook, whose links mkdocs does not rewrite) instead of the docs_dir path."""
    fence = re.compile(r'^(```|~~~).*?^\1', re.M | re.S)

    def target(url, is_image):
        if re.match(r'^([a-z][\w+.-]*:|#|/)', url, re.I): return url
        path, _, frag = url.partition('#')
        rp = Path(os.path.normpath((where.parent/path).as_posix()))
        if str(rp).startswith('..'): return None
        page = _page_of(rp, nbs, extra)
        if page:
            if html_targets: page = re.sub(r'\.(md|ipynb)$', '.html', page)
            return page + (f'#{frag}' if frag else '')
        if (ROOT/rp).is_dir() and GIT_URL: return f'{GIT_URL}/tree/main/{rp.as_posix()}'
        if not _usable(rp): return None
        if is_image or rp.suffix.lower() in ('.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp'):
            dest = SRC/'files'/rp; dest.parent.mkdir(parents=True, exist_ok=True); shutil.copy(ROOT/rp, dest)
            return f'files/{rp.as_posix()}'
        return f'{GIT_URL}/blob/main/{rp.as_posix()}' if GIT_URL else None

    def fix(text):
        def link(m):
            bang, label, url, title = m.group(1), m.group(2), m.group(3), m.group(4) or ''
            t = target(url, bool(bang))
            if t is None:
                unlinked.append(url)
                return label if not bang else f'*{label}*'
            return f'{bang}[{label}]({t}{title})'
        text = re.sub(r'(!?)\[([^\]]*)\]\(([^)\s]+)(\s+"[^"]*")?\)', link, text)

        def ref(m):                                   # a reference definition: `[name]: url`
            t = target(m.group(2), False)
            if t is None: unlinked.append(m.group(2))
            return f'{m.group(1)}{t if t is not None else "#"}'
        text = re.sub(r'(?m)^(\s{0,3}\[[^\]]+\]:\s*)(\S+)', ref, text)

        def attr(m):
            t = target(m.group(2), m.group(1) == 'src')
            if t is None: unlinked.append(m.group(2))
            return f'{m.group(1)}="{t if t is not None else "#"}"'
        return re.sub(r'\b(src|href)="([^"]+)"', attr, text)

    out, last, unlinked = [], 0, []
    for m in fence.finditer(md):
        out += [fix(md[last:m.start()]), m.group()]; last = m.end()
    out.append(fix(md[last:]))
    if unlinked:
        warn(f'warning: {where} links {len(unlinked)} file(s) that are not in the repository, shown as text: '
             + ', '.join(list(dict.fromkeys(unlinked))[:5]) + (' ...' if len(set(unlinked)) > 5 else ''))
    return ''.join(out)


# ----------------------------------------------------------------------------------------------------------- pages
def page_notebook(nb: Notebook, nbs, extra, warn=print) -> dict:
    "The notebook as nbdev's renderer shows it (see the module docstring)."
    cells = []
    for c in nb.cells:
        c = copy.deepcopy(c)
        if c['cell_type'] == 'markdown':
            c['source'] = fix_links(_src(c), Path('nbs')/nb.path.name, nbs, extra, html_targets=True, warn=warn)
            cells.append(c)
            if _src(c).startswith('# '):              # after the title: where the page comes from
                where = [f'[`nbs/{nb.path.name}`]({GIT_URL}/blob/main/nbs/{nb.path.name})' if GIT_URL else f'`nbs/{nb.path.name}`']
                if nb.module: where.append(f'exports [`lessons_lib.{nb.module}`](api/{nb.module}.html)')
                opens = ''
                if GIT_URL.startswith('https://github.com/') and re.match(r'0[1-5]_', nb.path.name):   # a lesson: step through it on a GPU
                    gh = f"{GIT_URL.removeprefix('https://github.com/')}/blob/main/nbs/{nb.path.name}"
                    opens = (f' Open it on a GPU: [Colab](https://colab.research.google.com/github/{gh}), '
                             f'[Kaggle](https://kaggle.com/kernels/welcome?src=https://github.com/{gh}).')
                cells.append(dict(cell_type='markdown', metadata={}, source=f'<span class="nb-source">From {", ".join(where)}.{opens}</span>'))
            continue
        if c['cell_type'] != 'code': cells.append(c); continue
        ds, code = directives(_src(c))
        if HIDDEN & set(ds): continue
        if EXPORT & set(ds):
            if cell := export_cell(code): cells.append(cell)
            continue
        c['source'] = code
        for o in c.get('outputs', []):                 # a Markdown or HTML output's links, as a markdown cell's
            for k in ('text/markdown', 'text/html'):
                if k in o.get('data', {}):
                    o['data'][k] = fix_links(_text(o['data'][k]), Path('nbs')/nb.path.name, nbs, extra, html_targets=True, warn=warn)
        if ds.get('echo') == 'false': c.setdefault('metadata', {}).setdefault('tags', []).append('remove_input')
        if ds.get('output') == 'false': c['outputs'] = []
        if not code.strip() and not c.get('outputs'): continue
        cells.append(c)
    return {**nb.meta, 'cells': cells}


def page_markdown(nb: Notebook, processed: dict) -> str:
    "The page as markdown (`wgan.html.md`), as nbdev writes it beside each page: prose, code, text outputs."
    out = [f'<!-- {nb.html}: generated from nbs/{nb.path.name} -->']
    for c in processed['cells']:
        src = _src(c)
        if c['cell_type'] == 'markdown':
            out.append(c['metadata']['lessons_docs']['markdown'] if 'lessons_docs' in c.get('metadata', {}) else src.strip())
        elif c['cell_type'] == 'code':
            out.append(f'```python\n{src}\n```')
            for o in c.get('outputs', []):
                t = _text(o.get('text', '')) if o.get('output_type') == 'stream' else \
                    _text(o.get('data', {}).get('text/markdown', '')) or _text(o.get('data', {}).get('text/plain', ''))
                if o.get('data', {}).get('text/markdown'): out.append(t.strip())
                elif t.strip() and not any(k.startswith('image/') for k in o.get('data', {})): out.append(f'```\n{t.rstrip()}\n```')
    return '\n\n'.join(o for o in out if o) + '\n'


def machine_paths(nb: Notebook):
    "`(cell number, line)` of each stored output line that shows a machine's own path."
    res = []
    for i, c in enumerate(nb.cells):
        for o in c.get('outputs', []):
            texts = [_text(o.get('text', ''))] + [_text(v) for k, v in o.get('data', {}).items() if k.startswith('text/')]
            texts += [_text(o.get('traceback', ''))]
            for line in '\n'.join(texts).splitlines():
                if MACHINE_PATH.search(line): res.append((i, line.strip()[:160]))
    return res


def home(readme: str, nbs, extra) -> str:
    "README.md with its links made to work on the site, and the notebook index in place of its notebook table."
    md = fix_links(readme, Path('README.md'), nbs, extra)
    index = notebook_index(nbs)
    sections = re.split(r'(?m)^(?=## )', md)
    for i, s in enumerate(sections):
        if s.startswith('## ') and 'notebook' in s.splitlines()[0].lower() and sum(nb.path.name in s for nb in nbs) > len(nbs) // 2:
            sections[i] = index + '\n'
            return ''.join(sections)
    return md.rstrip() + '\n\n' + index


def notebook_index(nbs) -> str:
    "Every notebook, lessons first (each with its helpers), then the foundations: link, title and summary."
    def row(nb):
        mod = f' ([`lessons_lib.{nb.module}`](api/{nb.module}.md))' if nb.module else ''
        return f'| [`{nb.path.name}`]({nb.page}.ipynb) | **{_md_cell(nb.title)}**: {_md_cell(nb.summary)}{mod} |'
    lines = ['## The notebooks', '',
             'Each lesson\'s notebook comes with the helper notebooks it builds on; the library foundations are the '
             'modules every lesson uses.', '']
    for title, group in nav_groups(nbs):
        lines += [f'### {title}', '', '| notebook | what it teaches |', '|---|---|'] + [row(nb) for nb in group] + ['']
    return '\n'.join(lines)


def _md_cell(s): return s.replace('|', '\\|').replace('\n', ' ')


def nav_groups(nbs):
    "`[(title, notebooks)]`: one group per lesson (its notebook, then its helpers), then 'Library foundations'."
    groups = []
    for n in sorted({nb.number for nb in nbs if nb.is_lesson}):
        group = sorted((nb for nb in nbs if nb.number == n), key=lambda nb: (not nb.is_main, nb.stem))
        main = group[0]
        title = main.title.split(':')[0] if main.is_main and main.title.lower().startswith('lesson') else f'Lesson {n}'
        groups.append((title, group))
    groups.append(('Library foundations', [nb for nb in nbs if not nb.is_lesson]))
    return groups


def _nav_title(s): return s.replace('`', '')


def assemble(warn=print):
    "Write `_docs_src/` and return the mkdocs nav and the processed notebooks."
    shutil.rmtree(SRC, ignore_errors=True); (SRC/'api').mkdir(parents=True); (SRC/'assets').mkdir()
    nbs = notebooks()
    notes = [p for p in sorted((ROOT/'docs').glob('*.md'), key=lambda p: (p.stem not in ('performance', 'contributing'), p.stem))]
    extra = {p.relative_to(ROOT): p.name for p in notes}
    for p in notes: (SRC/p.name).write_text(fix_links(p.read_text(), p.relative_to(ROOT), nbs, extra, warn=warn))
    (SRC/'index.md').write_text(home((ROOT/'README.md').read_text(), nbs, extra))
    processed, api = {}, []
    for nb in nbs:
        processed[nb.page] = page_notebook(nb, nbs, extra, warn)
        (SRC/f'{nb.page}.ipynb').write_text(json.dumps(processed[nb.page]))
        if nb.module:
            (SRC/'api'/f'{nb.module}.md').write_text(
                f'# lessons_lib.{nb.module}\n\nExported from [`{nb.path.name}`](../{nb.page}.ipynb).\n\n'
                f'::: lessons_lib.{nb.module}\n    options:\n      show_source: false\n      members_order: source\n')
            api.append({f'lessons_lib.{nb.module}': f'api/{nb.module}.md'})
        for cell, line in machine_paths(nb):
            warn(f'warning: nbs/{nb.path.name} cell {cell} shows a machine path in its stored output: {line}')
    nav = [{'Home': 'index.md'}]
    lessons = [{title: [{_nav_title(nb.title): f'{nb.page}.ipynb'} for nb in group]} for title, group in nav_groups(nbs)[:-1]]
    nav += [{'Lessons': lessons}, {'Library foundations': [{_nav_title(nb.title): f'{nb.page}.ipynb'} for nb in nav_groups(nbs)[-1][1]]},
            {'API reference': api}]
    if notes: nav.append({'Notes': [{_nav_title(_md_title(p)): p.name} for p in notes]})
    _copy_assets()
    return nav, nbs, processed


def _md_title(p: Path):
    return next((l[2:].strip() for l in p.read_text().splitlines() if l.startswith('# ')), p.stem.replace('_', ' ').capitalize())


def mathjax_dir() -> Path:
    "MathJax 3's browser bundles, from the django-static-mathjax wheel (MathJax 3.2.2 as published, no Django needed)."
    import importlib.util
    spec = importlib.util.find_spec('mathjax')
    d = Path(next(iter(spec.submodule_search_locations)))/'static'/'mathjax'/'es5' if spec and spec.submodule_search_locations else None
    if d is None or not (d/'tex-svg-full.js').is_file():
        raise SystemExit("MathJax is missing: `pip install -e '.[dev]'` installs it (the django-static-mathjax package)")
    return d


def _copy_assets():
    shutil.copytree(ASSETS, SRC/'assets', dirs_exist_ok=True)
    (SRC/'assets'/'mathjax').mkdir(exist_ok=True)
    shutil.copy(mathjax_dir()/'tex-svg-full.js', SRC/'assets'/'mathjax'/'tex-svg-full.js')


def config(nav) -> dict:
    return dict(
        site_name='lessons_lib', site_description="fast.ai lesson 7, skip connections: notebooks and library",
        site_url=DOC_URL + '/' if DOC_URL else None,        # no repo_url: the theme would ask GitHub's API for its stars
        docs_dir=str(SRC), site_dir=None, use_directory_urls=False, nav=nav,
        theme=dict(name='material', font=False, features=['navigation.sections', 'navigation.expand', 'navigation.top', 'toc.follow']),
        plugins=['search', 'offline',
                 {'mkdocs-jupyter': dict(include_source=False, execute=False, ignore_h1_titles=True, include_requirejs=False, no_prompt=True,
                                         custom_mathjax_url='assets/mathjax/tex-svg-full.js', remove_tag_config=dict(remove_input_tags=['remove_input']))},
                 dict(mkdocstrings=dict(handlers=dict(python=dict(paths=[str(ROOT)], options=dict(docstring_style=None, show_if_no_docstring=True)))))],
        markdown_extensions=['tables', 'admonition', 'attr_list', 'md_in_html', 'pymdownx.details', 'pymdownx.superfences',
                             {'pymdownx.arithmatex': dict(generic=True)}, {'toc': dict(permalink=True)}],
        extra=dict(polyfills=['assets/iframe-worker-shim.js']),     # the offline plugin would fetch it from a CDN
        extra_css=['assets/extra.css'],
        extra_javascript=['assets/mathjax-config.js', 'assets/mathjax/tex-svg-full.js'],
        validation=dict(links=dict(not_found='warn', absolute_links='warn', unrecognized_links='warn')))


_NBCONVERT_MATHJAX = re.compile(r'<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->', re.S)


def finish(site: Path, nbs, processed):
    "After mkdocs: drop nbconvert's own MathJax loader from each page (the site loads MathJax once, from its assets); write the `.html.md` pages."
    for f in site.rglob('*.html'):
        t = f.read_text()
        if '<!-- Load mathjax -->' in t: f.write_text(_NBCONVERT_MATHJAX.sub('', t))
    for nb in nbs: (site/f'{nb.html}.md').write_text(page_markdown(nb, processed[nb.page]))


def main(site=None):
    site = Path(site or ROOT/'_site').resolve()
    nav, nbs, processed = assemble()
    cfg = config(nav); cfg['site_dir'] = str(site)
    CONFIG.write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}, indent=1))      # JSON is YAML
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '-f', str(CONFIG)], check=True, cwd=ROOT,
                   env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'})
    finish(site, nbs, processed)
    print(f'site in {site} ({sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20:.1f} MB); '
          f'open {site/"index.html"}, or serve it: python -m http.server -d {_short(site)}')


def _short(p: Path): return os.path.relpath(p) if p.is_relative_to(Path.cwd()) else str(p)


if __name__ == '__main__': main(*sys.argv[1:])
