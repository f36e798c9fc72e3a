package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestDetectLabelSep(t *testing.T) {
	tests := []struct {
		fields []string
		want   string
	}{
		{[]string{"dress;blue"}, ";"},
		{[]string{"dress blue", "red"}, LabelSepSpace},
		{[]string{"dress,blue", "red"}, ","},
		{[]string{"dress|blue"}, "|"},
		{[]string{"a;b", "c;d", "e,f"}, ";"}, // the most fields win
		{[]string{"a,b", "c,d", "e;f"}, ","},
		{[]string{"a;b", "c,d"}, ";"}, // ties: ';', then '|', then ','
		{[]string{"a|b", "c,d"}, "|"},
		{[]string{"a; b", "c"}, ";"},
		{[]string{"", "dress"}, LabelSepSpace},
		{nil, LabelSepSpace},
	}
	for _, tt := range tests {
		if got := DetectLabelSep(tt.fields); got != tt.want {
			t.Errorf("DetectLabelSep(%q) = %q, want %q", tt.fields, got, tt.want)
		}
	}
}

func TestParseLabelList(t *testing.T) {
	tests := []struct {
		field, sep string
		want       []string // nil: an error
	}{
		{"dress;blue", ";", []string{"blue", "dress"}},
		{" dress ; blue ;", ";", []string{"blue", "dress"}},
		{"dress;;dress", ";", []string{"dress"}},
		{"a||b", "|", []string{"a", "b"}},
		{"t_shirt, jeans", ",", []string{"jeans", "t_shirt"}},
		{"dress  blue\tred", LabelSepSpace, []string{"blue", "dress", "red"}},
		{"", ";", []string{}},
		{"  ", LabelSepSpace, []string{}},
		{"a;b", LabelSepSpace, []string{"a;b"}}, // a valid label; Build refuses the vocabulary
		{"light blue;dress", ";", nil},
		{"bl/ue", ",", nil},
		{"a", "x", nil},
	}
	for _, tt := range tests {
		got, err := ParseLabelList(tt.field, tt.sep)
		if tt.want == nil {
			if err == nil {
				t.Errorf("ParseLabelList(%q, %q) = %q, want an error", tt.field, tt.sep, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseLabelList(%q, %q) = %q, %v; want %q", tt.field, tt.sep, got, err, tt.want)
		}
	}
}

func TestParseLabelSep(t *testing.T) {
	tests := map[string]string{"": LabelSepAuto, "auto": LabelSepAuto, "space": LabelSepSpace, ";": ";",
		"semicolon": ";", ",": ",", "Comma": ",", "|": "|", "pipe": "|"}
	for in, want := range tests {
		if got, err := ParseLabelSep(in); err != nil || got != want {
			t.Errorf("ParseLabelSep(%q) = %q, %v; want %q", in, got, err, want)
		}
		if err := checkLabelSep(want); err != nil {
			t.Errorf("checkLabelSep(%q): %v", want, err)
		}
	}
	for _, in := range []string{"tab", ":", ";;"} {
		if got, err := ParseLabelSep(in); err == nil {
			t.Errorf("ParseLabelSep(%q) = %q, want an error", in, got)
		}
	}
}

// csvSource writes the images a CSV names (8x8 grey PNGs) and the CSV.
func csvSource(t *testing.T, csv string) string {
	t.Helper()
	src := t.TempDir()
	img := encodePNG(t, solid(8, 8, gray))
	for _, line := range strings.Split(csv, "\n")[1:] {
		if p, _, ok := strings.Cut(line, ","); ok {
			writeFile(t, src, p, img)
		}
	}
	writeFile(t, src, CSVName, []byte(csv))
	return src
}

func TestBuildCSVLabelSeparators(t *testing.T) {
	tests := []struct {
		name     string
		csv      string
		sep      string
		allowOdd bool
		want     map[string][]string // nil: refused with ErrOddLabels
		errHas   []string
		skipped  map[string]int64
	}{
		{name: "reported case", csv: "path,labels\nimg/1.png,dress;blue\n",
			want: map[string][]string{"img/1.png": {"blue", "dress"}}},
		{name: "semicolons and spaces", csv: "path,labels\nimg/1.png,dress; blue\nimg/2.png,red\nimg/3.png,\n",
			want: map[string][]string{"img/1.png": {"blue", "dress"}, "img/2.png": {"red"}, "img/3.png": {}}},
		{name: "quoted commas", csv: "path,labels\nimg/1.png,\"dress,blue\"\nimg/2.png,\"jeans, t_shirt\"\n",
			want: map[string][]string{"img/1.png": {"blue", "dress"}, "img/2.png": {"jeans", "t_shirt"}}},
		{name: "pipes", csv: "path,labels\nimg/1.png,dress|blue\n",
			want: map[string][]string{"img/1.png": {"blue", "dress"}}},
		{name: "whitespace", csv: "path,labels\nimg/1.png,dress blue\n",
			want: map[string][]string{"img/1.png": {"blue", "dress"}}},
		{name: "set semicolon", csv: "path,labels\nimg/1.png,dress;blue\nimg/2.png,red\n", sep: ";",
			want: map[string][]string{"img/1.png": {"blue", "dress"}, "img/2.png": {"red"}}},
		{name: "set space, field with ';'", csv: "path,labels\nimg/1.png,dress;blue\n", sep: LabelSepSpace,
			errHas: []string{`"dress;blue" (line 2)`, "--label-sep", "--allow-odd-labels", "whitespace"}},
		{name: "set space, allowed", csv: "path,labels\nimg/1.png,dress;blue\n", sep: LabelSepSpace, allowOdd: true,
			want: map[string][]string{"img/1.png": {"dress;blue"}}},
		{name: "mixed separators", csv: "path,labels\nimg/1.png,dress;blue\nimg/2.png,red;shirt\nimg/3.png,\"a,b\"\n",
			errHas: []string{`"a,b" (line 4)`, `separated by ";"`}},
		{name: "mixed, allowed", csv: "path,labels\nimg/1.png,dress;blue\nimg/2.png,red;shirt\nimg/3.png,\"a,b\"\n", allowOdd: true,
			want: map[string][]string{"img/1.png": {"blue", "dress"}, "img/2.png": {"red", "shirt"}, "img/3.png": {"a,b"}}},
		{name: "set semicolon, field with spaces", csv: "path,labels\nimg/1.png,dress;blue\nimg/2.png,light blue\n", sep: ";",
			errHas: []string{`"light blue" (line 3)`}},
		{name: "set semicolon, spaces allowed", csv: "path,labels\nimg/1.png,dress;blue\nimg/2.png,light blue\n", sep: ";", allowOdd: true,
			want: map[string][]string{"img/1.png": {"blue", "dress"}}, skipped: map[string]int64{SkipBadLabel: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ValFraction = 0
			cfg.LabelSep, cfg.AllowOddLabels = tt.sep, tt.allowOdd
			st := newStore(t)
			m, err := Build(context.Background(), cfg, csvSource(t, tt.csv), st, nil, nil)
			if tt.want == nil {
				if !errors.Is(err, ErrOddLabels) {
					t.Fatalf("Build: %v, want ErrOddLabels", err)
				}
				for _, s := range tt.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			recs := bySource(t, st, m, SplitTrain)
			if len(recs) != len(tt.want) {
				t.Errorf("%d records, want %d", len(recs), len(tt.want))
			}
			for src, want := range tt.want {
				if got := labelNames(m, recs[src]); !slices.Equal(got, want) {
					t.Errorf("%s: labels %q, want %q", src, got, want)
				}
			}
			for reason, n := range tt.skipped {
				if m.Splits[0].Skipped[reason] != n {
					t.Errorf("skipped %s = %d, want %d", reason, m.Splits[0].Skipped[reason], n)
				}
			}
		})
	}
}

// An unquoted comma-separated labels field makes a row with too many
// fields: the error says to quote it.
func TestBuildCSVUnquotedCommas(t *testing.T) {
	src := csvSource(t, "path,labels\nimg/1.png,dress\nimg/2.png,dress,blue\n")
	_, err := Build(context.Background(), testConfig(t), src, newStore(t), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), `need quotes: "dress,blue"`) {
		t.Errorf("Build: %v, want the line and a hint to quote", err)
	}
}

func TestBuildRefusesSingletonVocabulary(t *testing.T) {
	rows := func(n int, label func(i int) string) string {
		var b strings.Builder
		b.WriteString("path,labels\n")
		for i := range n {
			fmt.Fprintf(&b, "img/%03d.png,%s\n", i, label(i))
		}
		return b.String()
	}
	caption := func(i int) string { return fmt.Sprintf("dress p%03d", i) } // an ID taken for a label
	tests := []struct {
		name     string
		csv      string
		allowOdd bool
		refused  bool
	}{
		{"one label per image", rows(24, caption), false, true},
		{"allowed", rows(24, caption), true, false},
		{"few images", rows(12, caption), false, false},
		{"repeated labels", rows(24, func(i int) string { return []string{"red dress", "blue shirt", "red jeans"}[i%3] }), false, false},
		{"ID folders", "", false, true}, // a label folder per image: dress_p000/x.png
		{"a few rare labels", rows(30, func(i int) string {
			if i < 4 {
				return fmt.Sprintf("dress rare%d", i)
			}
			return "dress"
		}), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.AllowOddLabels = tt.allowOdd
			var src string
			if tt.csv == "" {
				src = t.TempDir()
				for i := range 24 {
					writeFile(t, src, fmt.Sprintf("dress_p%03d/x.png", i), encodePNG(t, solid(8, 8, gray)))
				}
			} else {
				src = csvSource(t, tt.csv)
			}
			_, err := Build(context.Background(), cfg, src, newStore(t), nil, nil)
			if !tt.refused {
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrOddLabels) {
				t.Fatalf("Build: %v, want ErrOddLabels", err)
			}
			for _, s := range []string{"24 of 25 labels have a single image", `"p000"`, "--label-sep", "--allow-odd-labels"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}
