package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/manage"
)

// example is one curl command of the README's API reference and the
// answer documented after it.
type example struct {
	line   int
	curl   string
	answer string // the ```json block after it; "" if none
}

// readmeExamples returns the curl examples between the api markers of
// README.md, with backslash-continued lines joined.
func readmeExamples(t *testing.T) []example {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	begin, end := strings.Index(s, "<!-- api:begin -->"), strings.Index(s, "<!-- api:end -->")
	if begin < 0 || end < begin {
		t.Fatal("README.md lacks the <!-- api:begin --> … <!-- api:end --> markers")
	}
	startLine := strings.Count(s[:begin], "\n") + 1
	var out []example
	var fence string // the language of the open code block
	var block []string
	for i, line := range strings.Split(s[begin:end], "\n") {
		switch {
		case fence == "" && strings.HasPrefix(line, "```"):
			fence, block = strings.TrimPrefix(line, "```"), nil
		case fence != "" && line == "```":
			text := strings.Join(block, "\n")
			switch fence {
			case "sh":
				for _, cmd := range strings.Split(strings.ReplaceAll(text, "\\\n", " "), "\n") {
					if cmd = strings.TrimSpace(cmd); strings.HasPrefix(cmd, "curl ") {
						out = append(out, example{line: startLine + i, curl: cmd})
					}
				}
			case "json":
				if n := len(out); n > 0 && out[n-1].answer == "" {
					out[n-1].answer = text
				}
			}
			fence = ""
		case fence != "":
			block = append(block, line)
		}
	}
	return out
}

// shellWords splits a command as sh would: single quotes literal, double
// quotes and bare words with $NAME expanded from vars, backslash escapes.
func shellWords(cmd string, vars map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	expand := func(s string) (string, error) {
		var missing error
		v := os.Expand(s, func(name string) string {
			v, ok := vars[name]
			if !ok {
				missing = fmt.Errorf("unknown variable $%s", name)
			}
			return v
		})
		return v, missing
	}
	for i := 0; i < len(cmd); i++ {
		c := cmd[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
		case c == '\'':
			j := strings.IndexByte(cmd[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %s", cmd)
			}
			cur.WriteString(cmd[i+1 : i+1+j])
			i, inWord = i+1+j, true
		case c == '"':
			j := strings.IndexByte(cmd[i+1:], '"')
			if j < 0 {
				return nil, fmt.Errorf("unterminated \" in %s", cmd)
			}
			v, err := expand(cmd[i+1 : i+1+j])
			if err != nil {
				return nil, err
			}
			cur.WriteString(v)
			i, inWord = i+1+j, true
		case c == '\\' && i+1 < len(cmd):
			cur.WriteByte(cmd[i+1])
			i, inWord = i+1, true
		default:
			j := i
			for j < len(cmd) && !strings.ContainsRune(" \t'\"\\", rune(cmd[j])) {
				j++
			}
			v, err := expand(cmd[i:j])
			if err != nil {
				return nil, err
			}
			cur.WriteString(v)
			i, inWord = j-1, true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// curlRequest translates curl's arguments into the request curl would
// send to base instead of the documented localhost:8001.
func curlRequest(args []string, base *url.URL) (*http.Request, error) {
	if len(args) == 0 || args[0] != "curl" {
		return nil, fmt.Errorf("not a curl command: %q", args)
	}
	var method, data, target string
	var hasData bool
	header := http.Header{}
	for i := 1; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", a)
			}
			i++
			return args[i], nil
		}
		var err error
		switch a {
		case "-s", "-S", "-sS", "--silent", "--show-error":
		case "-X", "--request":
			method, err = next()
		case "-H", "--header":
			var h string
			if h, err = next(); err == nil {
				name, value, ok := strings.Cut(h, ":")
				if !ok {
					return nil, fmt.Errorf("header %q has no colon", h)
				}
				header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
			}
		case "-d", "--data", "--data-raw":
			data, err = next()
			hasData = true
		default:
			if strings.HasPrefix(a, "-") {
				return nil, fmt.Errorf("the test does not know curl's %s", a)
			}
			if target != "" {
				return nil, fmt.Errorf("two URLs: %s and %s", target, a)
			}
			target = a
		}
		if err != nil {
			return nil, err
		}
	}
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	if u.Host != "localhost:8001" {
		return nil, fmt.Errorf("the examples call localhost:8001 (the default --http-addr), not %s", u.Host)
	}
	u.Scheme, u.Host = base.Scheme, base.Host
	if method == "" {
		method = http.MethodGet
		if hasData {
			method = http.MethodPost
		}
	}
	var r *http.Request
	if hasData {
		r, err = http.NewRequest(method, u.String(), strings.NewReader(data))
		if err == nil && header.Get("Content-Type") == "" {
			header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
		}
	} else {
		r, err = http.NewRequest(method, u.String(), nil)
	}
	if err != nil {
		return nil, err
	}
	r.Header = header
	return r, nil
}

// fieldsOf is the shape of an answer: its top-level members and those of
// data (or of data's first element).
func fieldsOf(body []byte) ([]string, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	var out []string
	for k := range top {
		out = append(out, k)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(top["data"], &obj); err != nil {
		var list []map[string]json.RawMessage
		if err := json.Unmarshal(top["data"], &list); err != nil || len(list) == 0 {
			return nil, fmt.Errorf("data is neither an object nor a non-empty list")
		}
		obj = list[0]
	}
	for k := range obj {
		out = append(out, "data."+k)
	}
	slices.Sort(out)
	return out, nil
}

func TestREADME_APIExamplesAnswer2xxWithTheDocumentedShape(t *testing.T) {
	examples := readmeExamples(t)
	if len(examples) < 8 {
		t.Fatalf("found %d curl examples in README.md's API section, want one per endpoint", len(examples))
	}
	eachStore(t, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{OrgID: "default", UserID: "admin", Name: "bootstrap owner key", Role: "owner"})
		k, _ := e.key(manage.NewKey{OrgID: "default", UserID: "admin", Name: "CI Pipeline", Role: "member"})
		vars := map[string]string{"KEYGATE_KEY": admin, "KEY_ID": k.ID}
		base, _ := url.Parse(e.srv.URL)
		for _, ex := range examples {
			args, err := shellWords(ex.curl, vars)
			if err != nil {
				t.Fatalf("README.md:%d: %v", ex.line, err)
			}
			hr, err := curlRequest(args, base)
			if err != nil {
				t.Fatalf("README.md:%d: %v", ex.line, err)
			}
			r := e.send(hr)
			if r.Status < 200 || r.Status > 299 {
				t.Errorf("README.md:%d: %s\nanswered %d %s", ex.line, ex.curl, r.Status, r.Body)
				continue
			}
			if ex.answer == "" {
				continue
			}
			documented, err := fieldsOf([]byte(ex.answer))
			if err != nil {
				t.Errorf("README.md:%d: the documented answer: %v", ex.line, err)
				continue
			}
			got, err := fieldsOf(r.Body)
			if err != nil {
				t.Errorf("README.md:%d: the real answer %s: %v", ex.line, r.Body, err)
				continue
			}
			if !slices.Equal(documented, got) {
				t.Errorf("README.md:%d: documented fields %v, real %v", ex.line, documented, got)
			}
		}
	})
}
