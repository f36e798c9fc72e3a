package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

func init() {
	register("shard", "build and inspect image shards (shard build, shard inspect)", runShard)
}

func shardUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: tailor shard <subcommand> [flags] [args]

Subcommands:
  build SRC DST    decode, resize and pack the images under SRC into shards in DST
  inspect DST      print a dataset's manifest summary; --verify checks every shard

Run 'tailor shard <subcommand> --help' for its flags.
`)
}

func runShard(ctx context.Context, env *Env) int {
	if len(env.Args) == 0 {
		shardUsage(env.Stderr)
		return 2
	}
	sub := *env
	sub.Args = env.Args[1:]
	switch env.Args[0] {
	case "build":
		return runShardBuild(ctx, &sub)
	case "inspect":
		return runShardInspect(ctx, &sub)
	case "-h", "--help", "help":
		shardUsage(env.Stdout)
		return 0
	default:
		fmt.Fprintf(env.Stderr, "tailor shard: unknown subcommand %q\n\n", env.Args[0])
		shardUsage(env.Stderr)
		return 2
	}
}

func runShardBuild(ctx context.Context, env *Env) int {
	cfg := shard.DefaultBuildConfig()
	fs := newFlagSet(env, "shard build", "SRC DST", `
Decode the JPEG, PNG, GIF, WebP and BMP images under SRC, turn them upright
by their EXIF orientation, bring each to a size x size RGB square (--resize:
stretch, the default, does not keep the aspect ratio; pad keeps it and fills
the bands with white; crop takes the centre square; transparent pixels go
over white) and pack them into shard files of at most --max-shard-bytes in
DST, with DST/manifest.json describing them. Prediction resizes new images
the same way.

SRC is a folder of label folders (female_blue_dress/x.jpg has the labels
blue, dress and female) or holds labels.csv (columns path and labels); SRC
may also be the CSV file itself. In labels.csv the labels of a field are
separated by whitespace, ';', '|' or ',' (in a quoted field): by default, of
';', '|' and ',' the one found in the most labels fields of the file, else
whitespace; --label-sep sets it. A vocabulary that looks split wrongly is
refused, naming examples: labels holding another separator character, or,
from 20 images on, more than half of the labels (and at least 5) on a single
image each; --allow-odd-labels builds it anyway. If SRC holds train/ (and
optionally val/ and test/) folders, each is a split built the same way;
otherwise a hash of each path sends --val-fraction of the images to val.

Inputs that cannot be used (corrupt, empty, not an image, bad label folder,
a decompression bomb, ...) are skipped and counted in the manifest; --strict
makes them errors.
DST is a directory, file:///path or s3://bucket/prefix (settings in the URL's
query or the --s3-* flags, credentials from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY or a credentials file; see store/S3.md).
See shard/FORMAT.md for every rule.`)
	size := shardByteSize(cfg.MaxShardBytes)
	fs.IntVar(&cfg.Size, "size", cfg.Size, "output width and height in `pixels`")
	fs.Var(&size, "max-shard-bytes", "largest shard file (e.g. 64MiB, 500KB, 1048576)")
	fs.Float64Var(&cfg.ValFraction, "val-fraction", cfg.ValFraction, "share of images sent to val when SRC has no split folders (0 for none)")
	fs.StringVar(&cfg.Interpolation, "interpolation", cfg.Interpolation, "resampling kernel: catmullrom or bilinear")
	fs.StringVar(&cfg.Resize, "resize", cfg.Resize, "how a picture that is not square becomes one: stretch, pad (keep the aspect, white bands) or crop (centre square)")
	labelSep := fs.String("label-sep", "auto", "labels.csv label separator: auto, space, ';', ',' or '|'")
	fs.BoolVar(&cfg.AllowOddLabels, "allow-odd-labels", false, "build a vocabulary that looks split wrongly (labels holding a separator, mostly labels of one image)")
	fs.IntVar(&cfg.MinSide, "min-side", cfg.MinSide, "skip images whose width or height is below this many `pixels`")
	fs.Int64Var(&cfg.MaxSourcePixels, "max-pixels", cfg.MaxSourcePixels, "skip images with more source pixels than this")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "parallel decoders (0: one per CPU)")
	fs.BoolVar(&cfg.Strict, "strict", false, "fail on any input that would be skipped (hidden files aside)")
	fs.BoolVar(&cfg.Overwrite, "overwrite", false, "replace the dataset already in DST")
	fs.BoolVar(&cfg.Shuffle, "shuffle", cfg.Shuffle, "write each split's records in a seeded random order (not path order, which groups labels)")
	fs.Uint64Var(&cfg.Seed, "shuffle-seed", cfg.Seed, "seed of --shuffle")
	quiet := fs.Bool("quiet", false, "no progress bars")
	s3 := addS3Flags(fs)
	if code, done := parse(env, fs); done {
		return code
	}
	cfg.MaxShardBytes = int64(size)
	sep, err := shard.ParseLabelSep(*labelSep)
	if err != nil {
		fmt.Fprintf(env.Stderr, "tailor shard build: %v\n", err)
		return 2
	}
	cfg.LabelSep = sep
	args := fs.Args()
	if len(args) != 2 {
		fmt.Fprintf(env.Stderr, "tailor shard build: want SRC and DST, got %d arguments\n", len(args))
		fs.Usage()
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(env.Stderr, "tailor shard build: %v\n", err)
		return 2
	}
	st, err := store.OpenWith(ctx, args[1], s3.options())
	if err != nil {
		return fail(env, err)
	}
	var progress io.Writer = env.Stderr
	if *quiet {
		progress = nil
	}
	m, err := shard.Build(ctx, cfg, args[0], st, progress, env.Log)
	if err != nil {
		if errors.Is(err, shard.ErrDestinationNotEmpty) {
			err = fmt.Errorf("%w (use --overwrite to replace it)", err)
		}
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "built %s from %s\n\n", args[1], args[0])
	writeShardSummary(env.Stdout, m)
	return 0
}

func runShardInspect(ctx context.Context, env *Env) int {
	fs := newFlagSet(env, "shard inspect", "DST", `
Print the manifest of the dataset in DST: label vocabulary and counts, image
geometry, normalisation statistics, splits, shards and skipped inputs.
With --verify, read every shard and check its record CRCs and SHA-256.`)
	verify := fs.Bool("verify", false, "read every shard and check its checksums")
	s3 := addS3Flags(fs)
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(env.Stderr, "tailor shard inspect: want DST, got %d arguments\n", fs.NArg())
		fs.Usage()
		return 2
	}
	st, err := store.OpenWith(ctx, fs.Arg(0), s3.options())
	if err != nil {
		return fail(env, err)
	}
	m, err := shard.LoadManifest(ctx, st)
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "%s: %s version %d\n\n", fs.Arg(0), m.Format, m.Version)
	writeShardSummary(env.Stdout, m)
	if !*verify {
		return 0
	}
	fmt.Fprintln(env.Stdout, "\nverify:")
	bad := 0
	for _, s := range m.Splits {
		for _, info := range s.Shards {
			var n int64
			err := shard.ReadShard(ctx, st, info, m, func(shard.Record) error { n++; return nil })
			if err != nil {
				if ctx.Err() != nil {
					return fail(env, ctx.Err())
				}
				bad++
				fmt.Fprintf(env.Stdout, "  FAIL  %s: %v\n", info.Name, err)
				continue
			}
			fmt.Fprintf(env.Stdout, "  ok    %s  %d records\n", info.Name, n)
		}
	}
	if bad > 0 {
		return fail(env, fmt.Errorf("%d of %d shards failed verification", bad, shardCount(m)))
	}
	fmt.Fprintf(env.Stdout, "all %d shards ok\n", shardCount(m))
	return 0
}

// s3Flags are the --s3-* flags: settings for s3:// locations that the
// URL's query does not give (store/S3.md). Credentials have no flags, so
// they never show in a process list: use the environment or a file.
type s3Flags struct {
	endpoint, region, profile, credentialsFile, caFile string
}

func addS3Flags(fs *flag.FlagSet) *s3Flags {
	f := &s3Flags{}
	fs.StringVar(&f.endpoint, "s3-endpoint", "", "S3 `host:port`, or http(s)://host:port (default $TAILOR_S3_ENDPOINT, $AWS_ENDPOINT_URL or AWS)")
	fs.StringVar(&f.region, "s3-region", "", "S3 region (default $AWS_REGION, or asked from the service)")
	fs.StringVar(&f.profile, "s3-profile", "", "profile in the AWS credentials file (default $AWS_PROFILE or default)")
	fs.StringVar(&f.credentialsFile, "s3-credentials-file", "", "AWS shared credentials `file` (default $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)")
	fs.StringVar(&f.caFile, "s3-ca-file", "", "PEM `file` of CA certificates for a self-signed S3 endpoint")
	return f
}

func (f *s3Flags) options() store.OpenOptions {
	m := map[string]string{}
	for k, v := range map[string]string{"endpoint": f.endpoint, "region": f.region, "profile": f.profile, "credentials_file": f.credentialsFile, "ca_file": f.caFile} {
		if v != "" {
			m[k] = v
		}
	}
	return store.OpenOptions{S3: m}
}

func shardCount(m *shard.Manifest) int {
	n := 0
	for _, s := range m.Splits {
		n += len(s.Shards)
	}
	return n
}

// writeShardSummary prints what a manifest holds.
func writeShardSummary(w io.Writer, m *shard.Manifest) {
	resize := m.Build.Resize
	if resize == "" {
		resize = shard.ResizeStretch // manifests from before --resize
	}
	fmt.Fprintf(w, "images    %dx%dx%d, %s, %s interpolation, alpha over %s\n", m.Width, m.Height, m.Channels, resize, m.Build.Interpolation, m.Build.Alpha)
	fmt.Fprintf(w, "splits    by %s", m.Build.SplitBy)
	if m.Build.SplitBy == "path-hash" {
		fmt.Fprintf(w, " (val fraction %g)", m.Build.ValFraction)
	}
	fmt.Fprintf(w, "\nmean      %.4f %.4f %.4f (train, RGB, [0,1])\n", m.Mean[0], m.Mean[1], m.Mean[2])
	fmt.Fprintf(w, "std       %.4f %.4f %.4f\n\n", m.Std[0], m.Std[1], m.Std[2])

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "split\trecords\tids\tshards\tsize\tinput\tskipped")
	var recs, bytes int64
	for _, s := range m.Splits {
		ids := "-"
		if s.Records > 0 {
			ids = fmt.Sprintf("%d..%d", s.FirstID, s.FirstID+uint64(s.Records)-1)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", s.Name, s.Records, ids, len(s.Shards), formatShardBytes(s.Bytes), s.Input, formatSkipped(s.Skipped))
		recs += s.Records
		bytes += s.Bytes
	}
	fmt.Fprintf(tw, "total\t%d\t\t%d\t%s\t\t%s\n", recs, shardCount(m), formatShardBytes(bytes), formatSkipped(totalSkipped(m)))
	tw.Flush()
	if len(m.Skipped) > 0 {
		fmt.Fprintf(w, "outside any split: %s\n", formatSkipped(m.Skipped))
	}

	fmt.Fprintf(w, "\nlabels (%d):\n", len(m.Labels))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }
	head := []string{"label"}
	for _, s := range m.Splits {
		head = append(head, s.Name)
	}
	row(head...)
	for i, l := range m.Labels {
		cells := []string{l}
		for _, s := range m.Splits {
			cells = append(cells, strconv.FormatInt(s.LabelCounts[i], 10))
		}
		row(cells...)
	}
	cells := []string{"(none)"}
	for _, s := range m.Splits {
		cells = append(cells, strconv.FormatInt(s.Unlabeled, 10))
	}
	row(cells...)
	tw.Flush()
}

func totalSkipped(m *shard.Manifest) map[string]int64 {
	t := map[string]int64{}
	for _, s := range m.Splits {
		for k, v := range s.Skipped {
			t[k] += v
		}
	}
	for k, v := range m.Skipped {
		t[k] += v
	}
	return t
}

// formatSkipped lists skip counts sorted by reason, or "-".
func formatSkipped(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "-"
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func formatShardBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/unit, 0
	for f >= unit && i < 3 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", f, [...]string{"KiB", "MiB", "GiB", "TiB"}[i])
}

// shardByteSize is a byte count flag: a number with an optional unit
// (B, KB, MB, GB decimal; KiB, MiB, GiB binary; case-insensitive).
type shardByteSize int64

func (b *shardByteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *shardByteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(s[:i]), strings.ToLower(strings.TrimSpace(s[i:]))
	mult := map[string]int64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
	if mult == 0 {
		return fmt.Errorf("unknown unit %q (want B, KB, MB, GB, KiB, MiB or GiB)", s[i:])
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("bad size %q", s)
	}
	*b = shardByteSize(n * mult)
	return nil
}
