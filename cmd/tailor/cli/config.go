package cli

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/tailorml/tailor/cmd/tailor/config"
)

// The config file, environment variables and flags (docs/config.md). parse
// calls applyConfig for every command; config check and config show
// (cmd_config.go) use the same pieces.

func (env *Env) lookupEnv() func(string) string {
	if env.getenv != nil {
		return env.getenv
	}
	return os.Getenv
}

// commandPath is the command a flag set belongs to, as words after "tailor":
// {"worker"}, {"shard", "build"}; also the command's section in the file.
func commandPath(fs *flag.FlagSet) []string {
	return strings.Fields(strings.TrimPrefix(fs.Name(), "tailor "))
}

// configPath is the config file a parsed flag set names: --config, or else
// TAILOR_CONFIG; empty for none.
func configPath(fs *flag.FlagSet, getenv func(string) string) string {
	if fl := fs.Lookup(config.FlagName); fl != nil && fl.Value.String() != "" {
		return fl.Value.String()
	}
	return getenv(config.EnvName(config.FlagName))
}

// applyConfig sets the flags of parsed fs that its command line left unset,
// from the environment or the config file. A file with a problem anywhere
// (a syntax error, an unknown key or section) is an error for every command;
// a value a flag rejects is an error only for the commands it applies to.
func applyConfig(env *Env, fs *flag.FlagSet) ([]config.Setting, error) {
	getenv := env.lookupEnv()
	var f *config.File
	if path := configPath(fs, getenv); path != "" {
		var err error
		if f, err = config.Load(path); f == nil {
			return nil, err
		}
		if err := errors.Join(err, f.Validate(schema())); err != nil {
			return nil, err
		}
	}
	return config.Apply(fs, commandPath(fs), f, getenv)
}

// probeArgs are the arguments that take a command to its flags, for the
// commands that first dispatch on a subcommand or an action.
func probeArgs(name string) [][]string {
	switch name {
	case "checkpoints":
		return [][]string{{"ls"}} // one flag set for every action
	case "shard":
		return [][]string{{"build"}, {"inspect"}}
	case "data":
		var out [][]string
		for _, d := range dataSetNames() {
			out = append(out, []string{d})
		}
		return out
	}
	return [][]string{nil}
}

// dataSetNames lists the data sets under "tailor data". It is set in init:
// the datasets table refers, through parse, back to probeArgs.
var dataSetNames func() []string

func init() {
	dataSetNames = func() []string {
		var out []string
		for _, d := range datasets {
			out = append(out, d.name)
		}
		return out
	}
}

// probe runs command name with args up to its flag parsing and returns its
// flag set (nil if it did not get there) and the parse error. The command
// gets a cancelled context and discarded output: it never runs.
func probe(name string, args []string, stderr io.Writer) (*flag.FlagSet, error) {
	cmd, ok := commands[name]
	if !ok {
		return nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var got *flag.FlagSet
	var perr error
	env := &Env{Args: args, Stdout: io.Discard, Stderr: stderr, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		probe: func(fs *flag.FlagSet, err error) { got, perr = fs, err }}
	cmd.run(ctx, env)
	return got, perr
}

// schema returns every command that has flags (all but config itself), each
// with a fresh flag set.
func schema() []config.Command {
	names := make([]string, 0, len(commands))
	for n := range commands {
		if n != "config" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []config.Command
	for _, n := range names {
		for _, args := range probeArgs(n) {
			if fs, _ := probe(n, args, io.Discard); fs != nil {
				out = append(out, config.Command{Path: commandPath(fs), Flags: fs})
			}
		}
	}
	return out
}
