package policy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoad_StrictErrorsNameFileLineAndField(t *testing.T) {
	tests := []struct {
		file string
		want string // after "testdata/<file>"
	}{
		{"bad_scope.yaml", `:3: rules[0].scope: "Admin" is not a valid scope`},
		{"bad_scope_type.yaml", `:3: rules[0].scope: must be a string, not the number 7`},
		{"bad_unknown_field.yaml", `:3: rules[0].scopes: unknown field (known: methods, path, scope, publishable, mode, ratelimit, cost)`},
		{"bad_unknown_top.yaml", `:1: rule: unknown field (known: rules, projects)`},
		{"bad_duplicate_field.yaml", `:4: rules[0].scope: given twice`},
		{"bad_missing_path.yaml", `:3: rules[1].path: required`},
		{"bad_empty_path.yaml", `:2: rules[0].path: "" is not a valid path pattern: empty`},
		{"bad_relative_path.yaml", `:2: rules[0].path: "v1/**" is not a valid path pattern: it does not start with /`},
		{"bad_dot_segment.yaml", `:2: rules[0].path: "/v1/../admin" is not a valid path pattern: it contains a . or .. segment`},
		{"bad_star_in_segment.yaml", `:3: rules[1].path: "/v1/files/*.txt" is not a valid path pattern: * and ** must be a whole segment`},
		{"bad_doublestar_in_segment.yaml", `:2: rules[0].path: "/v1/a**" is not a valid path pattern: * and ** must be a whole segment`},
		{"bad_project_in_rule.yaml", `:2: rules[0].path: "/v1/projects/{project}" is not a valid path pattern: {project} is allowed only in project patterns`},
		{"bad_method.yaml", `:2: rules[0].methods[1]: "post" is not an HTTP method (want GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT or TRACE, in upper case)`},
		{"bad_method_typo.yaml", `:3: rules[0].methods[0]: "GETT" is not an HTTP method (want GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT or TRACE, in upper case)`},
		{"bad_method_extension.yaml", `:2: rules[0].methods[0]: "PURGE" is not an HTTP method (want GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT or TRACE, in upper case)`},
		{"bad_methods_type.yaml", `:2: rules[0].methods: must be a list, not the string "GET"`},
		{"bad_methods_empty.yaml", `:2: rules[0].methods: empty (omit methods for every method)`},
		{"bad_cost.yaml", `:3: rules[0].cost: must be an integer from 0 to 1000, not the number 1001`},
		{"bad_cost_type.yaml", `:3: rules[0].cost: must be an integer from 0 to 1000, not the string "5"`},
		{"bad_mode.yaml", `:3: rules[0].mode: "Report" is neither "enforce" nor "report"`},
		{"bad_mode_type.yaml", `:3: rules[0].mode: must be a string, not a boolean`},
		{"bad_ratelimit.yaml", `:3: rules[0].ratelimit: "Search" is not a valid rate limit name (^[a-z][a-z0-9_-]{0,31}$)`},
		{"bad_ratelimit_type.yaml", `:3: rules[0].ratelimit: must be a string, not a list`},
		{"bad_publishable.yaml", `:3: rules[0].publishable: must be true or false, not the string "true"`},
		{"bad_rules_type.yaml", `:1: rules: must be a list, not a mapping`},
		{"bad_rule_type.yaml", `:2: rules[0]: must be a mapping, not the string "/v1/uploads"`},
		{"bad_project_missing.yaml", `:3: projects[1]: "/v1/projects/*" is not a valid project pattern: a project pattern must hold {project} exactly once`},
		{"bad_project_twice.yaml", `:2: projects[0]: "/v1/{project}/x/{project}" is not a valid project pattern: a project pattern must hold {project} exactly once`},
		{"bad_two_documents.yaml", `:2: a policy file holds one YAML document`},
		// A syntax error is yaml's own message, after the file name.
		{"bad_syntax.yaml", `: yaml: line 1: did not find expected ',' or '}'`},
	}
	for _, tt := range tests {
		file := filepath.Join("testdata", tt.file)
		p, err := Load(file)
		if err == nil {
			t.Errorf("Load(%s) = %v, nil; want an error", file, p)
			continue
		}
		if got, want := err.Error(), file+tt.want; got != want {
			t.Errorf("Load(%s):\n got %s\nwant %s", file, got, want)
		}
	}
}

func TestLoad_EmptyFileHasNoRules(t *testing.T) {
	for _, f := range []string{"empty.yaml", "comments.yaml"} {
		p, err := Load(filepath.Join("testdata", f))
		if err != nil {
			t.Fatalf("Load(%s): %v", f, err)
		}
		if p.Len() != 0 || p.hasProjects {
			t.Errorf("Load(%s) = %d rules, projects %v; want none and the default projects", f, p.Len(), p.hasProjects)
		}
	}
}

func TestLoad_MissingFileIsAnError(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestParse_AcceptsEveryField(t *testing.T) {
	data := []byte(`
rules:
  - path: /v1/a
  - methods: [GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT, TRACE]
    path: /v1/b/*
    scope: "a.b:c_d-e"
    publishable: false
    mode: report
    ratelimit: search_v2-x
  - &r {path: /**, scope: read}
projects: ~
`)
	p, err := Parse("inline.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 3 || p.hasProjects {
		t.Errorf("got %d rules, hasProjects %v; want 3, false", p.Len(), p.hasProjects)
	}
	if !p.rules[0].methods.all || p.rules[1].methods.all {
		t.Errorf("methods.all = %v, %v; want true, false", p.rules[0].methods.all, p.rules[1].methods.all)
	}
}
