package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/tailorml/tailor/cmd/tailor/config"
)

func init() {
	register("config", "check a config file, or show a command's settings (check FILE | show COMMAND)", runConfig)
}

func configUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: tailor config <subcommand> [flags] [args]

Subcommands:
  check [FILE...]                   check config files (default: --config or $TAILOR_CONFIG),
                                    explaining every problem; exit status 1 if any
  show [--config FILE] COMMAND ...  print every flag of COMMAND (e.g. worker, shard build)
                                    with its value and where it comes from

Settings come from, highest precedence first: the command line, the
environment (TAILOR_<FLAG>, e.g. TAILOR_GOSSIP_KEY_FILE), the config file (the
command's own section, then the top level), the built-in default. See
docs/config.md.
`)
}

func runConfig(ctx context.Context, env *Env) int {
	if len(env.Args) == 0 {
		configUsage(env.Stderr)
		return 2
	}
	sub := *env
	sub.Args = env.Args[1:]
	switch env.Args[0] {
	case "check":
		return runConfigCheck(ctx, &sub)
	case "show":
		return runConfigShow(ctx, &sub)
	case "-h", "--help", "help":
		configUsage(env.Stdout)
		return 0
	default:
		fmt.Fprintf(env.Stderr, "tailor config: unknown subcommand %q\n\n", env.Args[0])
		configUsage(env.Stderr)
		return 2
	}
}

// parseOwnFlags parses the flags of config check and show: like parse, but
// without applying a config file to them (checking a broken file must not
// fail before it starts). check takes its flags anywhere; show's end at
// COMMAND (untilCommand), since what follows is COMMAND's own command line.
func parseOwnFlags(env *Env, fs *flag.FlagSet, untilCommand bool) (int, bool) {
	args, flags := reorder(fs, env.Args, !untilCommand)
	return parseArgs(env, fs, args, flags, false)
}

func runConfigCheck(_ context.Context, env *Env) int {
	fs := newFlagSet(env, "config check", "[FILE...]", `
Checks each config file (by default the one --config or TAILOR_CONFIG names)
against every command's flags and reports every problem, each with the file,
line and key: YAML syntax, a key that is no command's flag (or not a flag of
its section's command), a section not named after a command, a value of the
wrong type. The environment is not consulted. Exit status 1 if a file has a
problem.`)
	if code, done := parseOwnFlags(env, fs, false); done {
		return code
	}
	files := fs.Args()
	if len(files) == 0 {
		if p := configPath(fs, env.lookupEnv()); p != "" {
			files = []string{p}
		} else {
			fmt.Fprintln(env.Stderr, "tailor config check: name a file (or set --config or TAILOR_CONFIG)")
			fs.Usage()
			return 2
		}
	}
	code := 0
	for _, name := range files {
		f, errs := checkConfigFile(name)
		if len(errs) > 0 {
			for _, e := range errs {
				fmt.Fprintln(env.Stderr, e)
			}
			fmt.Fprintf(env.Stderr, "%s: %d %s\n", name, len(errs), pluralWord(len(errs), "problem", "problems"))
			code = 1
			continue
		}
		secs := f.Sections()
		where := "top level only"
		if len(secs) > 0 {
			where = "sections " + strings.Join(secs, ", ")
		}
		fmt.Fprintf(env.Stdout, "%s: ok (%d %s; %s)\n", name, f.Len(), pluralWord(f.Len(), "setting", "settings"), where)
	}
	return code
}

func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// checkConfigFile returns the file's problems, in line order: syntax, keys
// and sections (config.File.Validate), then values, applied alone (no
// environment, no command line) to every command's flags as a run would.
func checkConfigFile(name string) (*config.File, []error) {
	f, err := config.Load(name)
	if f == nil {
		return nil, config.Errors(err)
	}
	errs := append(config.Errors(err), config.Errors(f.Validate(schema()))...)
	type problem struct {
		err  error
		cmds []string
	}
	var values []*problem
	byMsg := map[string]*problem{}
	noEnv := func(string) string { return "" }
	for _, c := range schema() {
		_, err := config.Apply(c.Flags, c.Path, f, noEnv)
		for _, e := range config.Errors(err) {
			p := byMsg[e.Error()]
			if p == nil {
				p = &problem{err: e}
				byMsg[e.Error()] = p
				values = append(values, p)
			}
			// a value from a section above the command: say which commands
			var ce *config.Error
			if errors.As(e, &ce) && strings.Count(ce.Key, ".") < len(c.Path) {
				p.cmds = append(p.cmds, "tailor "+strings.Join(c.Path, " "))
			}
		}
	}
	for _, p := range values {
		if len(p.cmds) > 0 {
			errs = append(errs, fmt.Errorf("%w (for %s)", p.err, strings.Join(p.cmds, ", ")))
		} else {
			errs = append(errs, p.err)
		}
	}
	return f, config.Errors(errors.Join(errs...))
}

func runConfigShow(_ context.Context, env *Env) int {
	fs := newFlagSet(env, "config show", "COMMAND [ARGS...]", `
Prints every flag of COMMAND (worker, coordinator, shard build, ...) with the
value it would run with and where that comes from: flag (ARGS, the command
line after COMMAND), env (its TAILOR_* variable), file (the config file and
line) or default. Secrets (flags named *secret*, *password*, *key*, *token*,
*credential*) show as (set). Nothing is run.`)
	if code, done := parseOwnFlags(env, fs, true); done {
		return code
	}
	args := fs.Args()
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, "tailor config show: name a command")
		fs.Usage()
		return 2
	}
	if _, ok := commands[args[0]]; !ok || args[0] == "config" {
		fmt.Fprintf(env.Stderr, "tailor config show: %q is not a command with flags\n", args[0])
		return 2
	}
	cfs, perr := probe(args[0], args[1:], env.Stderr)
	if cfs == nil {
		var subs []string
		for _, a := range probeArgs(args[0]) {
			subs = append(subs, strings.Join(append([]string{args[0]}, a...), " "))
		}
		fmt.Fprintf(env.Stderr, "tailor config show: name the subcommand too, e.g. %s\n", strings.Join(subs, ", "))
		return 2
	}
	if perr != nil {
		return 2 // the flag package said why
	}
	// --config before COMMAND counts as the command's own
	if own := fs.Lookup(config.FlagName).Value.String(); own != "" && !setOnCommandLine(cfs, config.FlagName) {
		if err := cfs.Set(config.FlagName, own); err != nil {
			return fail(env, err)
		}
	}
	settings, err := applyConfig(env, cfs)
	if err != nil {
		for _, e := range config.Errors(err) {
			fmt.Fprintf(env.Stderr, "tailor config show: %v\n", e)
		}
		return 1
	}
	fmt.Fprintf(env.Stdout, "%s:\n", cfs.Name())
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tVALUE\tSOURCE")
	for _, st := range settings {
		src := st.Source.String()
		if st.Origin != "" {
			src += " " + st.Origin
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", st.Flag.Name, displayValue(st.Flag), src)
	}
	if err := tw.Flush(); err != nil {
		return fail(env, err)
	}
	return 0
}

func setOnCommandLine(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// displayValue is a flag's value as config show prints it: a secret's is
// (set), an empty one "".
func displayValue(fl *flag.Flag) string {
	v := fl.Value.String()
	switch {
	case v == "":
		return `""`
	case config.Secret(fl.Name):
		return "(set)"
	}
	return v
}
