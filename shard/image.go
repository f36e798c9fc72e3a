package shard

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif"  // register GIF
	_ "image/jpeg" // register JPEG
	_ "image/png"  // register PNG

	_ "golang.org/x/image/bmp" // register BMP
	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // register WebP
)

// Interpolation kernels for BuildConfig.Interpolation.
const (
	InterpCatmullRom = "catmullrom"
	InterpBilinear   = "bilinear"
)

// Resize modes for BuildConfig.Resize: how an image that is not square
// reaches the size x size square.
const (
	// ResizeStretch scales the whole image to the square; the aspect ratio
	// is not kept (the original tutorial's cv2.resize). The default, and
	// what a manifest or model without a resize setting means.
	ResizeStretch = "stretch"
	// ResizePad scales the whole image to fit inside the square, keeping
	// its aspect ratio, centred on the background colour (letterboxing).
	ResizePad = "pad"
	// ResizeCrop takes the largest centred square of the image and scales it.
	ResizeCrop = "crop"
)

// Background is the colour transparent pixels are composited over and pad
// bands are filled with: white.
var Background = color.RGBA{255, 255, 255, 255}

// BackgroundName is Background as the manifest records it.
const BackgroundName = "white"

func checkResize(mode string) error {
	switch mode {
	case ResizeStretch, ResizePad, ResizeCrop:
		return nil
	}
	return fmt.Errorf("resize %q: want %q, %q or %q", mode, ResizeStretch, ResizePad, ResizeCrop)
}

func interpolator(name string) (draw.Interpolator, error) {
	switch name {
	case InterpCatmullRom:
		return draw.CatmullRom, nil
	case InterpBilinear:
		return draw.ApproxBiLinear, nil
	}
	return nil, fmt.Errorf("interpolation %q: want %q or %q", name, InterpCatmullRom, InterpBilinear)
}

// imageLimits bounds what decodeImage accepts.
type imageLimits struct {
	size      int   // output width and height
	minSide   int   // smallest source width or height
	maxPixels int64 // largest source width*height
	interp    draw.Interpolator
	resize    string // a Resize* mode; "" is ResizeStretch
}

// decodeImage turns the bytes of a JPEG, PNG, GIF, WebP or BMP into
// size*size*3 bytes of HWC RGB. The EXIF orientation of a JPEG, PNG or WebP
// is applied; transparent pixels are composited over Background; the first
// frame of an animated GIF is used; colour profiles are ignored. lim.resize
// says how a picture that is not square reaches the square. On failure it
// returns a skip reason and the cause; it never panics.
func decodeImage(data []byte, lim imageLimits) (pix []byte, reason string, err error) {
	defer func() {
		if p := recover(); p != nil {
			pix, reason, err = nil, SkipCorrupt, fmt.Errorf("decoder panicked: %v", p)
		}
	}()
	if len(data) == 0 {
		return nil, SkipEmptyFile, nil
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return nil, SkipNotImage, errors.New("not JPEG, PNG, GIF, WebP or BMP")
		}
		return nil, SkipCorrupt, err
	}
	// Check the size the header claims before decoding allocates for it.
	if reason, err := checkSize(cfg.Width, cfg.Height, lim); reason != "" {
		return nil, reason, fmt.Errorf("%s: %w", format, err)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, SkipCorrupt, fmt.Errorf("%s: %w", format, err)
	}
	b := img.Bounds()
	if reason, err := checkSize(b.Dx(), b.Dy(), lim); reason != "" {
		return nil, reason, fmt.Errorf("%s frame: %w", format, err)
	}
	if o, ok := img.(interface{ Opaque() bool }); !ok || !o.Opaque() {
		flat := image.NewRGBA(b)
		draw.Draw(flat, b, image.NewUniform(Background), image.Point{}, draw.Src)
		draw.Draw(flat, b, img, b.Min, draw.Over)
		img = flat
	}
	dst := image.NewRGBA(image.Rect(0, 0, lim.size, lim.size))
	from, to := resizeRects(b, lim.size, lim.resize)
	if to != dst.Bounds() {
		draw.Draw(dst, dst.Bounds(), image.NewUniform(Background), image.Point{}, draw.Src)
	}
	scale(lim.interp, dst, to, img, from)
	return orientSquare(dst.Pix, lim.size, exifOrientation(format, data)), "", nil
}

// scale draws the part from of src into the part to of dst. At one to one
// (an image already at the model's size) it copies: the same bytes as the
// kernel's resampling at scale 1 (TestScaleOneToOneCopies), without its
// passes, which tailor serve would pay on every request.
func scale(interp draw.Interpolator, dst *image.RGBA, to image.Rectangle, src image.Image, from image.Rectangle) {
	if from.Size() == to.Size() {
		draw.Draw(dst, to, src, from.Min, draw.Src)
		return
	}
	interp.Scale(dst, to, src, from, draw.Src, nil)
}

// resizeRects returns the part of the source (bounds b) that is scaled and
// the part of the size x size square it goes to, for a resize mode. Both are
// centred, so they commute with the EXIF orientations.
func resizeRects(b image.Rectangle, size int, mode string) (from, to image.Rectangle) {
	w, h := b.Dx(), b.Dy()
	full := image.Rect(0, 0, size, size)
	switch mode {
	case ResizeCrop:
		s := min(w, h)
		x0, y0 := b.Min.X+(w-s)/2, b.Min.Y+(h-s)/2
		return image.Rect(x0, y0, x0+s, y0+s), full
	case ResizePad:
		// The long side fills the square; the short side is scaled by the
		// same factor, rounded, at least one pixel.
		sw, sh := size, size
		if w > h {
			sh = max(1, int((int64(h)*int64(size)*2+int64(w))/(2*int64(w))))
		} else if h > w {
			sw = max(1, int((int64(w)*int64(size)*2+int64(h))/(2*int64(h))))
		}
		x0, y0 := (size-sw)/2, (size-sh)/2
		return b, image.Rect(x0, y0, x0+sw, y0+sh)
	}
	return b, full
}

func checkSize(w, h int, lim imageLimits) (string, error) {
	switch {
	case w <= 0 || h <= 0:
		return SkipCorrupt, fmt.Errorf("empty image %dx%d", w, h)
	case w < lim.minSide || h < lim.minSide:
		return SkipTooSmall, fmt.Errorf("%dx%d, minimum side %d", w, h, lim.minSide)
	case int64(w)*int64(h) > lim.maxPixels:
		return SkipTooLarge, fmt.Errorf("%dx%d is over %d pixels", w, h, lim.maxPixels)
	}
	return "", nil
}

// DecodeOptions say how DecodeImageOpts prepares an image. They come from
// the dataset's manifest (Manifest.DecodeOptions) or from the build settings
// a model recorded, so that a model sees new images as it saw its training
// images.
type DecodeOptions struct {
	// Size is the output width and height, 1 to MaxSide.
	Size int
	// Interpolation is InterpCatmullRom or InterpBilinear; "" is the default.
	Interpolation string
	// Resize is ResizeStretch, ResizePad or ResizeCrop; "" is ResizeStretch
	// (manifests and models from before the setting existed stretched).
	Resize string
}

// Keys of the build settings a trained model keeps in its metadata, so that
// prediction prepares new images as ingest prepared the training images.
const (
	MetaInterpolation = "interpolation"
	MetaResize        = "resize"
)

// DecodeOptionsFromMeta returns the options that prepare an image of size
// pixels as the build a model recorded in meta (MetaInterpolation and
// MetaResize from the manifest's BuildInfo); a model from before the resize
// setting gets stretch.
func DecodeOptionsFromMeta(size int, meta map[string]string) DecodeOptions {
	return DecodeOptions{Size: size, Interpolation: meta[MetaInterpolation], Resize: meta[MetaResize]}
}

// DecodeImage prepares one image exactly as Build does for a shard record:
// size×size×3 bytes of HWC RGB, with the default build limits, stretched to
// the square. It is DecodeImageOpts with Resize "" (stretch); a caller that
// knows the build's resize mode should use DecodeImageOpts.
func DecodeImage(data []byte, size int, interpolation string) ([]byte, error) {
	return DecodeImageOpts(data, DecodeOptions{Size: size, Interpolation: interpolation})
}

// DecodeImageOpts prepares one image exactly as Build does for a shard
// record: size×size×3 bytes of HWC RGB, with the default build limits. An
// image Build would skip gives an error matching ErrBadInput that names the
// skip reason.
func DecodeImageOpts(data []byte, opts DecodeOptions) ([]byte, error) {
	def := DefaultBuildConfig()
	if opts.Interpolation == "" {
		opts.Interpolation = def.Interpolation
	}
	if opts.Resize == "" {
		opts.Resize = ResizeStretch
	}
	interp, err := interpolator(opts.Interpolation)
	if err != nil {
		return nil, err
	}
	if err := checkResize(opts.Resize); err != nil {
		return nil, err
	}
	if opts.Size < 1 || opts.Size > MaxSide {
		return nil, fmt.Errorf("image size %d: want 1 to %d", opts.Size, MaxSide)
	}
	pix, reason, err := decodeImage(data, imageLimits{size: opts.Size, minSide: def.MinSide, maxPixels: def.MaxSourcePixels, interp: interp, resize: opts.Resize})
	if reason != "" {
		if err == nil {
			return nil, fmt.Errorf("%w: %s", ErrBadInput, reason)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrBadInput, reason, err)
	}
	return pix, err
}
