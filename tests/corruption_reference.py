"""Test-only port of the benchmark authors' corruption code (hendrycks/robustness,
ImageNet-C/create_c/make_cifar_c.py, make_tinyimagenet_c.py, make_imagenet_c.py), one image at a
time in numpy, as the reference our batched implementation is checked against.

Adapted only as far as current libraries need: skimage's `multichannel=True` is `channel_axis=-1`,
`np.float_` is `np.float64`, `scipy.ndimage.interpolation` is `scipy.ndimage`, image sizes come from
the image instead of the hard-coded 32/64/224, the frost photographs are read from the installed
imagecorruptions package, and Wand's MotionBlurImage is used when ImageMagick is installed, else
bethgelab/imagecorruptions' numpy `_motion_blur` (copied below). Optional keyword arguments let a
test pass the random draws (angle, offsets, ...) so that the same draws can be given to both sides.

Each function takes a uint8 (H, W, 3) image and returns float values in [0, 255] like the scripts;
`np.uint8(...)` of the result is what the official releases store.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import skimage as sk
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage.filters import gaussian

try:  # real ImageMagick motion blur, as the scripts call it
    from wand.api import library as wandlibrary
    from wand.image import Image as WandImage

    wandlibrary.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double,
                                                  ctypes.c_double)

    class MotionImage(WandImage):
        def motion_blur(self, radius=0.0, sigma=0.0, angle=0.0):
            wandlibrary.MagickMotionBlurImage(self.wand, radius, sigma, angle)

    HAVE_WAND = True
except Exception:  # ImportError, or wand raising because libMagickWand is missing
    HAVE_WAND = False

TABLE_INDEX = {"cifar": 0, "tinyimagenet": 1, "imagenet": 2}


def pick(table: str, cifar, tiny, imagenet):
    return (cifar, tiny, imagenet)[TABLE_INDEX[table]]


# ---------------------------------------------------------------------------------------------
# Helpers


def disk(radius, alias_blur=0.1, dtype=np.float32):
    if radius <= 8:
        L = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        L = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    X, Y = np.meshgrid(L, L)
    aliased_disk = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=dtype)
    aliased_disk /= np.sum(aliased_disk)
    return cv2.GaussianBlur(aliased_disk, ksize=ksize, sigmaX=alias_blur)


def plasma_fractal(mapsize=256, wibbledecay=3, rng=np.random):
    assert (mapsize & (mapsize - 1) == 0)
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    def fillsquares():
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)

    def filldiamonds():
        mapsize_ = maparray.shape[0]
        drgrid = maparray[stepsize // 2:mapsize_:stepsize, stepsize // 2:mapsize_:stepsize]
        ulgrid = maparray[0:mapsize_:stepsize, 0:mapsize_:stepsize]
        ldrsum = drgrid + np.roll(drgrid, 1, axis=0)
        lulsum = ulgrid + np.roll(ulgrid, -1, axis=1)
        ltsum = ldrsum + lulsum
        maparray[0:mapsize_:stepsize, stepsize // 2:mapsize_:stepsize] = wibbledmean(ltsum)
        tdrsum = drgrid + np.roll(drgrid, 1, axis=1)
        tulsum = ulgrid + np.roll(ulgrid, -1, axis=0)
        ttsum = tdrsum + tulsum
        maparray[stepsize // 2:mapsize_:stepsize, 0:mapsize_:stepsize] = wibbledmean(ttsum)

    while stepsize >= 2:
        fillsquares()
        filldiamonds()
        stepsize //= 2
        wibble /= wibbledecay

    maparray -= maparray.min()
    return maparray / maparray.max()


def clipped_zoom(img, zoom_factor):
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top:trim_top + h, trim_top:trim_top + h]


# bethgelab/imagecorruptions' numpy re-implementation of ImageMagick's motion blur
def _motion_kernel(width, sigma):
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    return k / np.sum(k)


def _shift(image, dx, dy):
    if dx < 0:
        shifted = np.roll(image, shift=image.shape[1] + dx, axis=1)
        shifted[:, dx:] = shifted[:, dx - 1:dx]
    elif dx > 0:
        shifted = np.roll(image, shift=dx, axis=1)
        shifted[:, :dx] = shifted[:, dx:dx + 1]
    else:
        shifted = image
    if dy < 0:
        shifted = np.roll(shifted, shift=image.shape[0] + dy, axis=0)
        shifted[dy:, :] = shifted[dy - 1:dy, :]
    elif dy > 0:
        shifted = np.roll(shifted, shift=dy, axis=0)
        shifted[:dy, :] = shifted[dy:dy + 1, :]
    return shifted


def numpy_motion_blur(x, radius, sigma, angle):
    width = radius * 2 + 1
    kernel = _motion_kernel(width, sigma)
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if np.abs(dy) >= x.shape[0] or np.abs(dx) >= x.shape[1]:
            break
        shifted = _shift(x, dx, dy)
        blurred = blurred + kernel[i] * shifted
    return blurred


def motion_blur_u8(img_u8, radius, sigma, angle, use_wand=HAVE_WAND):
    """uint8 (H, W, 3) or (H, W) -> uint8 of the same shape: Wand when available, else numpy."""
    if use_wand:
        output = BytesIO()
        Image.fromarray(img_u8).save(output, format="PNG")
        im = MotionImage(blob=output.getvalue())
        im.motion_blur(radius=radius, sigma=sigma, angle=angle)
        out = cv2.imdecode(np.frombuffer(im.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
        if out.ndim == 3:
            out = out[..., [2, 1, 0]]
        if img_u8.ndim == 3 and out.ndim == 2:  # ImageMagick wrote a grey PNG
            out = np.stack([out] * 3, axis=2)
        return out
    out = numpy_motion_blur(img_u8.astype(np.float64), radius, sigma, angle)
    return np.floor(np.clip(out, 0, 255)).astype(np.uint8)  # as ImageMagick's 8-bit output


def frost_folder() -> Path:
    spec = importlib.util.find_spec("imagecorruptions")
    return Path(next(iter(spec.submodule_search_locations))) / "frost"


# ---------------------------------------------------------------------------------------------
# Corruptions (constants copied per table from the three scripts)


def gaussian_noise(x, severity, table, rng=np.random):
    c = pick(table, [0.04, 0.06, .08, .09, .10], [0.04, 0.08, .12, .15, .18],
             [.08, .12, 0.18, 0.26, 0.38])[severity - 1]
    x = np.array(x) / 255.
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, severity, table, rng=np.random):
    c = pick(table, [500, 250, 100, 75, 50], [250, 100, 50, 30, 15], [60, 25, 12, 5, 3])[severity - 1]
    x = np.array(x) / 255.
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, severity, table, rng=np.random):
    c = pick(table, [.01, .02, .03, .05, .07], [.01, .02, .05, .08, .14],
             [.03, .06, .09, 0.17, 0.27])[severity - 1]
    x = sk.util.random_noise(np.array(x) / 255., mode='s&p', amount=c,
                             rng=int(rng.randint(2**31)))
    return np.clip(x, 0, 1) * 255


def speckle_noise(x, severity, table, rng=np.random):
    c = pick(table, [.06, .1, .12, .16, .2], [.15, .2, 0.25, 0.3, 0.35],
             [.15, .2, 0.35, 0.45, 0.6])[severity - 1]
    x = np.array(x) / 255.
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x, severity, table, rng=np.random):
    c = pick(table, [.4, .6, 0.7, .8, 1], [.5, .75, 1, 1.25, 1.5], [1, 2, 3, 4, 6])[severity - 1]
    x = gaussian(np.array(x) / 255., sigma=c, channel_axis=-1)
    return np.clip(x, 0, 1) * 255


def glass_blur(x, severity, table, rng=np.random, offsets=None):
    """offsets: optional (iterations, positions, 2) array of the (dx, dy) draws in loop order."""
    c = pick(table, [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
             [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
             [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)])[severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255., sigma=c[0], channel_axis=-1) * 255)
    size_h, size_w = x.shape[:2]
    for i in range(c[2]):
        k = 0
        for h in range(size_h - c[1], c[1], -1):
            for w in range(size_w - c[1], c[1], -1):
                if offsets is None:
                    dx, dy = rng.randint(-c[1], c[1], size=(2,))
                else:
                    dx, dy = offsets[i, k]
                k += 1
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(gaussian(x / 255., sigma=c[0], channel_axis=-1), 0, 1) * 255


def defocus_blur(x, severity, table, rng=np.random):
    c = pick(table, [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
             [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
             [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)])[severity - 1]
    x = np.array(x) / 255.
    kernel = disk(radius=c[0], alias_blur=c[1])
    channels = [cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]
    channels = np.array(channels).transpose((1, 2, 0))
    return np.clip(channels, 0, 1) * 255


def motion_blur(x, severity, table, rng=np.random, angle=None, use_wand=HAVE_WAND):
    c = pick(table, [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
             [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
             [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)])[severity - 1]
    angle = rng.uniform(-45, 45) if angle is None else angle
    return motion_blur_u8(np.asarray(x, dtype=np.uint8), c[0], c[1], angle, use_wand).astype(np.float64)


def zoom_blur(x, severity, table, rng=np.random):
    c = pick(table,
             [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
              np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
             [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
              np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
             [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
              np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)])[severity - 1]
    x = (np.array(x) / 255.).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += clipped_zoom(x, zoom_factor)
    x = (x + out) / (len(c) + 1)
    return np.clip(x, 0, 1) * 255


def fog(x, severity, table, rng=np.random):
    c = pick(table, [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
             [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
             [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)])[severity - 1]
    size = x.shape[0]
    mapsize = 1 << (size - 1).bit_length()  # 32 / 64 / 256 in the scripts
    x = np.array(x) / 255.
    max_val = x.max()
    x += c[0] * plasma_fractal(mapsize, wibbledecay=c[1], rng=rng)[:size, :size][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def frost(x, severity, table, rng=np.random, idx=None, start=None):
    c = pick(table, [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
             [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
             [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)])[severity - 1]
    scale = pick(table, 0.2, 0.3, 1.0)
    idx = rng.randint(5) if idx is None else idx
    filename = ['frost1.png', 'frost2.png', 'frost3.png', 'frost4.jpg', 'frost5.jpg', 'frost6.jpg'][idx]
    fr = cv2.imread(str(frost_folder() / filename))
    if scale != 1.0:
        fr = cv2.resize(fr, (0, 0), fx=scale, fy=scale)
    h, w = x.shape[:2]
    if start is None:
        start = rng.randint(0, fr.shape[0] - h), rng.randint(0, fr.shape[1] - w)
    x_start, y_start = start
    fr = fr[x_start:x_start + h, y_start:y_start + w][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(x) + c[1] * fr, 0, 255)


def snow(x, severity, table, rng=np.random, use_wand=HAVE_WAND):
    c = pick(table,
             [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
              (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
              (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
             [(0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
              (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
              (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
             [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
              (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
              (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)])[severity - 1]
    x = np.array(x, dtype=np.float32) / 255.
    h, w = x.shape[:2]
    snow_layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    snow_layer = clipped_zoom(snow_layer[..., np.newaxis], c[2])
    snow_layer[snow_layer < c[3]] = 0
    snow_layer = (np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    snow_layer = motion_blur_u8(snow_layer, c[4], c[5], rng.uniform(-135, -45), use_wand) / 255.
    snow_layer = snow_layer[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(h, w, 1) * 1.5 + 0.5)
    return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255


def spatter(x, severity, table, rng=np.random):
    c = pick(table,
             [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
              (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
             [(0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0), (0.65, 0.3, 1, 0.69, 0.6, 0),
              (0.65, 0.1, 0.7, 0.68, 0.6, 1), (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
             [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
              (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)])[severity - 1]
    return spatter_given_liquid(x, c, rng.normal(size=x.shape[:2], loc=c[0], scale=c[1]))


def spatter_given_liquid(x, c, liquid_layer):
    x = np.array(x, dtype=np.float32) / 255.
    liquid_layer = gaussian(liquid_layer, sigma=c[2])
    liquid_layer[liquid_layer < c[3]] = 0
    if c[5] == 0:
        liquid_layer = (liquid_layer * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid_layer, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = cv2.cvtColor(liquid_layer * dist, cv2.COLOR_GRAY2BGRA)
        m /= np.max(m, axis=(0, 1))
        m *= c[4]
        color = np.concatenate((175 / 255. * np.ones_like(m[..., :1]),
                                238 / 255. * np.ones_like(m[..., :1]),
                                238 / 255. * np.ones_like(m[..., :1])), axis=2)
        color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    m = np.where(liquid_layer > c[3], 1, 0)
    m = gaussian(m.astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    color = np.concatenate((63 / 255. * np.ones_like(x[..., :1]),
                            42 / 255. * np.ones_like(x[..., :1]),
                            20 / 255. * np.ones_like(x[..., :1])), axis=2)
    color *= m[..., np.newaxis]
    x *= (1 - m[..., np.newaxis])
    return np.clip(x + color, 0, 1) * 255


def contrast(x, severity, table, rng=np.random):
    c = pick(table, [.75, .5, .4, .3, 0.15], [.4, .3, .2, .1, 0.05], [0.4, .3, .2, .1, .05])[severity - 1]
    x = np.array(x) / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def brightness(x, severity, table, rng=np.random):
    c = pick(table, [.05, .1, .15, .2, .3], [.1, .2, .3, .4, .5], [.1, .2, .3, .4, .5])[severity - 1]
    x = np.array(x) / 255.
    x = sk.color.rgb2hsv(x)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    x = sk.color.hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


def saturate(x, severity, table, rng=np.random):
    c = pick(table, [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
             [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
             [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)])[severity - 1]
    x = np.array(x) / 255.
    x = sk.color.rgb2hsv(x)
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    x = sk.color.hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


def jpeg_compression(x, severity, table, rng=np.random):
    c = pick(table, [80, 65, 58, 50, 40], [65, 58, 50, 40, 25], [25, 18, 15, 10, 7])[severity - 1]
    output = BytesIO()
    Image.fromarray(np.asarray(x, dtype=np.uint8)).save(output, 'JPEG', quality=c)
    return np.array(Image.open(output), dtype=np.float64)


def pixelate(x, severity, table, rng=np.random):
    c = pick(table, [0.95, 0.9, 0.85, 0.75, 0.65], [0.9, 0.8, 0.7, 0.6, 0.5],
             [0.6, 0.5, 0.4, 0.3, 0.25])[severity - 1]
    h, w = x.shape[:2]
    im = Image.fromarray(np.asarray(x, dtype=np.uint8))
    im = im.resize((int(w * c), int(h * c)), Image.BOX)
    im = im.resize((w, h), Image.BOX)
    return np.array(im, dtype=np.float64)


def elastic_transform(image, severity, table, rng=np.random, jitter=None, fields=None):
    """jitter (3, 2) and fields (2, H, W) (dx, dy uniform draws) may be given to align draws."""
    size = pick(table, 32, 64, 244)
    c = pick(table,
             [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
             [(0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)],
             [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)],
             )[severity - 1]
    c = tuple(size * v for v in c)
    image = np.array(image, dtype=np.float32) / 255.
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size,
                       [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    if jitter is None:
        jitter = rng.uniform(-c[2], c[2], size=pts1.shape)
    pts2 = pts1 + np.asarray(jitter).astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    if fields is None:
        fields = (rng.uniform(-1, 1, size=shape[:2]), rng.uniform(-1, 1, size=shape[:2]))
    dx = (gaussian(fields[0], c[1], mode='reflect', truncate=3) * c[0]).astype(np.float32)
    dy = (gaussian(fields[1], c[1], mode='reflect', truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode='reflect').reshape(shape), 0, 1) * 255


CORRUPTIONS = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur,
    snow, frost, fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression,
    speckle_noise, gaussian_blur, spatter, saturate)}


def corrupt_batch(images_u8, name, severity, table, seed=0, **draws):
    """Reference over a batch of uint8 (N, H, W, 3): the stored uint8 results (np.uint8 truncation),
    one image at a time with np.random seeded once."""
    rng = np.random.RandomState(seed)
    fn = CORRUPTIONS[name]
    return np.stack([np.uint8(fn(img, severity, table, rng=rng, **draws)) for img in images_u8])


# ---------------------------------------------------------------------------------------------
# Comparison of ours with the reference on the same images (tests and benchmarks/corruptions.py)

DETERMINISTIC = ("brightness", "contrast", "saturate", "pixelate", "jpeg_compression", "defocus_blur",
                 "gaussian_blur", "zoom_blur")
ALIGNED = ("glass_blur", "motion_blur", "elastic_transform", "frost")  # random, draws given to both
NOISE_STD = ("gaussian_noise", "shot_noise", "speckle_noise")


def psnr(images_u8, clean_u8):
    """Mean over images of the PSNR (dB) of uint8 (N, H, W, 3) against the clean images, capped at
    100 dB for identical images."""
    err = (images_u8.astype(np.float64) - clean_u8.astype(np.float64)) ** 2
    mse = err.reshape(len(err), -1).mean(1)
    return float(np.mean(np.where(mse > 0, 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), 100.0)))


def ours_u8(x):
    return np.round(x.permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8)


def _aligned(name, x, clean_u8, severity, table, generator):
    """(ours, reference) uint8 with the same random draws fed to both."""
    import torch

    from trainables.corruptions import _ops, blur, digital, weather
    b, _, h, w = x.shape
    if name == "glass_blur":
        sigma, d, iters = blur.GLASS_BLUR[table][severity - 1]
        n = len(blur._glass_positions(h, w, d))
        off = torch.randint(-d, d, (b, iters, n, 2), generator=generator)
        ours = blur.glass_blur_with_offsets(x, sigma, d, off)
        ref = [glass_blur(im, severity, table, offsets=off[i].numpy()) for i, im in enumerate(clean_u8)]
    elif name == "motion_blur":
        radius, sig = blur.MOTION_BLUR[table][severity - 1]
        angles = torch.rand(b, generator=generator, dtype=torch.float64) * 90 - 45
        ours = _ops.floor_u8(blur.line_blur(x, radius, sig, angles))
        ref = [motion_blur(im, severity, table, angle=float(angles[i])) for i, im in enumerate(clean_u8)]
    elif name == "elastic_transform":
        a, sg, rr = (v * min(h, w) / digital.NATIVE_SIZE[table]
                     for v in digital.ELASTIC_TRANSFORM[table][severity - 1])
        jitter = torch.rand(b, 3, 2, generator=generator, dtype=torch.float64) * 2 * rr - rr
        fields = torch.rand(b, 2, h, w, generator=generator, dtype=torch.float64) * 2 - 1
        ours = digital.elastic_with_draws(x, a, sg, jitter, fields)
        ref = [elastic_transform(im, severity, table, jitter=jitter[i].numpy(), fields=fields[i].numpy())
               for i, im in enumerate(clean_u8)]
    elif name == "frost":
        tex = weather.frost_textures(table, h, w, "cpu")
        choice = torch.randint(0, 5, (b,), generator=generator)
        start = torch.stack([torch.stack([torch.randint(0, tex[c].shape[1] - h, (), generator=generator),
                                          torch.randint(0, tex[c].shape[2] - w, (), generator=generator)])
                             for c in choice.tolist()])
        ours = weather.frost_with_draws(x, severity, table, choice, start)
        ref = [frost(im, severity, table, idx=int(choice[i]), start=tuple(start[i].tolist()))
               for i, im in enumerate(clean_u8)]
    else:
        raise ValueError(name)
    ours = ours_u8(_ops.floor_u8(ours.clamp(0, 1)))
    return ours, np.stack([np.uint8(r) for r in ref])


def compare(name, severity, table, x, clean_u8, seed=0):
    """Ours against the reference on the same images x (float (N, 3, H, W) of the uint8 clean_u8
    (N, H, W, 3)). Returns psnr_ours, psnr_ref (dB), mad (in 1/255 units; deterministic and aligned
    corruptions, else None), and for the noises std_ours/std_ref (of corrupted - clean on [0, 1]) or
    share_ours/share_ref (impulse: share of values changed to 0 or 1)."""
    import torch

    from trainables.corruptions import corrupt
    generator = torch.Generator().manual_seed(seed)
    ours = ours_u8(corrupt(x, name, severity, table=table, generator=generator))
    ref = corrupt_batch(clean_u8, name, severity, table, seed=seed)
    out = {"psnr_ours": psnr(ours, clean_u8), "psnr_ref": psnr(ref, clean_u8), "mad": None}
    if name in DETERMINISTIC:
        out["mad"] = float(np.abs(ours.astype(np.float64) - ref).mean())
    if name in ALIGNED:
        a_ours, a_ref = _aligned(name, x, clean_u8, severity, table, generator)
        out["mad"] = float(np.abs(a_ours.astype(np.float64) - a_ref).mean())
    if name in NOISE_STD:
        out["std_ours"] = float(((ours.astype(np.float64) - clean_u8) / 255).std())
        out["std_ref"] = float(((ref.astype(np.float64) - clean_u8) / 255).std())
    if name == "impulse_noise":
        def changed(im):
            return float(((im != clean_u8) & ((im == 0) | (im == 255))).mean())

        out["share_ours"], out["share_ref"] = changed(ours), changed(ref)
    return out
