// Command tailor trains multi-label image classifiers.
package main

import (
	"os"

	"github.com/tailorml/tailor/cmd/tailor/cli"
)

func main() { os.Exit(cli.Run(os.Args[1:])) }
