// Package config reads tailor's configuration file and applies it, with the
// TAILOR_* environment variables, to a command's flags. One format serves
// every role: the file's keys are flag names; top-level keys apply to every
// command with that flag, and a mapping named after a command (worker:,
// shard: build: ...) applies only to it and wins over the top level.
//
// Precedence, highest first: the command line, the environment variable
// (EnvName), the file (the command's own section, then the sections above
// it), the flag's built-in default. See docs/config.md.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FlagName is the flag that names the file (--config); the file itself cannot
// set it. Its environment variable is EnvName(FlagName), TAILOR_CONFIG.
const FlagName = "config"

// EnvPrefix starts every environment variable that sets a flag.
const EnvPrefix = "TAILOR_"

// EnvName returns the environment variable of flag name: TAILOR_ then the
// name upper-cased with '-' as '_' (gossip-key-file: TAILOR_GOSSIP_KEY_FILE).
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

// Secret reports whether flag name holds (or names) a secret: its value is
// never printed, in messages or in listings.
func Secret(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"secret", "password", "passwd", "token", "key", "credential"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Error is one problem with a setting: where it is and what is wrong.
type Error struct {
	File string // the file as named; empty for the environment
	Line int    // 1-based; 0 when unknown
	Key  string // dotted key in the file (worker.batch) or the environment variable
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors returns the errors err joins (errors.Join, flattened), or err
// alone, in line order (errors without a line first).
func Errors(err error) []error {
	out := flatten(err)
	sort.SliceStable(out, func(i, j int) bool { return line(out[i]) < line(out[j]) })
	return out
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

func line(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Line
	}
	return 0
}

// File is a parsed configuration file.
type File struct {
	Name string // as given, for messages
	root *section
}

// section is one mapping of the file: flag values, and sections named after
// commands below it.
type section struct {
	path   []string // nil for the top level; {"shard", "build"}
	line   int
	values []*value
	subs   []*section
}

// value is one key: value pair of a section.
type value struct {
	key  string
	raw  string
	null bool // key: with no value (ignored: the default applies)
	line int
	sec  *section
}

// dotted is the key as messages name it: worker.batch.
func (v *value) dotted() string {
	return strings.Join(append(slices.Clone(v.sec.path), v.key), ".")
}

func (s *section) dotted() string { return strings.Join(s.path, ".") }

func (s *section) sub(name string) *section {
	for _, c := range s.subs {
		if c.path[len(c.path)-1] == name {
			return c
		}
	}
	return nil
}

// Load reads and parses the file at path, as Parse.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, b)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse parses the YAML in data; name is the file's name in messages. The
// error joins every problem found (see Errors). After a syntax error the file
// is nil; after others (a duplicate key, a key that cannot be a flag) it holds
// the rest of the file, which Validate can go on checking.
func Parse(name string, data []byte) (*File, error) {
	f := &File{Name: name, root: &section{line: 1}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return f, nil // empty file: nothing set
		}
		return nil, syntaxError(name, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{File: name, Line: extra.Line, Msg: "want one YAML document, found a second (remove the '---')"}
	} else if !errors.Is(err, io.EOF) {
		return nil, syntaxError(name, data, err)
	}
	top := &doc
	if top.Kind == yaml.DocumentNode {
		if len(top.Content) == 0 {
			return f, nil
		}
		top = top.Content[0]
	}
	top = deref(top)
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return f, nil // only comments
	}
	if top.Kind != yaml.MappingNode {
		return nil, &Error{File: name, Line: top.Line, Msg: fmt.Sprintf("want a mapping of flag names to values at the top level, got %s", kindName(top))}
	}
	var errs []error
	f.root.line = top.Line
	f.parseSection(f.root, top, &errs)
	return f, errors.Join(errs...)
}

func syntaxError(name string, data []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	lines := strings.Split(string(data), "\n")
	if line > 0 && line <= len(lines) && strings.Contains(lines[line-1], "\t") {
		msg += " (YAML indents with spaces, not tabs)"
	}
	return &Error{File: name, Line: line, Msg: "YAML syntax: " + msg}
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return "a value"
	}
	return "something else"
}

// parseSection reads mapping node n into s; sub-sections (mappings) are read
// recursively. Whether a key is a flag or a command is checked by Validate.
func (f *File) parseSection(s *section, n *yaml.Node, errs *[]error) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		where := func(key string) string {
			return strings.Join(append(slices.Clone(s.path), key), ".")
		}
		if k.Kind != yaml.ScalarNode || k.Tag == "!!null" {
			*errs = append(*errs, &Error{File: f.Name, Line: k.Line, Key: s.dotted(), Msg: fmt.Sprintf("a key must be a flag or command name, got %s", kindName(k))})
			continue
		}
		key := k.Value
		if key == "<<" {
			*errs = append(*errs, &Error{File: f.Name, Line: k.Line, Key: where(key), Msg: "merge keys are not supported: write the keys out"})
			continue
		}
		if first, dup := seen[key]; dup {
			*errs = append(*errs, &Error{File: f.Name, Line: k.Line, Key: where(key), Msg: fmt.Sprintf("given twice (first at line %d)", first)})
			continue
		}
		seen[key] = k.Line
		if key == FlagName {
			*errs = append(*errs, &Error{File: f.Name, Line: k.Line, Key: where(key), Msg: "a config file cannot name another one (use --config or " + EnvName(FlagName) + ")"})
			continue
		}
		switch v.Kind {
		case yaml.MappingNode:
			sub := &section{path: append(slices.Clone(s.path), key), line: k.Line}
			s.subs = append(s.subs, sub)
			f.parseSection(sub, v, errs)
		case yaml.SequenceNode:
			items := make([]string, 0, len(v.Content))
			ok := true
			for _, it := range v.Content {
				it = deref(it)
				if it.Kind != yaml.ScalarNode {
					*errs = append(*errs, &Error{File: f.Name, Line: it.Line, Key: where(key), Msg: fmt.Sprintf("a list item must be a plain value, got %s", kindName(it))})
					ok = false
					break
				}
				items = append(items, it.Value)
			}
			if ok {
				s.values = append(s.values, &value{key: key, raw: strings.Join(items, ","), line: k.Line, sec: s})
			}
		case yaml.ScalarNode:
			s.values = append(s.values, &value{key: key, raw: v.Value, null: v.Tag == "!!null", line: k.Line, sec: s})
		default:
			*errs = append(*errs, &Error{File: f.Name, Line: k.Line, Key: where(key), Msg: fmt.Sprintf("want a value, got %s", kindName(v))})
		}
	}
}

// Command describes one command for Validate: its path (the words after
// "tailor": {"worker"}, {"shard", "build"}) and its flags.
type Command struct {
	Path  []string
	Flags *flag.FlagSet
}

func hasPrefix(path, prefix []string) bool {
	return len(path) >= len(prefix) && slices.Equal(path[:len(prefix)], prefix)
}

func cmdName(path []string) string { return "tailor " + strings.Join(path, " ") }

// Validate checks every key of the file against the commands: a top-level
// key must be a flag of some command, a key in a section a flag of that
// section's command (or of a command under it), and a section must be named
// after a command. It does not check values; Apply does. The error joins
// every problem (see Errors).
func (f *File) Validate(cmds []Command) error {
	var errs []error
	f.validate(f.root, cmds, &errs)
	return errors.Join(errs...)
}

func (f *File) validate(s *section, cmds []Command, errs *[]error) {
	var under []Command // commands this section applies to
	for _, c := range cmds {
		if hasPrefix(c.Path, s.path) {
			under = append(under, c)
		}
	}
	for _, v := range s.values {
		if !anyFlag(under, v.key) {
			*errs = append(*errs, f.unknownKey(s, v, under, cmds))
		}
	}
	for _, sub := range s.subs {
		key := sub.path[len(sub.path)-1]
		var next []Command
		for _, c := range under {
			if hasPrefix(c.Path, sub.path) {
				next = append(next, c)
			}
		}
		if len(next) > 0 {
			f.validate(sub, cmds, errs)
			continue
		}
		e := &Error{File: f.Name, Line: sub.line, Key: sub.dotted()}
		if anyFlag(under, key) {
			e.Msg = fmt.Sprintf("--%s takes a value, not a mapping", key)
		} else {
			words := map[string]bool{}
			for _, c := range under {
				if len(c.Path) > len(s.path) {
					words[c.Path[len(s.path)]] = true
				}
			}
			names := sortedKeys(words)
			if len(s.path) == 0 {
				e.Msg = fmt.Sprintf("not a flag or a command; a section is named after a command (%s)", strings.Join(names, ", "))
			} else if len(names) > 0 {
				e.Msg = fmt.Sprintf("not a flag or a subcommand of %s (subcommands: %s)", cmdName(s.path), strings.Join(names, ", "))
			} else {
				e.Msg = fmt.Sprintf("%s has no subcommands and no flag --%s", cmdName(s.path), key)
			}
			if m := closest(key, names); m != "" {
				e.Msg += fmt.Sprintf("; did you mean %s?", m)
			}
		}
		*errs = append(*errs, e)
	}
}

func anyFlag(cmds []Command, name string) bool {
	if name == FlagName {
		return false
	}
	for _, c := range cmds {
		if c.Flags.Lookup(name) != nil {
			return true
		}
	}
	return false
}

func (f *File) unknownKey(s *section, v *value, under, all []Command) error {
	e := &Error{File: f.Name, Line: v.line, Key: v.dotted()}
	if len(s.path) == 0 {
		e.Msg = fmt.Sprintf("no command has a flag --%s", v.key)
	} else {
		e.Msg = fmt.Sprintf("%s has no flag --%s", cmdName(s.path), v.key)
		if len(under) > 1 {
			e.Msg = fmt.Sprintf("no %s command has a flag --%s", cmdName(s.path), v.key)
		}
		var owners []string
		for _, c := range all {
			if c.Flags.Lookup(v.key) != nil && v.key != FlagName {
				owners = append(owners, strings.Join(c.Path, " "))
			}
		}
		if len(owners) > 0 {
			e.Msg += fmt.Sprintf(" (it is a flag of %s: move it to one of their sections, or to the top level)", strings.Join(owners, ", "))
			return e
		}
	}
	names := map[string]bool{}
	for _, c := range under {
		c.Flags.VisitAll(func(fl *flag.Flag) {
			if fl.Name != FlagName {
				names[fl.Name] = true
			}
		})
	}
	if m := closest(v.key, sortedKeys(names)); m != "" {
		e.Msg += fmt.Sprintf("; did you mean %s?", m)
	}
	return e
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// closest returns the candidate nearest to s by edit distance, if it is near
// enough to be a typo.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD && d <= max(1, len(s)/3) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each count one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// values returns the file's values for the command at path: the top level's,
// overridden by each section along the path.
func (f *File) values(path []string) map[string]*value {
	out := map[string]*value{}
	if f == nil {
		return out
	}
	s := f.root
	for i := 0; s != nil; i++ {
		for _, v := range s.values {
			out[v.key] = v
		}
		if i == len(path) {
			break
		}
		s = s.sub(path[i])
	}
	return out
}

// Sections returns the dotted names of the file's sections, in file order.
func (f *File) Sections() []string {
	var out []string
	var walk func(*section)
	walk = func(s *section) {
		for _, c := range s.subs {
			out = append(out, c.dotted())
			walk(c)
		}
	}
	walk(f.root)
	return out
}

// Len returns the number of settings (key: value pairs) in the file.
func (f *File) Len() int {
	n := 0
	var walk func(*section)
	walk = func(s *section) {
		n += len(s.values)
		for _, c := range s.subs {
			walk(c)
		}
	}
	walk(f.root)
	return n
}

// Source says where a flag's value came from.
type Source int

// The sources, lowest precedence first.
const (
	Default Source = iota
	FromFile
	FromEnv
	FromFlag
)

func (s Source) String() string {
	switch s {
	case FromFile:
		return "file"
	case FromEnv:
		return "env"
	case FromFlag:
		return "flag"
	}
	return "default"
}

// Setting is one flag's value after Apply and where it came from.
type Setting struct {
	Flag   *flag.Flag
	Source Source
	Origin string // the file and line ("tailor.yaml:4") or the environment variable; empty otherwise
}

// Apply sets each flag of fs that the command line left unset (fs has been
// parsed) from its environment variable (EnvName; an empty variable counts as
// unset) or else from f (nil: no file), taking the values of the section at
// path and the sections above it. getenv is os.Getenv in production. It
// returns every flag's setting in name order, and an error joining every value
// that the flags rejected (see Errors). The flag FlagName is never taken from
// the file.
func Apply(fs *flag.FlagSet, path []string, f *File, getenv func(string) string) ([]Setting, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { onCommandLine[fl.Name] = true })
	fileValues := f.values(path)
	var settings []Setting
	var errs []error
	fs.VisitAll(func(fl *flag.Flag) {
		st := Setting{Flag: fl}
		switch env := EnvName(fl.Name); {
		case onCommandLine[fl.Name]:
			st.Source = FromFlag
		case getenv(env) != "":
			st.Source, st.Origin = FromEnv, env
			if err := fs.Set(fl.Name, getenv(env)); err != nil {
				errs = append(errs, &Error{Key: env, Msg: rejected(fl, getenv(env), err)})
			}
		default:
			v := fileValues[fl.Name]
			if v == nil || v.null || fl.Name == FlagName {
				break
			}
			st.Source, st.Origin = FromFile, fmt.Sprintf("%s:%d", f.Name, v.line)
			if err := fs.Set(fl.Name, v.raw); err != nil {
				errs = append(errs, &Error{File: f.Name, Line: v.line, Key: v.dotted(), Msg: rejected(fl, v.raw, err)})
			}
		}
		settings = append(settings, st)
	})
	return settings, errors.Join(errs...)
}

// rejected explains why fl did not take raw, by the flag's type. A secret
// flag's value is not repeated.
func rejected(fl *flag.Flag, raw string, err error) string {
	shown := strconv.Quote(raw)
	if Secret(fl.Name) {
		shown = "the value"
	}
	if err.Error() == "value out of range" {
		return fmt.Sprintf("%s is out of range for --%s", shown, fl.Name)
	}
	var want string
	if g, ok := fl.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool:
			want = "true or false"
		case int, int64:
			want = "an integer"
		case uint, uint64:
			want = "a non-negative integer"
		case float64:
			want = "a number"
		case time.Duration:
			want = "a duration (e.g. 500ms, 30s, 5m, 1h30m)"
		}
	}
	if want != "" {
		return fmt.Sprintf("%s is not %s", shown, want)
	}
	if Secret(fl.Name) {
		return fmt.Sprintf("the value is not valid for --%s", fl.Name)
	}
	return fmt.Sprintf("%s is not valid for --%s: %v", shown, fl.Name, err)
}
