"""The docs site, built offline from the executed notebooks and opened in a real browser (headless Chromium):
every lesson page shows its figures, the API pages list the exported names, no page shows a traceback.
A screenshot of each lesson page is kept in `_site_screenshots/` (an artifact of the run)."""
import time, json, os, re, shutil, subprocess, sys, threading, functools, http.server
from pathlib import Path
import pytest
from conftest import REPO

SHOTS = REPO/'_site_screenshots'


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
    "The site built by `make docs`' script, served on a loopback port."
    d = tmp_path_factory.mktemp('site')
    r = subprocess.run([sys.executable, str(REPO/'docs'/'build_docs.py'), str(d)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(d))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    handler.log_message = lambda *a, **k: None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield d, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()


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
    b.set_page_load_timeout(120)
    yield b
    b.quit()


def _notebooks(): return sorted((REPO/'nbs').glob('[0-9]*.ipynb'))

def _stored_images(nb: Path) -> int:
    "How many figures the notebook's stored outputs hold."
    return sum(any(k.startswith('image/') for k in o.get('data', {})) for c in json.loads(nb.read_text())['cells']
               if c['cell_type'] == 'code' for o in c.get('outputs', []))


def test_every_lesson_page_shows_its_figures_and_no_traceback(site, browser):
    d, url = site
    SHOTS.mkdir(exist_ok=True)
    counts = {}
    for nb in _notebooks():
        browser.get(f'{url}/lessons/{nb.stem}/')
        want, t0 = _stored_images(nb), time.monotonic()
        while True:                                  # the page's figures may still be decoding on a busy machine: wait, up to 60 s
            imgs = browser.execute_script("return [...document.images].filter(i => i.closest('.jp-OutputArea, .output_area, .jp-RenderedImage'))"
                                          ".map(i => [i.complete, i.naturalWidth])")
            if (len(imgs) >= want and all(ok and w > 0 for ok, w in imgs)) or time.monotonic() - t0 > 60: break
            time.sleep(0.5)
        text = browser.execute_script('return document.body.innerText')
        assert 'Traceback (most recent call last)' not in text, nb.name
        assert all(ok and w > 0 for ok, w in imgs), (nb.name, imgs)
        assert len(imgs) >= _stored_images(nb), (nb.name, len(imgs), _stored_images(nb))
        counts[nb.stem] = len(imgs)
        browser.save_screenshot(str(SHOTS/f'{nb.stem}.png'))
    lessons = {k: v for k, v in counts.items() if not k.startswith('00')}
    assert all(v >= 1 for v in lessons.values()), counts            # every lesson page shows at least one figure
    (SHOTS/'figures.json').write_text(json.dumps(counts, indent=1))


def test_api_pages_list_the_exported_names(site, browser):
    d, url = site
    import importlib
    for nb in _notebooks():
        mod = next((m.group(1) for c in json.loads(nb.read_text())['cells'] if (m := re.search(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source'])))), None)
        if mod is None: continue
        names = [n for n in importlib.import_module(f'lessons_lib.{mod}').__all__ if not n.isupper()]
        browser.get(f'{url}/api/{mod}/')
        text = browser.execute_script('return document.body.innerText')
        missing = [n for n in names if n not in text]
        assert not missing, (mod, missing)
        assert 'Traceback (most recent call last)' not in text


def test_home_page_is_the_lesson_table(site, browser):
    d, url = site
    browser.get(url + '/')
    text = browser.execute_script('return document.body.innerText')
    for nb in _notebooks(): assert nb.name in text, nb.name
