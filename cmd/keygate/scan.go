package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/keygate/keygate/leak"
)

// scanCmd is `keygate scan`: find keygate tokens in files, offline. Only
// tokens whose checksum verifies are reported, each by its prefix and last
// 4 characters, never whole: the output of a scan ends up in CI logs.
type scanCmd struct {
	Paths             []string `arg:"" optional:"" name:"path" help:"Files or directories to scan (directories recursively, .git skipped); default: the current directory."`
	SecretPrefix      string   `name:"secret-prefix" env:"KEYGATE_SECRET_PREFIX" default:"sk" help:"Type prefix of secret keys, ^[a-z]{2,8}$."`
	PublishablePrefix string   `name:"publishable-prefix" env:"KEYGATE_PUBLISHABLE_PREFIX" default:"pk" help:"Type prefix of publishable keys, ^[a-z]{2,8}$."`

	scanner *leak.Scanner
}

// Validate checks the prefixes.
func (c *scanCmd) Validate() error {
	s, err := leak.NewScanner(c.SecretPrefix, c.PublishablePrefix)
	if err != nil {
		return fmt.Errorf("--secret-prefix and --publishable-prefix: %v", err)
	}
	c.scanner = s
	return nil
}

// Run prints path:line for each token found: exit 0 when none, 1 when
// some, 2 when a path could not be read.
func (c *scanCmd) Run(d *deps) error {
	paths := c.Paths
	if len(paths) == 0 {
		paths = []string{"."}
	}
	var found, rejected int
	var failed error
	scanFile := func(path string) {
		f, err := os.Open(path)
		if err != nil {
			failed = err
			fmt.Fprintf(d.stderr, "keygate: scan: %v\n", err)
			return
		}
		defer f.Close()
		n, err := c.scanner.Scan(f, func(x leak.Finding) {
			found++
			fmt.Fprintf(d.stdout, "%s:%d: %s…%s (%s, %s)\n", path, x.Line, x.Prefix, x.Last4, x.Type, x.Environment)
		})
		rejected += n
		if err != nil {
			failed = err
			fmt.Fprintf(d.stderr, "keygate: scan %s: %v\n", path, err)
		}
	}
	for _, root := range paths {
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			switch {
			case err != nil:
				failed = err
				fmt.Fprintf(d.stderr, "keygate: scan: %v\n", err)
			case e.IsDir() && e.Name() == ".git" && path != root:
				return filepath.SkipDir
			case e.Type().IsRegular():
				scanFile(path)
			}
			return nil
		})
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
	}
	if rejected > 0 {
		fmt.Fprintf(d.stderr, "keygate: scan: %d look-alike(s) with a wrong checksum ignored\n", rejected)
	}
	switch {
	case failed != nil:
		return &exitError{code: exitUsage}
	case found > 0:
		fmt.Fprintf(d.stderr, "keygate: scan: %d token(s) found (shown by prefix and last 4 only)\n", found)
		return &exitError{code: exitFail}
	}
	return nil
}
