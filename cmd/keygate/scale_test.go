package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// Helpers of the scale-out tests (SPEC §15): the PgBouncer, hot standby
// and fleet tests.

// admin creates an admin key of organization acme and returns its token.
func (k *keyring) admin() string {
	k.t.Helper()
	ck, err := k.svc.CreateKey(context.Background(), manage.NewKey{
		OrgID: "acme", UserID: "root", Name: "admin", Role: "admin", CreateOrganization: true,
	}, keygate.Actor{})
	if err != nil {
		k.t.Fatal(err)
	}
	return ck.Token.String()
}

// createWithToken stores a key of acme (which must exist) for tok, as
// `keys create` would on another machine: nothing but its event tells the
// replicas.
func (k *keyring) createWithToken(tok apikey.Token) keygate.Key {
	k.t.Helper()
	id, err := apikey.NewKeyID()
	if err != nil {
		k.t.Fatal(err)
	}
	key, err := k.st.CreateKey(context.Background(), store.NewKey{
		ID: id, OrgID: "acme", UserID: "alice", Name: "made elsewhere",
		Type: tok.Type(), Environment: tok.Environment(), Scopes: []string{"read", "write"},
		Token: store.NewToken{Hash: tok.Hash(), Prefix: tok.Prefix(), Last4: tok.Last4()},
	}, keygate.Actor{})
	if err != nil {
		k.t.Fatal(err)
	}
	return key
}

func newToken(t *testing.T) apikey.Token {
	t.Helper()
	tok, err := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// api calls the replica's management API as bearer and decodes data into
// out (when not nil); it fails the test unless the status is want.
func (r *replica) api(t *testing.T, bearer, method, path string, body any, want int, out any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, "http://"+r.httpAddr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct{ Data json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil && resp.StatusCode == want {
		t.Fatalf("%s %s: decoding the answer: %v", method, path, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d, want %d (%s)", method, path, resp.StatusCode, want, env.Data)
	}
	if out != nil {
		if err := json.Unmarshal(env.Data, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// apiCreate creates a key through the replica's API: its id and token.
func (r *replica) apiCreate(t *testing.T, adminTok string) (id, tok string) {
	t.Helper()
	var k struct{ ID, Key string }
	r.api(t, adminTok, http.MethodPost, "/v1/api-keys", map[string]any{"name": "through the API", "scopes": []string{"read", "write"}}, http.StatusCreated, &k)
	if k.ID == "" || k.Key == "" {
		t.Fatalf("create answered no id or token")
	}
	return k.ID, k.Key
}

// apiRevoke revokes a key through the replica's API.
func (r *replica) apiRevoke(t *testing.T, adminTok, id string) {
	t.Helper()
	r.api(t, adminTok, http.MethodDelete, "/v1/api-keys/"+id, nil, http.StatusOK, nil)
}

// waitListening waits until every replica's notification connection is
// up: before that they read only the primary.
func waitListening(t *testing.T, rs ...*replica) {
	t.Helper()
	for i, r := range rs {
		if !eventually(10*time.Second, func() bool { return r.metric(t, "keygate_listener_connected") == 1 }) {
			t.Fatalf("replica %d: listener not connected after 10 s", i)
		}
	}
}

// within checks, on every replica at once, that tok is decided want within
// d of since, and then stays so for hold; it returns how long each took.
func within(t *testing.T, rs []*replica, tok string, want int, since time.Time, d, hold time.Duration) []time.Duration {
	t.Helper()
	took := make([]time.Duration, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r.decide(t, tok) != want {
				if time.Since(since) > d {
					t.Errorf("replica %d: not %d %v after the change returned", i, want, d)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
			took[i] = time.Since(since)
			for end := time.Now().Add(hold); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
				if got := r.decide(t, tok); got != want {
					t.Errorf("replica %d: %d again %v after the change returned, want %d", i, got, time.Since(since), want)
					return
				}
			}
		}()
	}
	wg.Wait()
	return took
}

func fmtDurations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.Round(100 * time.Microsecond).String()
	}
	return fmt.Sprintf("[%s]", strings.Join(s, " "))
}
