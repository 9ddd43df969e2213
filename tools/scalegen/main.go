// Command scalegen writes the Patronus scale set (scenario 2 of the
// reference scenarios): 100 sites × 4 endpoints, 1,000 paths, 1,000
// policies and 10,000 flows, deterministically from a seed.
//
//	go run ./tools/scalegen -seed 1 -out scale.json [-flows flows.json]
//
// The -out file is a JSON_IETF document for the root path "/", usable as
//
//	gnmic -a 127.0.0.1:9339 --insecure -e json_ietf set --update-path / --update-file scale.json
//
// The -flows file, if asked for, is a JSON array of the flows with the
// policy and path that classify and carry each.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

func main() {
	seed := flag.Int64("seed", 1, "seed of the generator; the same seed gives the same output")
	out := flag.String("out", "-", "file to write the JSON_IETF configuration to (- for stdout)")
	flows := flag.String("flows", "", "file to write the flows to as JSON (default: not written)")
	flag.Parse()

	if err := run(*seed, *out, *flows); err != nil {
		fmt.Fprintln(os.Stderr, "scalegen:", err)
		os.Exit(1)
	}
}

func run(seed int64, out, flowsOut string) error {
	set := scale.Generate(seed)
	cfg, err := set.JSON()
	if err != nil {
		return err
	}
	if err := write(out, cfg); err != nil {
		return err
	}
	if flowsOut == "" {
		return nil
	}
	fl, err := set.FlowsJSON()
	if err != nil {
		return err
	}
	return write(flowsOut, fl)
}

func write(name string, b []byte) error {
	if name == "-" {
		_, err := os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(name, b, 0o644)
}
