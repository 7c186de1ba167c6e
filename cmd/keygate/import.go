package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
)

// keysImportCmd is `keygate keys import`: keys moved in from another
// system, one JSON object per line, the items of POST /v1/api-keys/import
// (SPEC §9). Blank lines (only whitespace) are skipped, so a trailing
// newline or a spacer is no item; every other line is one item, and
// errors name the line as FILE:N.
type keysImportCmd struct {
	Conn connFlags `embed:""`
	Org  string    `required:"" help:"Organization of the keys; created if missing."`
	File string    `arg:"" name:"FILE" type:"existingfile" help:"JSON Lines: one key per line, a create body plus hash (sha256:<64 hex>), prefix and last4."`
	JSON bool      `name:"json" help:"Print the API's JSON answer, {\"data\": [...]}, instead of the ids."`
}

// maxImportLine bounds one line: an item's largest members (metadata,
// 4 KiB) fit many times over.
const maxImportLine = 256 << 10

// Run reads FILE whole, checks every line, then imports all its keys in
// one transaction and prints their ids in the file's order.
func (k *keysImportCmd) Run(d *deps) error {
	if err := manage.ValidateID("org_id", k.Org); err != nil {
		return cliError(err, map[string]string{"org_id": "--org"})
	}
	items, lines, err := readImportFile(k.File)
	if err != nil {
		return err
	}
	st, _, err := k.Conn.openMigrated(d.ctx, k.Conn.logger(d.stderr), existingStore)
	if err != nil {
		return err
	}
	defer st.Close()
	keys, err := manage.New(st, k.Conn.format, time.Now).ImportKeys(d.ctx, k.Org, items, keygate.Actor{})
	if err != nil {
		return importLineError(k.File, lines, err)
	}
	if k.JSON {
		out := httpapi.Data[[]httpapi.APIKey]{Data: make([]httpapi.APIKey, 0, len(keys))}
		now := time.Now()
		for _, key := range keys {
			out.Data = append(out.Data, httpapi.NewAPIKey(key, now))
		}
		return writeJSON(d, out)
	}
	for _, key := range keys {
		fmt.Fprintln(d.stdout, key.ID)
	}
	fmt.Fprintf(d.stderr, "imported %d keys into organization %s\n", len(keys), k.Org)
	return nil
}

// readImportFile parses every item of file, and the line of each. A file
// of more than manage.MaxImportKeys items is refused when the one past
// the bound is met, without reading the rest.
func readImportFile(file string) ([]manage.ImportItem, []int, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), maxImportLine)
	var items []manage.ImportItem
	var lines []int
	lastLine := 0
	for n := 1; sc.Scan(); n++ {
		lastLine = n
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if len(items) == manage.MaxImportKeys {
			return nil, nil, usageErrorf("%s:%d: more than %d keys; one import takes at most %d, split the file",
				file, n, manage.MaxImportKeys, manage.MaxImportKeys)
		}
		it, err := httpapi.ParseImportItem(line)
		if err != nil {
			return nil, nil, lineError(file, n, err)
		}
		items = append(items, it)
		lines = append(lines, n)
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return nil, nil, usageErrorf("%s:%d: line longer than %d bytes", file, lastLine+1, maxImportLine)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(items) == 0 {
		return nil, nil, usageErrorf("%s: no keys: want one JSON object per line", file)
	}
	return items, lines, nil
}

// lineError says what is wrong with line n: the member at fault, if any.
// A bad line is a usage error (exit status 2), like a bad flag of keys
// create; a refusal of the store (a hash that exists) exits 1.
func lineError(file string, n int, err error) error {
	var e *keygate.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("%s:%d: %w", file, n, err)
	}
	msg := keygate.ErrorMessage(err)
	if e.Param != "" && !strings.HasPrefix(msg, e.Param) {
		msg = e.Param + ": " + msg
	}
	if e.Code == keygate.CodeInvalidRequest {
		return usageErrorf("%s:%d: %s", file, n, msg)
	}
	return fmt.Errorf("%s:%d: %s", file, n, msg)
}

var (
	itemParam = regexp.MustCompile(`^keys\[(\d+)\]\.?`)
	itemRef   = regexp.MustCompile(`keys\[\d+\]`)
)

// importLineError turns an error that names an item (keys[i].field) into
// one that names its line.
func importLineError(file string, lines []int, err error) error {
	var e *keygate.Error
	if !errors.As(err, &e) {
		return err
	}
	m := itemParam.FindStringSubmatch(e.Param)
	if m == nil {
		return err
	}
	i, _ := strconv.Atoi(m[1])
	if i >= len(lines) {
		return err
	}
	out := *e
	out.Param = strings.TrimPrefix(e.Param, m[0])
	msg := strings.TrimPrefix(keygate.ErrorMessage(err), "keys["+m[1]+"]: ")
	// Another item named in the message ("the same token hash as
	// keys[1]") is named by its line too.
	out.Message = itemRef.ReplaceAllStringFunc(msg, func(ref string) string {
		j, _ := strconv.Atoi(ref[len("keys[") : len(ref)-1])
		if j >= len(lines) {
			return ref
		}
		return "line " + strconv.Itoa(lines[j])
	})
	return lineError(file, lines[i], &out)
}
