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

	"golang.org/x/image/draw"
)

// Interpolation kernels for BuildConfig.Interpolation.
const (
	InterpCatmullRom = "catmullrom"
	InterpBilinear   = "bilinear"
)

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
}

// decodeImage turns the bytes of a JPEG, PNG or GIF into size*size*3 bytes of
// HWC RGB. The whole image is stretched to the square (the aspect ratio is not
// kept), transparent pixels are composited over white, the first frame of an
// animated GIF is used, and EXIF orientation and colour profiles are ignored.
// On failure it returns a skip reason and the cause; it never panics.
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
			return nil, SkipNotImage, errors.New("not JPEG, PNG or GIF")
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
		draw.Draw(flat, b, image.NewUniform(color.White), image.Point{}, draw.Src)
		draw.Draw(flat, b, img, b.Min, draw.Over)
		img = flat
	}
	dst := image.NewRGBA(image.Rect(0, 0, lim.size, lim.size))
	lim.interp.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
	pix = make([]byte, 0, lim.size*lim.size*Channels)
	for i := 0; i < len(dst.Pix); i += 4 {
		pix = append(pix, dst.Pix[i], dst.Pix[i+1], dst.Pix[i+2])
	}
	return pix, "", nil
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

// DecodeImage prepares one image exactly as Build does for a shard record:
// size×size×3 bytes of HWC RGB, with the default build limits. Prediction
// uses it so that a model sees new images as it saw its training data.
func DecodeImage(data []byte, size int, interpolation string) ([]byte, error) {
	def := DefaultBuildConfig()
	if interpolation == "" {
		interpolation = def.Interpolation
	}
	interp, err := interpolator(interpolation)
	if err != nil {
		return nil, err
	}
	if size < 1 || size > MaxSide {
		return nil, fmt.Errorf("image size %d: want 1 to %d", size, MaxSide)
	}
	pix, reason, err := decodeImage(data, imageLimits{size: size, minSide: def.MinSide, maxPixels: def.MaxSourcePixels, interp: interp})
	if reason != "" {
		if err == nil {
			return nil, fmt.Errorf("%w: %s", ErrBadInput, reason)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrBadInput, reason, err)
	}
	return pix, err
}
