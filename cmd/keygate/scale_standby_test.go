package main

import (
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/pgstandby"
	"github.com/keygate/keygate/internal/pgtest"
)

// TestStandby_PausedReplayNeitherResurrectsNorHidesAKey runs three
// replicas whose cache misses go to a real streaming hot standby, and
// pauses the standby's replay: a key revoked on the primary is allowed by
// no replica a second later, and a key created while the standby cannot
// see it (on the primary, or through one replica's API) is allowed by
// every replica within a second, even one that had cached its token as
// unknown.
func TestStandby_PausedReplayNeitherResurrectsNorHidesAKey(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	sb := pgstandby.Start(t)
	ring := newKeyring(t, dbURL)
	adminTok := ring.admin()
	victim, victimTok := ring.create()
	sb.WaitReplayed(t)
	e := env{"KEYGATE_DATABASE_URL": dbURL, "KEYGATE_READ_DATABASE_URL": sb.URL(t, dbURL)}
	// No preload: the first Check of the victim must be a miss the standby
	// answers.
	args := []string{"--poll-interval", "1h", "--rate-limit", "0", "--failed-auth-limit", "0", "--preload-keys", "0"}
	rs := []*replica{startReplica(t, e, args...), startReplica(t, e, args...), startReplica(t, e, args...)}
	waitListening(t, rs...)
	for i, r := range rs {
		if got := r.decide(t, victimTok); got != 200 {
			t.Fatalf("replica %d: warming: %d", i, got)
		}
		if got := r.metric(t, "keygate_standby_lookups_total"); got < 1 {
			t.Fatalf("replica %d: keygate_standby_lookups_total = %v: the standby answered no miss", i, got)
		}
	}

	sb.PauseReplay(t)
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			sb.ResumeReplay(t)
		}
	})

	// Revoked on the primary (as `keygate keys revoke` does): the standby
	// still has it live, and must not be believed.
	ring.revoke(victim.ID)
	took := within(t, rs, victimTok, 401, time.Now(), time.Second, 300*time.Millisecond)
	t.Logf("revoked key denied by the replicas after %s with replay paused", fmtDurations(took))
	for i, r := range rs {
		if got := r.metric(t, "keygate_standby_fallbacks_total"); got < 1 {
			t.Errorf("replica %d: keygate_standby_fallbacks_total = %v, want the paused standby passed over", i, got)
		}
	}

	// Created elsewhere, with replica 1 holding its token as unknown.
	tok := newToken(t)
	if got := rs[1].decide(t, tok.String()); got != 401 {
		t.Fatalf("a token before its key exists: %d, want 401", got)
	}
	ring.createWithToken(tok)
	took = within(t, rs, tok.String(), 200, time.Now(), time.Second, 0)
	t.Logf("key created on the primary allowed after %s with replay paused", fmtDurations(took))

	// Created through replica 0's API: it allows at once, the others
	// within a second.
	_, apiTok := rs[0].apiCreate(t, adminTok)
	created := time.Now()
	if got := rs[0].decide(t, apiTok); got != 200 {
		t.Errorf("replica 0 right after creating a key through its API: %d, want 200", got)
	}
	took = within(t, rs[1:], apiTok, 200, created, time.Second, 0)
	t.Logf("key created through replica 0 allowed by the others after %s with replay paused", fmtDurations(took))

	// Revoked through replica 0's API, which every replica has cached by
	// now: replica 0 denies it as soon as the call returns.
	apiID, apiTok := rs[0].apiCreate(t, adminTok)
	within(t, rs, apiTok, 200, time.Now(), time.Second, 0)
	rs[0].apiRevoke(t, adminTok, apiID)
	revoked := time.Now()
	if got := rs[0].decide(t, apiTok); got != 401 {
		t.Errorf("replica 0 right after revoking a key through its API: %d, want 401", got)
	}
	within(t, rs[1:], apiTok, 401, revoked, time.Second, 200*time.Millisecond)

	// Replay resumes: the standby catches up and answers misses again.
	sb.ResumeReplay(t)
	resumed = true
	_, fresh := ring.create()
	sb.WaitReplayed(t)
	for i, r := range rs {
		before := r.metric(t, "keygate_standby_lookups_total")
		if !eventually(5*time.Second, func() bool { return r.decide(t, fresh) == 200 }) {
			t.Fatalf("replica %d: key created after the resume not allowed", i)
		}
		if got := r.metric(t, "keygate_standby_lookups_total"); got <= before {
			t.Errorf("replica %d: the caught-up standby answered no miss (%v → %v)", i, before, got)
		}
		if got := r.decide(t, victimTok); got != 401 {
			t.Errorf("replica %d: revoked key after the resume: %d, want 401", i, got)
		}
	}
}

func TestFlags_ReadDatabaseURLIsOneLineNamingIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  env
		args []string
	}{
		{"without database url", nil, []string{"serve", "--read-database-url", "postgres://standby/keygate"}},
		{"of another kind", nil, []string{"serve", "--database-url", "postgres://x/y", "--read-database-url", "mysql://u:hunter2@standby/y"}},
		{"from env", env{"KEYGATE_DATABASE_URL": "postgres://x/y", "KEYGATE_READ_DATABASE_URL": "standby:5432"}, []string{"migrate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := invoke(t, tc.env, tc.args...)
			if r.code == 0 {
				t.Fatalf("exit 0, want an error")
			}
			oneLineNaming(t, r, "--read-database-url")
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("stderr repeats the URL's password: %q", r.stderr)
			}
		})
	}
}
