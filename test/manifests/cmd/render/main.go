// Command render writes the cosmount Helm chart, rendered with its default values and the chart's
// ci/plain-manifests-values.yaml, as plain manifests (`make manifests`). It replaces every .yaml file in the output directory, so a template that was
// removed from the chart disappears from the plain manifests too.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cosmount/cosmount/test/manifests/render"
)

func main() {
	chart := flag.String("chart", render.ChartDir, "chart directory")
	out := flag.String("out", render.OutputDir, "output directory for the rendered manifests")
	flag.Parse()
	if err := run(*chart, *out); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(chartDir, outDir string) error {
	vals, err := render.PlainValues(chartDir)
	if err != nil {
		return err
	}
	files, err := render.Chart(chartDir, vals)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(outDir, "*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if _, keep := files[filepath.Base(f)]; !keep {
			if err := os.Remove(f); err != nil {
				return err
			}
		}
	}
	for _, name := range render.Names(files) {
		if err := os.WriteFile(filepath.Join(outDir, name), []byte(files[name]), 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", filepath.Join(outDir, name))
	}
	return nil
}
