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

	"github.com/tailorml/tailor/cmd/tailor/config"
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
	// drain is closed by the first SIGTERM or Ctrl-C for a command
	// registered with registerDraining; the command's context then ends
	// only with a second signal (the command bounds its own drain with
	// --preempt-grace). Nil for other commands, whose context ends with
	// the first signal.
	drain <-chan struct{}
}

// Drain is closed when the process is asked to stop (SIGTERM, Ctrl-C) and
// should leave cleanly: a preemption's notice. Nil (never) for commands
// not registered with registerDraining.
func (e *Env) Drain() <-chan struct{} { return e.drain }

// command is one subcommand. Run returns the process exit code.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *Env) int
	// drains: the first signal closes Env.Drain instead of ending the
	// context (the cluster roles, which leave cleanly when preempted)
	drains bool
}

var commands = map[string]command{}

func register(name, summary string, run func(ctx context.Context, env *Env) int) {
	if _, dup := commands[name]; dup {
		panic("cli: duplicate command " + name)
	}
	commands[name] = command{name: name, summary: summary, run: run}
}

// registerDraining registers a command that leaves cleanly on SIGTERM or
// Ctrl-C (Env.Drain); a second signal ends its context.
func registerDraining(name, summary string, run func(ctx context.Context, env *Env) int) {
	register(name, summary, run)
	c := commands[name]
	c.drains = true
	commands[name] = c
}

// Run runs tailor with args (without the program name) and returns the exit code.
func Run(args []string) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drain := make(chan struct{})
	drains := len(args) > 0 && commands[args[0]].drains
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
			return
		}
		if !drains {
			cancel()
			return
		}
		close(drain)
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	return runContext(ctx, args, os.Stdout, os.Stderr, drain)
}

// RunContext is Run with an explicit context and outputs, for tests.
func RunContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runContext(ctx, args, stdout, stderr, nil)
}

func runContext(ctx context.Context, args []string, stdout, stderr io.Writer, drain <-chan struct{}) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...) // tailor --version [--json]
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
	env := &Env{Args: args[1:], Stdout: stdout, Stderr: stderr, Log: log}
	if cmd.drains {
		env.drain = drain
	}
	return cmd.run(ctx, env)
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
// (help was asked for, or the flags or settings were wrong). Flags may come
// anywhere among the arguments (see reorder).
func parse(env *Env, fs *flag.FlagSet) (int, bool) {
	args, flags := reorder(fs, env.Args, true)
	if env.probe != nil {
		env.probe(fs, fs.Parse(args))
		return 0, true
	}
	return parseArgs(env, fs, args, flags, true)
}

// parseArgs parses args, a command line reordered by reorder (flags its
// flags), and with layered applies the environment and the config file to
// the flags it left unset.
func parseArgs(env *Env, fs *flag.FlagSet, args, flags []string, layered bool) (int, bool) {
	for _, a := range flags {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(env.Stdout)
			fs.Usage()
			return 0, true
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if !layered {
		return 0, false
	}
	if _, err := applyConfig(env, fs); err != nil {
		for _, e := range config.Errors(err) {
			fmt.Fprintf(env.Stderr, "%s: %v\n", fs.Name(), e)
		}
		return 2, true
	}
	return 0, false
}

// reorder returns args as flag.FlagSet.Parse must see them to read flags
// anywhere: every flag with its value, in order, then "--" and the
// positional arguments; flags are the flags themselves (not their values),
// for the help check. With interspersed, args are read as git, docker and
// kubectl read a command line: flags may come before, between or after the
// positional arguments; without, flags end at the first positional
// argument (the rest is another command's line, as after config show
// COMMAND). Either way "--" ends the flags (every argument after it is
// positional, even one starting with "-"), and "-" alone is positional.
//
// A flag of fs that takes a value and is written without "=" takes the
// next argument as its value, whatever it looks like (as the flag package
// does: --size 64, --name -x); a boolean flag takes a value only after "="
// (--standby, --shuffle=false). Arguments that look like flags but are none
// of fs's (-h and --help among them) stay flags, for fs.Parse to report as
// it always has; so does a value flag that ends the line without its value.
func reorder(fs *flag.FlagSet, args []string, interspersed bool) (ordered, flags []string) {
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			if !interspersed {
				positional = append(positional, args[i:]...)
				break
			}
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		ordered = append(ordered, a)
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if strings.Contains(name, "=") {
			continue
		}
		fl := fs.Lookup(name)
		if fl == nil || isBoolFlag(fl) {
			continue
		}
		if i+1 == len(args) {
			return ordered, flags // fs.Parse says the value is missing
		}
		i++
		ordered = append(ordered, args[i])
	}
	if len(positional) > 0 {
		ordered = append(append(ordered, "--"), positional...)
	}
	return ordered, flags
}

func isBoolFlag(fl *flag.Flag) bool {
	b, ok := fl.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// fail prints an error and returns exit code 1.
func fail(env *Env, err error) int {
	fmt.Fprintf(env.Stderr, "tailor: %v\n", err)
	return 1
}
