// Package cli implements the tailor command line: one binary, many subcommands.
// Each subcommand lives in its own file and registers itself in init; main only
// calls Run.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/tailorml/tailor/internal/config"
)

// Env is what a subcommand gets: its arguments and where to write.
type Env struct {
	Args   []string
	Stdout io.Writer
	Stderr io.Writer
	Log    *slog.Logger

	// getenv reads the environment (nil: os.Getenv); tests replace it.
	getenv func(string) string
	// probe, when set, makes parse hand over the parsed flag set (and the
	// parse error) instead of applying settings, and the command return: it
	// is how the config code learns every command's flags (config.go).
	probe func(fs *flag.FlagSet, err error)
}

// command is one subcommand. Run returns the process exit code.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *Env) int
}

var commands = map[string]command{}

func register(name, summary string, run func(ctx context.Context, env *Env) int) {
	if _, dup := commands[name]; dup {
		panic("cli: duplicate command " + name)
	}
	commands[name] = command{name: name, summary: summary, run: run}
}

// Run runs tailor with args (without the program name) and returns the exit code.
func Run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return RunContext(ctx, args, os.Stdout, os.Stderr)
}

// RunContext is Run with an explicit context and outputs, for tests.
func RunContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tailor: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	level := slog.LevelInfo
	if os.Getenv("TAILOR_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return cmd.run(ctx, &Env{Args: args[1:], Stdout: stdout, Stderr: stderr, Log: log})
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "tailor trains multi-label image classifiers.")
	fmt.Fprintln(w, "\nUsage: tailor <command> [flags] [args]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'tailor <command> --help' for a command's flags.")
}

// newFlagSet makes a FlagSet; --help prints its usage to env.Stdout, flag
// errors go to env.Stderr.
func newFlagSet(env *Env, name, argsUsage, description string) *flag.FlagSet {
	fs := flag.NewFlagSet("tailor "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: tailor %s [flags] %s\n\n%s\n\nFlags:\n", name, argsUsage, strings.TrimSpace(description))
		fs.PrintDefaults()
	}
	fs.String(config.FlagName, "", "config `file` (YAML; env "+config.EnvName(config.FlagName)+"): settings for this and other commands; see docs/config.md")
	return fs
}

// parse parses flags, then sets every flag the command line left unset from
// its TAILOR_* environment variable or the config file (applyConfig); it
// returns (exit code, done). done is true when the caller must return the code
// (help was asked for, or the flags or settings were wrong).
func parse(env *Env, fs *flag.FlagSet) (int, bool) {
	if env.probe != nil {
		env.probe(fs, fs.Parse(env.Args))
		return 0, true
	}
	for _, a := range env.Args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(env.Stdout)
			fs.Usage()
			return 0, true
		}
	}
	if err := fs.Parse(env.Args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if _, err := applyConfig(env, fs); err != nil {
		for _, e := range config.Errors(err) {
			fmt.Fprintf(env.Stderr, "%s: %v\n", fs.Name(), e)
		}
		return 2, true
	}
	return 0, false
}

// fail prints an error and returns exit code 1.
func fail(env *Env, err error) int {
	fmt.Fprintf(env.Stderr, "tailor: %v\n", err)
	return 1
}
