"""Real calibration images for the CLIP scale runs: Fashion-MNIST from Debian's
`dataset-fashion-mnist` (MIT licence), fetched into the cache, never committed.

    python3 bench/scale/fetch_images.py CACHE_DIR TASKS PER_TASK

writes CACHE_DIR/fashion-mnist/task-<i>/<n>.png (28×28 grayscale PNGs; the CLIP processor
converts to RGB and resizes). Task i holds images of class i mod 10, from the (i div 10)-th
disjoint slice of that class, so up to 10·(6000 // PER_TASK) tasks have distinct images.
Standard library only (apt-get download + dpkg-deb for the package).
"""

import glob
import gzip
import os
import struct
import subprocess
import sys
import zlib


def png_gray(path, rows):
    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path + ".tmp", "wb") as f:
        f.write(png)
    os.replace(path + ".tmp", path)


def main():
    cache, tasks, per_task = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    root = os.path.join(cache, "fashion-mnist")
    data = os.path.join(root, "pkg")
    images = glob.glob(os.path.join(data, "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    if not images:
        os.makedirs(data, exist_ok=True)
        debs = os.path.join(root, "deb")
        os.makedirs(debs, exist_ok=True)
        subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=debs, check=True,
                       stdout=sys.stderr)  # stdout carries only the image directory
        deb = sorted(glob.glob(os.path.join(debs, "dataset-fashion-mnist_*.deb")))[-1]
        subprocess.run(["dpkg-deb", "-x", deb, data], check=True, stdout=sys.stderr)
        images = glob.glob(os.path.join(data, "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    img = gzip.open(images[0]).read()
    lab = gzip.open(images[0].replace("train-images-idx3", "train-labels-idx1")).read()
    n, h, w = struct.unpack(">III", img[4:16])
    labels = lab[8:]
    by_class = {c: [i for i in range(n) if labels[i] == c] for c in range(10)}
    for t in range(tasks):
        c, chunk = t % 10, t // 10
        idx = by_class[c][chunk * per_task:(chunk + 1) * per_task]
        if len(idx) < per_task:
            sys.exit(f"class {c} has too few images for task {t}")
        d = os.path.join(root, f"task-{t}")
        os.makedirs(d, exist_ok=True)
        if len(glob.glob(os.path.join(d, "*.png"))) == per_task:
            continue
        for j, i in enumerate(idx):
            off = 16 + i * h * w
            rows = [img[off + r * w: off + (r + 1) * w] for r in range(h)]
            png_gray(os.path.join(d, f"{j:05d}.png"), rows)
    print(root)


if __name__ == "__main__":
    main()
