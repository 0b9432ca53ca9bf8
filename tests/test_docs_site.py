"""The docs site, built offline from the executed notebooks (docs/build_docs.py) and opened from disk (`file://`, as
README says to read it) in headless Chromium: it must read as nbdev's own site does. Every lesson page shows its
figures and no traceback; equations are typeset; nbdev's hidden cells and directives are not shown, and an exported
function shows as its signature and docstring, not its body; code wraps rather than scrolling sideways; every link works
from disk, and so does search; the lessons come first in the navigation and the home page links every notebook; the
`Docs:` link nbdev writes into each module's docstring is a page of the site; no stored output shows a machine's paths.
A screenshot of each notebook page is kept in `_site_screenshots/` (an artifact of the run).
`LESSONS_DOCS_SITE=_site pytest tests/test_docs_site.py` tests a site already built (`make docs`) instead of building one."""
import ast, importlib, inspect, json, os, re, shutil, subprocess, sys, time, tomllib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
import pytest
from conftest import REPO

SHOTS = REPO/'_site_screenshots'
DOC_URL = tomllib.loads((REPO/'pyproject.toml').read_text())['project']['urls']['Documentation'].rstrip('/')
MACHINE_PATH = re.compile(r'(?:/(?:work|home|Users|root|srv|mnt)/[\w.-]+/|[A-Za-z]:\\Users\\|\bsite-packages\b)')


def _chromium():
    "Paths of chromium and chromedriver, installing Debian's packages with apt when they are missing (or skipping, saying why)."
    have = lambda: shutil.which('chromium') and shutil.which('chromedriver')
    if not have():
        if not shutil.which('apt-get'): pytest.skip('chromium is not installed and apt-get is not available to install it')
        if os.geteuid() != 0: pytest.skip('chromium is not installed, and installing it with apt-get needs root')
        env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
        r = subprocess.run(['apt-get', 'install', '-y', '-q', 'chromium', 'chromium-driver'], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            subprocess.run(['apt-get', 'update', '-q'], capture_output=True, env=env)
            r = subprocess.run(['apt-get', 'install', '-y', '-q', 'chromium', 'chromium-driver'], capture_output=True, text=True, env=env)
        if r.returncode != 0 or not have(): pytest.skip(f'could not install chromium with apt-get: {r.stderr[-300:]}')
    return shutil.which('chromium'), shutil.which('chromedriver')


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The folder of the site built by `make docs`' script (built once for this module), or `$LESSONS_DOCS_SITE`."
    if os.environ.get('LESSONS_DOCS_SITE'): return Path(os.environ['LESSONS_DOCS_SITE']).resolve()
    d = tmp_path_factory.mktemp('site')
    r = subprocess.run([sys.executable, str(REPO/'docs'/'build_docs.py'), str(d)], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return d


@pytest.fixture(scope='module')
def browser():
    chrome, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions(); opts.binary_location = chrome
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync', '--window-size=1280,2000'):
        opts.add_argument(a)
    b = webdriver.Chrome(service=Service(driver_path), options=opts)
    b.set_page_load_timeout(120); b.set_script_timeout(60)
    yield b
    b.quit()


def _notebooks(): return sorted((REPO/'nbs').glob('[0-9]*.ipynb'))
def _cells(nb: Path): return json.loads(nb.read_text())['cells']
def _src(c): return ''.join(c['source'])

def _page(nb: Path) -> str:
    "The notebook's page, at nbdev's address for it (`05_wgan.ipynb` -> `wgan.html`)."
    from nbdev.config import nbpath2html
    return nbpath2html(nb.name).name

def _module(nb: Path):
    return next((m.group(1) for c in _cells(nb) if (m := re.search(r'#\|\s*default_exp\s+(\S+)', _src(c)))), None)

def _stored_images(nb: Path) -> int:
    "How many figures the notebook's stored outputs hold."
    return sum(any(k.startswith('image/') for k in o.get('data', {})) for c in _cells(nb) if c['cell_type'] == 'code'
               for o in c.get('outputs', []))

def _has_math(nb: Path) -> bool:
    return any(re.search(r'\$\$.+?\$\$|(?<![\w$])\$[^$\s][^$\n]*?\$(?![\w$])', _src(c), re.S)
               for c in _cells(nb) if c['cell_type'] == 'markdown')


_PAGE_STATE = """
const done = arguments[arguments.length - 1];
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
typeset.then(() => {
  const vis = e => e.offsetParent !== null;
  const pres = [...document.querySelectorAll('article pre')].filter(vis);
  const scrollers = [...new Set(pres.flatMap(p => [p, p.closest('.highlight-ipynb')].filter(Boolean)))];
  done({
    imgs: [...document.images].filter(i => i.closest('.jp-OutputArea, .output_area, .jp-RenderedImage')).map(i => [i.complete, i.naturalWidth]),
    text: document.body.innerText,
    inputs: [...document.querySelectorAll('.jp-CodeCell .jp-InputArea')].map(e => e.innerText).join('\\n'),
    outputs: [...document.querySelectorAll('.jp-OutputArea')].map(e => e.innerText).join('\\n'),
    math: document.querySelectorAll('mjx-container, .katex').length,
    math_errors: document.querySelectorAll('mjx-merror, .katex-error').length,
    showdoc: [...document.querySelectorAll('.showdoc')].map(e => e.id),
    code_blocks: scrollers.length,
    scrolling: scrollers.filter(e => e.scrollWidth > e.clientWidth + 2).map(e => [e.scrollWidth, e.clientWidth, e.innerText.slice(0, 80)]),
  });
});
"""


@pytest.fixture(scope='module')
def pages(site, browser):
    "What each notebook's page shows, opened from disk, once its figures are decoded and its math typeset: {stem: state}."
    SHOTS.mkdir(exist_ok=True)
    res = {}
    for nb in _notebooks():
        browser.get((site/_page(nb)).as_uri())
        want, t0 = _stored_images(nb), time.monotonic()
        while True:                                  # the page's figures may still be decoding on a busy machine: wait, up to 60 s
            state = browser.execute_async_script(_PAGE_STATE)
            imgs = state['imgs']
            if (len(imgs) >= want and all(ok and w > 0 for ok, w in imgs)) or time.monotonic() - t0 > 60: break
            time.sleep(0.5)
        res[nb.stem] = state
        browser.save_screenshot(str(SHOTS/f'{nb.stem}.png'))
    (SHOTS/'figures.json').write_text(json.dumps({k: len(v['imgs']) for k, v in res.items()}, indent=1))
    return res


def test_every_lesson_page_shows_its_figures_and_no_traceback(pages):
    for nb in _notebooks():
        p = pages[nb.stem]
        assert 'Traceback (most recent call last)' not in p['text'], nb.name
        assert all(ok and w > 0 for ok, w in p['imgs']), (nb.name, p['imgs'])
        assert len(p['imgs']) >= _stored_images(nb), (nb.name, len(p['imgs']), _stored_images(nb))
    lessons = {k: len(v['imgs']) for k, v in pages.items() if not k.startswith('00')}
    assert all(v >= 1 for v in lessons.values()), lessons            # every lesson page shows at least one figure


def test_equations_are_typeset(pages):
    with_math = [nb for nb in _notebooks() if _has_math(nb)]
    assert '05_wgan' in [nb.stem for nb in with_math]
    for nb in with_math:
        p = pages[nb.stem]
        assert p['math'] > 0 and '$$' not in p['text'], (nb.name, 'shows its TeX untypeset', p['math'])
        assert p['math_errors'] == 0, (nb.name, p['math_errors'])


def test_hidden_cells_and_directives_are_not_shown(pages):
    "As nbdev's renderer: `#| hide`, `#| default_exp` and the directive lines are gone, and so is the hidden cells' code."
    for nb in _notebooks():
        p, shown = pages[nb.stem], set()
        assert not re.search(r'(?m)^\s*#\s*\|\s*[\w-]+', p['inputs']), (nb.name, re.findall(r'(?m)^\s*#\s*\|.*', p['inputs'])[:3])
        hidden, visible = set(), set()
        for c in _cells(nb):
            if c['cell_type'] != 'code': continue
            lines = {l.strip() for l in _src(c).splitlines() if len(l.strip()) > 20 and not l.lstrip().startswith('#')}
            (hidden if re.search(r'^#\|\s*(hide|default_exp|export)\b', _src(c), re.M) else visible).update(lines)
        shown = {l.strip() for l in p['inputs'].splitlines()}
        assert not (hidden - visible) & shown, (nb.name, sorted((hidden - visible) & shown)[:3])


def test_exported_functions_show_signature_and_docstring(pages):
    "Each exported function or class shows as nbdev's show_doc shows it: its signature and docstring; its body is not shown."
    flat = lambda s: ' '.join(re.sub(r'[`*]', '', s).split())
    for nb in _notebooks():
        if not (mod := _module(nb)): continue
        m, p = importlib.import_module(f'lessons_lib.{mod}'), pages[nb.stem]
        src = inspect.getsource(m)                     # what a `def` or `class` statement defines (nbdev's show_doc cells)
        objs = {n: getattr(m, n) for n in m.__all__ if re.search(rf'^(async def|def|class) {n}\b', src, re.M)}
        missing = [n for n in objs if n not in p['showdoc']]
        assert not missing, (nb.name, 'no show_doc for', missing)
        text = flat(p['text'])
        for n, o in objs.items():
            doc = inspect.getdoc(o)
            if doc and not inspect.isclass(o): assert flat(doc.split('\n\n')[0]) in text, (nb.name, n, doc)
            if inspect.isfunction(o): assert f'def {n}(' not in p['text'], (nb.name, n, 'its body is shown')


def test_code_blocks_wrap_instead_of_scrolling_sideways(pages):
    p = pages['03_superres']
    assert p['code_blocks'] >= 10, p['code_blocks']
    assert not p['scrolling'], (len(p['scrolling']), p['code_blocks'], p['scrolling'][:3])


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(); self.urls = []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ('href', 'src'):
            if a.get(k) and not (tag == 'link' and 'preconnect' in (a.get('rel') or '')): self.urls.append(a[k])


def test_every_link_works_from_disk(site):
    "Every link, image, script and stylesheet of every page is a file of the site (from file://, a folder is a listing, not a page)."
    broken = []
    for f in site.rglob('*.html'):
        if f.name == '404.html': continue                # its links are absolute, for a server
        parser = _Links(); parser.feed(f.read_text())
        for url in parser.urls:
            u = urlsplit(url)
            if u.scheme or url.startswith('#'): continue
            target = (f.parent/unquote(u.path)).resolve() if u.path else f
            if url.startswith('/') or not target.is_file(): broken.append((str(f.relative_to(site)), url))
    assert not broken, (len(broken), broken[:10])


def test_lesson_links_and_search_work_from_disk(site, browser):
    from selenium.webdriver.common.by import By
    browser.get((site/'index.html').as_uri())
    first = browser.execute_script("return [...document.querySelectorAll('article a')].map(a => a.href).find(h => /\\/resnet\\.html$/.test(h))")
    assert first, 'the home page does not link lesson 1'
    browser.get(first)
    assert browser.execute_script("return !!document.querySelector('.md-content article') && document.title").startswith('Lesson 1'), browser.title
    search = browser.find_element(By.CSS_SELECTOR, '.md-search__input')
    assert search.is_displayed(), 'no search box when the site is opened from disk'
    search.click(); search.send_keys('Wasserstein')
    t0, hits = time.monotonic(), []
    while not hits and time.monotonic() - t0 < 30:
        time.sleep(0.5)
        hits = browser.execute_script("return [...document.querySelectorAll('.md-search-result__item a')].map(a => a.href)")
    assert any(h.split('#')[0].endswith('/wgan.html') for h in hits), hits


def _nav_pages(browser):
    "The pages the sidebar links, in its order (file names)."
    return browser.execute_script("return [...document.querySelectorAll('nav.md-nav--primary a.md-nav__link[href]')]"
                                  ".map(a => a.href.split('#')[0].split('/').pop())")


def test_navigation_puts_the_lessons_first(site, browser):
    browser.get((site/'index.html').as_uri())
    nav = _nav_pages(browser)
    lessons = [_page(nb) for nb in _notebooks() if not nb.stem.startswith('00')]
    foundations = [_page(nb) for nb in _notebooks() if nb.stem.startswith('00')]
    assert all(p in nav for p in lessons + foundations), sorted(set(lessons + foundations) - set(nav))
    notebooks = [p for p in nav if p in lessons + foundations]
    assert notebooks[0] == 'resnet.html', notebooks[:3]
    assert max(map(nav.index, lessons)) < min(map(nav.index, foundations)), notebooks
    assert 'Library foundations' in browser.execute_script("return document.querySelector('nav.md-nav--primary').innerText")
    for n in sorted(set(int(nb.stem[:2]) for nb in _notebooks()) - {0}):          # a lesson's helpers follow it
        group = [_page(nb) for nb in _notebooks() if int(nb.stem[:2]) == n]
        assert [nav.index(p) for p in group] == list(range(nav.index(group[0]), nav.index(group[0]) + len(group))), group
    notes = [p for p in ('performance', 'contributing') if (REPO/'docs'/f'{p}.md').exists()]
    for p in notes: assert f'{p}.html' in nav and (site/f'{p}.html').is_file(), p


def test_home_page_links_every_notebook(site, browser):
    browser.get((site/'index.html').as_uri())
    links = set(browser.execute_script("return [...document.querySelectorAll('article a')].map(a => a.href.split('#')[0].split('/').pop())"))
    missing = [nb.name for nb in _notebooks() if _page(nb) not in links]
    assert not missing, missing


def test_module_docstring_links_are_pages_of_the_site(site):
    "nbdev writes `Docs: <Documentation URL>/<page>.html.md` into each module's docstring: that file, and its page, are in the site."
    nb_of = {_module(nb): nb for nb in _notebooks() if _module(nb)}
    seen = 0
    for f in sorted((REPO/'lessons_lib').glob('*.py')):
        doc = ast.get_docstring(ast.parse(f.read_text())) or ''
        for url in re.findall(r'^Docs:\s*(\S+)', doc, re.M):
            seen += 1
            assert url.startswith(DOC_URL + '/'), (f.name, url, DOC_URL)
            rel = url[len(DOC_URL) + 1:]
            assert (site/rel).is_file(), (f.name, url, 'is not a file of the site')
            page = re.sub(r'\.md$', '', rel)
            assert (site/page).is_file(), (f.name, page)
            if f.stem in nb_of: assert page == _page(nb_of[f.stem]), (f.name, page, nb_of[f.stem].name)
    assert seen >= len(nb_of) // 2, seen


def test_api_pages_list_the_exported_names(site, browser):
    for nb in _notebooks():
        if (mod := _module(nb)) is None: continue
        names = [n for n in importlib.import_module(f'lessons_lib.{mod}').__all__ if not n.isupper()]
        browser.get((site/'api'/f'{mod}.html').as_uri())
        text = browser.execute_script('return document.body.innerText')
        missing = [n for n in names if n not in text]
        assert not missing, (mod, missing)
        assert 'Traceback (most recent call last)' not in text


def test_no_page_shows_a_machine_path(pages):
    "Stored outputs show no path of the machine that ran them (a work tree, a home, an installed package): fix them in the notebook."
    found = {stem: [l.strip()[:120] for l in p['outputs'].splitlines() if MACHINE_PATH.search(l)] for stem, p in pages.items()}
    found = {k: v for k, v in found.items() if v}
    assert not found, found


def test_each_lesson_page_opens_on_a_hosted_gpu(site):
    "Every lesson's page links Colab and Kaggle to open that very notebook (its first cell installs lessons_lib)."
    for nb in (n for n in _notebooks() if re.match(r'0[1-5]_[a-z]+\.ipynb$', n.name)):
        page = (site/_page(nb)).read_text()
        for host in ('https://colab.research.google.com/github/', 'https://kaggle.com/kernels/welcome?src=https://github.com/'):
            assert f'{host}lessons-lib/lessons_lib/blob/main/nbs/{nb.name}' in page, (nb.name, host)
