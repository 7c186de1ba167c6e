package leak

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/keygate/keygate"
)

// ErrNotJSON is the cause of the invalid_request for a body that does not
// parse as a JSON array: no one field is to blame ("param": null).
var ErrNotJSON = errors.New("leak: the report is not a JSON array of objects")

// Item is one reported token, in GitHub's secret-scanning partner format.
// Type, URL and Source are the reporter's and kept as sent.
type Item struct {
	Token  string
	Type   string
	URL    string
	Source string
}

// Parse reads a report: a JSON array of 1 to MaxItems objects, each with
// a non-empty string token and, optionally, string type, url and source.
// Other members are ignored: the partner format may grow. A bad member is
// named as param, e.g. "[2].token".
func Parse(body []byte) ([]Item, error) {
	notJSON := &keygate.Error{Code: keygate.CodeInvalidRequest,
		Message: `The report must be a JSON array of objects such as [{"token": "…", "type": "…", "url": "…", "source": "…"}].`,
		Err:     ErrNotJSON}
	var raw []map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, notJSON
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, notJSON // anything after the array
	}
	if len(raw) < 1 || len(raw) > MaxItems {
		return nil, keygate.Errorf(keygate.CodeInvalidRequest, "A report holds 1 to %d tokens, got %d.", MaxItems, len(raw))
	}
	items := make([]Item, len(raw))
	for i, o := range raw {
		if o == nil {
			return nil, keygate.ParamErrorf(fmt.Sprintf("[%d]", i), "Item %d must be an object.", i)
		}
		for _, f := range []struct {
			name     string
			dst      *string
			required bool
		}{{"token", &items[i].Token, true}, {"type", &items[i].Type, false},
			{"url", &items[i].URL, false}, {"source", &items[i].Source, false}} {
			param := fmt.Sprintf("[%d].%s", i, f.name)
			v, ok := o[f.name]
			if !ok {
				if f.required {
					return nil, keygate.ParamErrorf(param, "%s is required.", param)
				}
				continue
			}
			if json.Unmarshal(v, f.dst) != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				return nil, keygate.ParamErrorf(param, "%s must be a string.", param)
			}
			if f.required && *f.dst == "" {
				return nil, keygate.ParamErrorf(param, "%s must not be empty.", param)
			}
		}
	}
	return items, nil
}
