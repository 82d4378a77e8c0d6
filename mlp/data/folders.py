"""A folder of images, one subfolder per class, decoded once and cached.

Layout: ``ROOT/<class>/<image>``, or ``ROOT/train/<class>/...`` with
``ROOT/test/<class>/...`` (and ``ROOT/validation/`` or ``ROOT/val/``) beside
it. Class names are the subfolders' names, sorted. Files and folders whose
names start with a dot (``.DS_Store``) are skipped; every other file must be
an image Pillow reads (:data:`mlp.data.images.IMAGE_FORMATS`).

Images are decoded in parallel on all cores, made grey (or RGB with
``color=True``; transparency is laid over white) and resized to one size:
``image_size``, else the most common size in the training images (ties go
to the larger). Pixels are stored as 8-bit levels in the cache
(:mod:`mlp.data.decoded`), so a second load reads one file; the float32
splits made from them are cached too (:func:`mlp.data.registry.load`).
"""
from __future__ import annotations

import collections
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from . import decoded
from .images import IMAGE_FORMATS, MAX_IMAGE_PIXELS, _pil_to_grey, _require_pillow, read_image

__all__ = ["load_image_folder", "scan_image_folder", "FolderScan", "image_to_pixels"]

# Subfolders that hold a split of their own, instead of a class.
_SPLIT_FOLDERS = {"train": ("train",), "test": ("test",), "validation": ("validation", "val")}
# Files per task given to a worker process: large enough that the hand-over
# costs little, small enough that the progress bar moves.
_CHUNK = 256
# Below this many files, processes would cost more than they save.
_PARALLEL_FROM = 512
# Largest image side accepted as a size to resize to.
MAX_SIDE = 4096


def _visible(entries):
    return sorted(e for e in entries if not e.name.startswith("."))


def _class_folders(root: Path, where: str):
    """{class name: [image files]} of the class subfolders of root."""
    folders = [p for p in _visible(root.iterdir()) if p.is_dir()]
    stray = [p for p in _visible(root.iterdir()) if not p.is_dir()]
    if stray:
        raise ValueError(f"{stray[0]}: a file directly in {where}; put each image in the "
                         f"subfolder of its class ({root}/<class>/<image>)")
    classes = {}
    for folder in folders:
        files = []
        _list_files(os.fsdecode(folder), files)
        if not files:
            raise ValueError(f"{folder}: the class folder {folder.name!r} holds no images")
        classes[folder.name] = files
    return classes


def _list_files(directory: str, files: list) -> None:
    """Append the files under directory to files, as os.walk (top-down,
    names sorted, no symbolic links to folders followed) would list them,
    skipping names that start with a dot."""
    # Strings from os.scandir, not Paths: for 60,000 files pathlib's parsing
    # alone takes seconds, and os.walk's joins a tenth of one.
    with os.scandir(directory) as entries:
        visible = sorted((e for e in entries if not e.name.startswith(".")),
                         key=lambda e: e.name)
    subdirs = []
    for entry in visible:
        if entry.is_dir():
            if not entry.is_symlink():
                subdirs.append(entry.path)
        else:
            files.append(entry.path)
    for subdir in subdirs:
        _list_files(subdir, files)


def _layout(root: Path):
    """{split name: {class: files}}: "train" always, "test"/"validation" if present."""
    subdirs = {p.name: p for p in _visible(root.iterdir()) if p.is_dir()}
    parts = {}
    for split, names in _SPLIT_FOLDERS.items():
        for name in names:
            if name in subdirs:
                parts[split] = subdirs[name]
                break
    if "train" not in parts:
        if set(parts):
            raise ValueError(f"{root} has a {'/'.join(p.name for p in parts.values())} folder "
                             f"but no train folder; give it train/<class>/ folders too, or put "
                             f"the class folders directly in {root}")
        classes = _class_folders(root, str(root))
        layout = {"train": classes}
    else:
        others = set(subdirs) - {p.name for p in parts.values()}
        if others:
            raise ValueError(f"{root} has train/ and also {sorted(others)[0]!r}; with train/ "
                             f"and test/ folders, the classes go inside them")
        layout = {split: _class_folders(path, f"{root}/{path.name}")
                  for split, path in parts.items()}
    train_classes = layout["train"]
    if len(train_classes) < 2:
        found = f"only the class {next(iter(train_classes))!r}" if train_classes else "no class folders"
        raise ValueError(f"{root}: found {found}; a classifier needs images of at least two "
                         f"classes, one subfolder of {root} per class")
    for split, classes in layout.items():
        unknown = sorted(set(classes) - set(train_classes))
        if unknown:
            raise ValueError(f"{root}/{parts[split].name}/{unknown[0]}: the class "
                             f"{unknown[0]!r} has no training images; every class of the "
                             f"{split} split must be in train/ as well")
    return layout


# --- Decoding, in worker processes ----------------------------------------


def image_to_pixels(image, size, color):
    """uint8 pixels of shape (height, width, channels) of a Pillow image:
    grey (transparency over white) or RGB, resized to size = (height, width)."""
    Image = _require_pillow("reading images")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") or (
            not color and (image.mode in ("RGBA", "LA", "PA", "RGBa", "La")
                           or "transparency" in image.info)):
        grey = _pil_to_grey(image)
        image = Image.fromarray(np.rint(grey * 255).astype(np.uint8), mode="L")
        if color:
            image = image.convert("RGB")
    elif color:
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            image = image.convert("RGB")
    else:
        image = image.convert("L")
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(height, width, 3 if color else 1)


_FORMATS = None


def _open(path):
    """A Pillow image opened (header only) from the formats read_image reads,
    or None for anything read_image should look at (and explain)."""
    global _FORMATS
    Image = _require_pillow("reading images")
    if _FORMATS is None:
        Image.init()
        _FORMATS = [name for name in IMAGE_FORMATS if name in Image.OPEN]
    try:
        image = Image.open(path, formats=_FORMATS)
    except Exception:
        return None
    if image.width * image.height > MAX_IMAGE_PIXELS or "exif" in image.info \
            or image.format in ("TIFF", "MPO") or image.mode == "P":
        # Large, or turned by EXIF: read_image's careful route.
        image.close()
        return None
    return image


def _size_of(path):
    """(height, width) of an image as read_image would give it, from its header."""
    image = _open(path)
    if image is None:
        # read_image says what is wrong with it, or applies its EXIF turn.
        return read_image(path).size[::-1]
    with image:
        return image.height, image.width


def _sizes(paths):
    return [_size_of(p) for p in paths]


def _decode(paths, size, color):
    out = np.empty((len(paths), size[0], size[1], 3 if color else 1), dtype=np.uint8)
    for i, path in enumerate(paths):
        image = _open(path)
        if image is not None:
            try:
                with image:
                    image.load()
                    out[i] = image_to_pixels(image, size, color)
                continue
            except Exception:
                pass  # read_image says what is wrong with the file
        out[i] = image_to_pixels(read_image(path), size, color)
    return out


def _in_parallel(function, paths, args, progress, desc):
    """[function(chunk, *args) for each chunk of paths], chunks in order, on
    all cores when there are many paths, with a progress bar."""
    from tqdm.auto import tqdm

    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    results = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress,
              file=sys.stderr, leave=False) as bar:
        if len(paths) < _PARALLEL_FROM or (os.cpu_count() or 1) == 1:
            for chunk in chunks:
                results.append(function(chunk, *args))
                bar.update(len(chunk))
            return results
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            futures = [pool.submit(function, chunk, *args) for chunk in chunks]
            try:
                for chunk, future in zip(chunks, futures):
                    results.append(future.result())
                    bar.update(len(chunk))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return results


def _most_common_size(sizes):
    counts = collections.Counter(sizes)
    return max(counts, key=lambda s: (counts[s], s[0] * s[1], s))


def _check_image_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, str):
        text = image_size.lower().replace(" ", "")
        parts = text.split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"image_size must be HEIGHTxWIDTH, like 28x28, got {image_size!r}")
        image_size = tuple(int(p) for p in parts)
    if not (isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in image_size)):
        raise TypeError(f"image_size must be (height, width), got {image_size!r}")
    if not all(1 <= n <= MAX_SIDE for n in image_size):
        raise ValueError(f"image_size must be (height, width) of 1..{MAX_SIDE} pixels each, "
                         f"got {tuple(image_size)}")
    return int(image_size[0]), int(image_size[1])


class FolderScan(collections.namedtuple("FolderScan", "root files labels class_names key options")):
    """What a folder holds, listed without opening an image: ``files`` and
    ``labels`` (int64) by split ("train", and "test"/"validation" where the
    folder has them), the sorted ``class_names``, and ``key``, the cache's
    name for these files decoded with ``options`` (colour, image size)."""


def scan_image_folder(root: Path, *, color=False, image_size=None) -> FolderScan:
    """List and stamp the images of a folder (see the module's docstring for
    its layout); ValueError for a layout mlp cannot take."""
    if not isinstance(color, (bool, np.bool_)):
        raise TypeError(f"color must be True or False, got {color!r}")
    image_size = _check_image_size(image_size)
    layout = _layout(root)
    class_names = sorted(layout["train"])
    files, labels = {}, {}
    for split, classes in layout.items():
        files[split] = [path for name in class_names for path in classes.get(name, ())]
        labels[split] = np.concatenate([np.full(len(classes.get(name, ())), k, dtype=np.int64)
                                        for k, name in enumerate(class_names)])
    stamps = decoded.file_stamps([path for split in sorted(files) for path in files[split]],
                                 root)
    options = {"kind": "image-folder", "color": bool(color), "image_size": image_size,
               "splits": sorted(files)}
    return FolderScan(root, files, labels, class_names, decoded.cache_key(stamps, options),
                      options)


def load_image_folder(root: Path, *, color=False, image_size=None, cache_dir: Path,
                      progress=True, scan: FolderScan = None):
    """(parts, class names, image size): parts = {split: (uint8 pixels of shape
    (n, h, w, c), int64 labels)} for "train" and any "test"/"validation"
    folder, decoded or read from the cache. scan: the folder's
    :func:`scan_image_folder`, if already made with the same options."""
    if scan is None:
        scan = scan_image_folder(root, color=color, image_size=image_size)
    files, labels, class_names = scan.files, scan.labels, scan.class_names
    color, image_size = scan.options["color"], scan.options["image_size"]
    cached = decoded.read(cache_dir, scan.key)
    if cached is not None:
        arrays, meta = cached
        if meta.get("class_names") == class_names and all(
                f"{s}_pixels" in arrays and len(arrays[f"{s}_pixels"]) == len(files[s])
                for s in files):
            return ({s: (arrays[f"{s}_pixels"], labels[s]) for s in files}, class_names,
                    tuple(meta["image_size"]))
    if image_size is None:
        sizes = [s for chunk in _in_parallel(_sizes, files["train"], (), progress,
                                             "reading image sizes") for s in chunk]
        image_size = _most_common_size(sizes)
    parts = {}
    for split in files:
        chunks = _in_parallel(_decode, files[split], (image_size, bool(color)), progress,
                              f"decoding {split} images")
        parts[split] = (np.concatenate(chunks), labels[split])
    decoded.write(cache_dir, scan.key, {f"{s}_pixels": px for s, (px, _) in parts.items()},
                  {"class_names": class_names, "image_size": list(image_size),
                   "root": os.fsdecode(root)})
    return parts, class_names, image_size
