#!/usr/bin/python3
"""Writes the photo fixtures of shard/photos_test.go (python3-pil; ycck.jpg
comes from ycck.c, which needs libjpeg). Run from this folder:
    /usr/bin/python3 gen.py && cc ycck.c -ljpeg -o /tmp/ycck && /tmp/ycck
The files are committed; this only documents how they were made."""
import struct
import zlib

from PIL import Image

RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)


def quadrants(w=24, h=16):
    """The upright picture: red, green over blue, black quadrants."""
    im = Image.new("RGB", (w, h))
    for y in range(h):
        for x in range(w):
            top, left = y < h // 2, x < w // 2
            im.putpixel((x, y), (RED if left else GREEN) if top else (BLUE if left else BLACK))
    return im


# What each EXIF orientation's stored pixels are, made from the upright
# picture: the inverse of the transform a viewer applies.
STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,   # the viewer turns it 90° clockwise back
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def orientations():
    up = quadrants()
    for o, t in STORE.items():
        im = up if t is None else up.transpose(t)
        exif = Image.Exif()
        exif[0x0112] = o
        im.save(f"orient-{o}.jpg", quality=95, subsampling=0, exif=exif.tobytes())
        if o == 6:
            im.save("orient-6.png", exif=exif.tobytes())  # an eXIf chunk
        if o == 8:
            im.save("orient-8.webp", lossless=True, exif=exif.tobytes())  # an EXIF chunk


def patches(mode, colours, size=16):
    """Four size/2 square patches, left to right and top to bottom."""
    im = Image.new(mode, (size, size))
    h = size // 2
    for i, c in enumerate(colours):
        im.paste(c, ((i % 2) * h, (i // 2) * h, (i % 2) * h + h, (i // 2) * h + h))
    return im


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(path, w, h, rgb16):
    """A 16-bit RGB PNG of one colour (PIL cannot write one)."""
    row = b"\x00" + struct.pack(">3H", *rgb16) * w
    data = b"\x89PNG\r\n\x1a\n"
    data += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    data += png_chunk(b"IDAT", zlib.compress(row * h, 9))
    data += png_chunk(b"IEND", b"")
    open(path, "wb").write(data)


def main():
    orientations()
    # CMYK as Photoshop writes it: PIL adds an Adobe APP14 marker and
    # stores the values inverted.
    cmyk = patches("CMYK", [(0, 255, 255, 0), (255, 0, 255, 0), (255, 255, 0, 0), (0, 0, 0, 255)])
    cmyk.save("cmyk.jpg", quality=95)
    patches("L", [40, 200, 120, 255]).save("gray.jpg", quality=95)

    alpha = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    alpha.paste((0, 0, 255, 0), (8, 0, 16, 16))     # right half transparent blue
    alpha.paste((0, 0, 0, 128), (0, 8, 8, 16))      # bottom left half-transparent black
    alpha.save("alpha.png")
    png16("rgb16.png", 16, 16, (65535, 32896, 0))   # (255, 128, 0) in 8 bits
    patches("RGB", [RED, GREEN, BLUE, BLACK]).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save("palette.png")
    first = Image.new("RGB", (16, 16), RED)
    second = Image.new("RGB", (16, 16), BLUE)
    first.save("anim.gif", save_all=True, append_images=[second], duration=100, loop=0)

    quad = patches("RGB", [RED, GREEN, BLUE, BLACK])
    quad.save("lossless.webp", lossless=True)
    quad.save("lossy.webp", quality=95)
    alpha.save("alpha.webp", lossless=True)
    # Animated WebP, which golang.org/x/image/webp does not decode.
    first.save("anim.webp", save_all=True, append_images=[second], duration=100, loop=0)
    quad.save("rgb24.bmp")
    quad.convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save("palette.bmp")

    # A wide picture for --resize: green, red, blue, green bands of 8, 8,
    # 8, 8 columns, 16 rows.
    wide = Image.new("RGB", (32, 16), GREEN)
    wide.paste(RED, (8, 0, 16, 16))
    wide.paste(BLUE, (16, 0, 24, 16))
    wide.save("wide.png")


main()
