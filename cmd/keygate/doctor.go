package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/keygate/keygate/doctor"
	"github.com/keygate/keygate/extauthz"
)

// doctorCmd is `keygate doctor FILE...` (SPEC §14): it reads Envoy and
// Istio configuration and reports how it can let a request past keygate or
// break it. Exit 0 with no error finding, 1 with one or more, 2 when a file
// cannot be read or parsed.
type doctorCmd struct {
	Files          []string `arg:"" name:"file" help:"Envoy bootstrap (YAML or JSON), Istio MeshConfig, IstioOperator, EnvoyFilter or AuthorizationPolicy files, read together."`
	JSON           bool     `name:"json" help:"Print {\"findings\": [...]} instead of one line per finding."`
	HeaderPrefix   string   `name:"header-prefix" env:"KEYGATE_HEADER_PREFIX" default:"x-keygate-" help:"keygate's --header-prefix: the identity headers a client must not send."`
	ClientIPHeader string   `name:"client-ip-header" env:"KEYGATE_CLIENT_IP_HEADER" placeholder:"HEADER" help:"keygate's --client-ip-header, which must reach keygate."`
}

// Validate checks --header-prefix and --client-ip-header as serve does.
func (c *doctorCmd) Validate() error {
	az := extauthz.Config{HeaderPrefix: c.HeaderPrefix, ClientIPHeader: c.ClientIPHeader}
	return az.Validate()
}

// Run checks the files and prints the findings.
func (c *doctorCmd) Run(d *deps) error {
	inputs := make([]doctor.Input, 0, len(c.Files))
	for _, name := range c.Files {
		data, err := os.ReadFile(name)
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		inputs = append(inputs, doctor.Input{Name: name, Data: data})
	}
	findings, err := doctor.Check(inputs, doctor.Options{HeaderPrefix: c.HeaderPrefix, ClientIPHeader: c.ClientIPHeader})
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if c.JSON {
		out := struct {
			Findings []doctor.Finding `json:"findings"`
		}{Findings: findings}
		if out.Findings == nil {
			out.Findings = []doctor.Finding{}
		}
		enc := json.NewEncoder(d.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		for _, f := range findings {
			fmt.Fprintln(d.stdout, f)
		}
	}
	if doctor.HasError(findings) {
		return &exitError{code: exitFail}
	}
	return nil
}
