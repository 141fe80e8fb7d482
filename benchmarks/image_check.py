"""Cost of the start-up check of an image folder (gan_lab.data.image_files.checked_images).

    python -m benchmarks.image_check

Writes 1,000 random-noise images per kind (PNG and JPEG, 64 and 256 pixels) into a temporary
folder, reads them once to warm the page cache, then times one check of the folder.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gan_lab.data.image_files import checked_images

FILES = 1000


def main() -> None:
    logging.getLogger("gan_lab.data.image_files").setLevel(logging.WARNING)
    rng = np.random.default_rng(0)
    for extension, size in (("png", 64), ("jpg", 64), ("png", 256), ("jpg", 256)):
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            for i in range(FILES):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / f"{i}.{extension}")
            checked_images(str(root))  # warm the page cache
            start = time.perf_counter()
            checked_images(str(root))
            seconds = time.perf_counter() - start
        print(f"{extension} {size}x{size}: {seconds:.3f} s per {FILES} files")


if __name__ == "__main__":
    main()
