package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store/postgres"
)

// benchOrgs is how many organizations the seeded keys are spread over.
const benchOrgs = 100

// seeded is a database of n keys made by seed, and the file of their tokens.
type seeded struct {
	URL, Name, Tokens string
	N                 int
}

// createDatabase creates a fresh database on the server of serverURL and
// returns its URL.
func createDatabase(ctx context.Context, serverURL, tag string) (string, string, error) {
	if err := checkLoopbackURL(serverURL); err != nil {
		return "", "", err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "keygate_bench_" + tag + "_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", "", fmt.Errorf("connecting to %s: %w", redact(serverURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", "", fmt.Errorf("creating database %s: %w", name, err)
	}
	u, _ := url.Parse(serverURL)
	u.Path = "/" + name
	return u.String(), name, nil
}

// dropDatabase drops a database that createDatabase made.
func dropDatabase(serverURL, name string) error {
	if !strings.HasPrefix(name, "keygate_bench_") {
		return fmt.Errorf("refusing to drop %q: not a bench database", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	return err
}

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "<database URL>"
}

// seed creates a fresh database migrated to keygate's schema, fills it with
// n active secret keys (scopes read and write, no rate limit of their own,
// over benchOrgs organizations) by COPY, and writes "key_id org_id token"
// lines to tokensPath. Only each token's SHA-256 is stored, as keygate does.
func seed(ctx context.Context, serverURL string, n int, tokensPath string, log io.Writer) (seeded, error) {
	start := time.Now()
	dbURL, name, err := createDatabase(ctx, serverURL, fmt.Sprint(n))
	if err != nil {
		return seeded{}, err
	}
	s := seeded{URL: dbURL, Name: name, Tokens: tokensPath, N: n}
	fail := func(err error) (seeded, error) {
		_ = dropDatabase(serverURL, name)
		return seeded{}, err
	}
	st, err := postgres.Open(ctx, postgres.Config{URL: dbURL})
	if err != nil {
		return fail(err)
	}
	err = st.Migrate(ctx)
	st.Close()
	if err != nil {
		return fail(fmt.Errorf("migrating: %w", err))
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fail(err)
	}
	defer conn.Close(ctx)

	f, err := os.Create(tokensPath)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)

	created := time.Now().UTC().Truncate(time.Microsecond)
	orgs := make([][]any, benchOrgs)
	for i := range orgs {
		orgs[i] = []any{orgID(i), created, nil}
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"organizations"}, []string{"id", "created_at", "disabled_at"}, pgx.CopyFromRows(orgs)); err != nil {
		return fail(fmt.Errorf("copying organizations: %w", err))
	}

	// Keys and tokens are generated once, in order, for both COPYs.
	format := apikey.DefaultFormat()
	type gen struct {
		id, org, prefix, last4 string
		hash                   keygate.Hash
	}
	keys := make([]gen, n)
	for i := range keys {
		tok, err := format.Generate(keygate.Secret, keygate.Live)
		if err != nil {
			return fail(err)
		}
		id, err := apikey.NewKeyID()
		if err != nil {
			return fail(err)
		}
		keys[i] = gen{id: id, org: orgID(i % benchOrgs), prefix: tok.Prefix(), last4: tok.Last4(), hash: tok.Hash()}
		fmt.Fprintf(w, "%s %s %s\n", id, keys[i].org, tok.String())
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	scopes := []string{"read", "write"}
	noProjects := []string{}
	i := 0
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"api_keys"},
		[]string{"id", "org_id", "user_id", "name", "type", "environment", "scopes", "project_ids", "metadata", "prefix", "last4", "created_at"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			k := &keys[i]
			i++
			return []any{k.id, k.org, "bench-user", "bench", "secret", "live", scopes, noProjects, `{"plan":"bench"}`, k.prefix, k.last4, created}, nil
		}))
	if err != nil {
		return fail(fmt.Errorf("copying api_keys: %w", err))
	}
	i = 0
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"key_tokens"}, []string{"hash", "key_id"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			k := &keys[i]
			i++
			return []any{k.hash[:], k.id}, nil
		}))
	if err != nil {
		return fail(fmt.Errorf("copying key_tokens: %w", err))
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return fail(err)
	}
	fmt.Fprintf(log, "seed: %d keys into %s in %s; tokens in %s\n", n, name, time.Since(start).Round(time.Millisecond), tokensPath)
	return s, nil
}

func orgID(i int) string { return fmt.Sprintf("org_bench_%03d", i) }

// benchKey is one seeded key, as the tokens file has it.
type benchKey struct{ ID, Org, Token string }

func readTokens(path string) ([]benchKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []benchKey
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		out = append(out, benchKey{fs[0], fs[1], fs[2]})
	}
	return out, sc.Err()
}
