package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// migrateCmd is `keygate migrate`.
type migrateCmd struct {
	Conn connFlags `embed:""`
}

// Run applies the migrations (under PostgreSQL's advisory lock).
func (m *migrateCmd) Run(d *deps) error {
	logger := m.Conn.logger(d.stderr)
	st, _, err := m.Conn.openMigrated(d.ctx, logger, createStore)
	if err != nil {
		return err
	}
	st.Close()
	logger.Info("migrations applied")
	return nil
}

// orgsCmd is `keygate orgs`.
type orgsCmd struct {
	Create  orgCreateCmd  `cmd:"" help:"Create an organization."`
	Disable orgDisableCmd `cmd:"" help:"Disable an organization: its keys are denied with organization_disabled."`
	Enable  orgEnableCmd  `cmd:"" help:"Enable a disabled organization."`
}

// orgArgs are the flags and argument of `keygate orgs create|disable|enable`.
type orgArgs struct {
	Conn connFlags `embed:""`
	Org  string    `arg:"" name:"ORG" help:"Organization id."`
}

type (
	orgCreateCmd  struct{ orgArgs }
	orgDisableCmd struct{ orgArgs }
	orgEnableCmd  struct{ orgArgs }
)

// Run creates the organization.
func (o *orgCreateCmd) Run(d *deps) error {
	return o.do(d, "created", (*manage.Service).CreateOrganization)
}

// Run disables the organization.
func (o *orgDisableCmd) Run(d *deps) error {
	return o.do(d, "disabled", (*manage.Service).DisableOrganization)
}

// Run enables the organization.
func (o *orgEnableCmd) Run(d *deps) error {
	return o.do(d, "enabled", (*manage.Service).EnableOrganization)
}

type orgOp func(*manage.Service, context.Context, string, keygate.Actor) (keygate.Organization, error)

func (o *orgArgs) do(d *deps, done string, op orgOp) error {
	if err := manage.ValidateID("org_id", o.Org); err != nil {
		return cliError(err, map[string]string{"org_id": "ORG"})
	}
	st, _, err := o.Conn.openMigrated(d.ctx, o.Conn.logger(d.stderr), existingStore)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := op(manage.New(st, o.Conn.format, time.Now), d.ctx, o.Org, keygate.Actor{}); err != nil {
		return cliError(err, map[string]string{"org_id": "ORG"})
	}
	fmt.Fprintf(d.stdout, "organization %s %s\n", o.Org, done)
	return nil
}

// keysCmd is `keygate keys`.
type keysCmd struct {
	Create keysCreateCmd `cmd:"" help:"Create a key and print its token, once."`
	List   keysListCmd   `cmd:"" help:"List an organization's keys."`
	Revoke keysRevokeCmd `cmd:"" help:"Revoke a key."`
	Usage  keysUsageCmd  `cmd:"" help:"Show a key's usage analytics: allowed and denied Checks per hour or day."`
	Import keysImportCmd `cmd:"" help:"Import keys from another system by their tokens' hashes (JSON Lines)."`
}

// keysCreateCmd is `keygate keys create`. Its per-key flags read no
// environment: a stray KEYGATE_ROLE must never widen a key.
type keysCreateCmd struct {
	Conn      connFlags    `embed:""`
	Org       string       `required:"" help:"Organization of the key; created if missing."`
	User      string       `required:"" help:"User the key acts for."`
	Name      string       `required:"" help:"Name of the key, 1–200 characters."`
	Role      string       `xor:"scopes" help:"owner, admin, member or viewer (default member)."`
	Scopes    scopeList    `xor:"scopes" placeholder:"SCOPES" help:"Scopes instead of a role, comma-separated."`
	Project   []string     `sep:"none" help:"Restrict the key to a project; repeat for several (default: every project)."`
	Source    []string     `name:"allow-source" sep:"none" placeholder:"CIDR|SPIFFE-ID" help:"Bind the key to a CIDR, an IP address or a SPIFFE ID (spiffe://<trust domain>/<path>, or ending in /* for every path under it); repeat for several (default: anywhere)."`
	Type      string       `default:"secret" enum:"secret,publishable" help:"secret or publishable."`
	Env       string       `default:"live" enum:"live,test" help:"live or test."`
	ExpiresIn days         `name:"expires-in" placeholder:"DURATION" help:"Expire after this long: a Go duration or days (90d)."`
	RateLimit *number      `name:"rate-limit" placeholder:"N" help:"Requests per minute (0: unlimited; default: the server's --rate-limit)."`
	Limit     []namedLimit `name:"limit" sep:"none" placeholder:"NAME=N/DURATION" help:"A named rate limit, N requests per DURATION (1s to 24h, whole seconds), applied on routes that name it (keygate.ratelimit); repeat for several, at most 8."`
	Metadata  string       `placeholder:"JSON" help:"A JSON object passed to Envoy with every allow (at most 4096 bytes)."`
	JSON      bool         `name:"json" help:"Print the API's JSON answer instead of the token alone."`
	// Usage limits (SPEC §9).
	Remaining *number `name:"remaining" placeholder:"N" help:"Uses the key has (each allowed request spends its route's cost; default: unlimited)."`
	Refill    string  `name:"refill" placeholder:"daily:N|monthly:N" help:"Set the remaining uses to N at 00:00 UTC every day, or on the 1st of every month."`
	refill    *keygate.Refill
}

// createFlags names the flag behind each field that manage validates.
func createFlags() map[string]string {
	return map[string]string{
		"org_id": "--org", "user_id": "--user", "name": "--name", "role": "--role", "scopes": "--scopes",
		"project_ids": "--project", "type": "--type", "environment": "--env", "expires_at": "--expires-in",
		"rate_limit_per_minute": "--rate-limit", "metadata": "--metadata", "allowed_sources": "--allow-source",
		"rate_limits": "--limit",
		"remaining":   "--remaining", "refill": "--refill", "refill.interval": "--refill", "refill.amount": "--refill",
	}
}

// Validate checks what manage cannot see: the flag forms.
func (k *keysCreateCmd) Validate() error {
	if k.ExpiresIn.set && k.ExpiresIn.d <= 0 {
		return fmt.Errorf("--expires-in must be positive")
	}
	if k.RateLimit != nil && *k.RateLimit < 0 {
		return fmt.Errorf("--rate-limit must be ≥ 0 (0: unlimited), got %d", *k.RateLimit)
	}
	if k.Metadata != "" && !json.Valid([]byte(k.Metadata)) {
		return fmt.Errorf("--metadata must be a JSON object")
	}
	if k.Remaining != nil && (*k.Remaining < 0 || int64(*k.Remaining) > manage.MaxRemaining) {
		return fmt.Errorf("--remaining must be from 0 to %d, got %d", int64(manage.MaxRemaining), *k.Remaining)
	}
	if k.Refill != "" {
		r, err := manage.ParseRefill(k.Refill)
		if err != nil {
			return fmt.Errorf("--refill %q must be daily:N or monthly:N with N from 0 to %d", k.Refill, int64(manage.MaxRemaining))
		}
		k.refill = &r
	}
	return nil
}

// Run creates the key and prints its token: the only time it is shown.
func (k *keysCreateCmd) Run(d *deps) error {
	now := time.Now()
	nk := manage.NewKey{
		OrgID: k.Org, UserID: k.User, Name: k.Name, Role: k.Role, Scopes: k.Scopes, ProjectIDs: k.Project,
		Type: keygate.KeyType(k.Type), Environment: keygate.Environment(k.Env),
		RateLimitPerMinute: (*int)(k.RateLimit), CreateOrganization: true, AllowedSources: k.Source,
	}
	for _, l := range k.Limit {
		nk.RateLimits = append(nk.RateLimits, keygate.RateLimit(l))
	}
	if k.Metadata != "" {
		nk.Metadata = json.RawMessage(k.Metadata)
	}
	if k.Remaining != nil {
		n := int64(*k.Remaining)
		nk.Remaining = &n
	}
	nk.Refill = k.refill
	if nk.Role == "" && len(nk.Scopes) == 0 {
		nk.Role = manage.DefaultRole
	}
	if k.ExpiresIn.set {
		t := now.Add(k.ExpiresIn.d)
		nk.ExpiresAt = &t
	}
	// A bad request is rejected before the store is opened or migrated.
	if err := manage.ValidateNewKey(nk, now); err != nil {
		return cliError(err, createFlags())
	}
	st, _, err := k.Conn.openMigrated(d.ctx, k.Conn.logger(d.stderr), existingStore)
	if err != nil {
		return err
	}
	defer st.Close()
	created, err := manage.New(st, k.Conn.format, time.Now).CreateKey(d.ctx, nk, keygate.Actor{})
	if err != nil {
		return cliError(err, createFlags())
	}
	if k.JSON {
		return writeJSON(d, httpapi.Data[httpapi.CreatedAPIKey]{Data: httpapi.CreatedAPIKey{
			APIKey: httpapi.NewAPIKey(created.Key, now), Key: created.Token.String(),
		}})
	}
	fmt.Fprintln(d.stdout, created.Token.String())
	key := created.Key
	fmt.Fprintf(d.stderr, "created %s key %s (%s…%s) for user %s in organization %s, scopes %s; the token above is shown only once\n",
		key.Type, key.ID, key.Prefix, key.Last4, key.UserID, key.OrgID, list(key.Scopes))
	return nil
}

// keysListCmd is `keygate keys list`.
type keysListCmd struct {
	Conn connFlags `embed:""`
	Org  string    `required:"" help:"Organization whose keys to list."`
	JSON bool      `name:"json" help:"Print the API's JSON answer: every key, {\"data\": [...], \"next_cursor\": null}."`
}

// Run lists every key of the organization that is not revoked.
func (k *keysListCmd) Run(d *deps) error {
	if err := manage.ValidateID("org_id", k.Org); err != nil {
		return cliError(err, map[string]string{"org_id": "--org"})
	}
	st, _, err := k.Conn.openMigrated(d.ctx, k.Conn.logger(d.stderr), existingStore)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := requireOrg(d.ctx, st, k.Org); err != nil {
		return err
	}
	keys, err := manage.New(st, k.Conn.format, time.Now).ListKeys(d.ctx, k.Org)
	if err != nil {
		return cliError(err, map[string]string{"org_id": "--org"})
	}
	now := time.Now()
	if k.JSON {
		out := httpapi.List[httpapi.APIKey]{Data: make([]httpapi.APIKey, 0, len(keys))}
		for _, key := range keys {
			out.Data = append(out.Data, httpapi.NewAPIKey(key, now))
		}
		return writeJSON(d, out)
	}
	tw := tabwriter.NewWriter(d.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tUSER\tTYPE\tENV\tSCOPES\tSTATUS\tUSES LEFT\tCREATED\tEXPIRES")
	for _, key := range keys {
		expires := "-"
		if key.ExpiresAt != nil {
			expires = key.ExpiresAt.UTC().Format(time.RFC3339)
		}
		uses := "-" // unlimited
		if key.Remaining != nil {
			uses = strconv.FormatInt(*key.Remaining, 10)
			if key.Refill != nil {
				uses += fmt.Sprintf(" (%s:%d)", key.Refill.Interval, key.Refill.Amount)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s…%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", key.ID, key.Name, key.Prefix, key.Last4, key.UserID,
			key.Type, key.Environment, list(key.Scopes), key.Status(now), uses, key.CreatedAt.UTC().Format(time.RFC3339), expires)
	}
	return tw.Flush()
}

// keysRevokeCmd is `keygate keys revoke`.
type keysRevokeCmd struct {
	Conn connFlags `embed:""`
	Org  string    `required:"" help:"Organization of the key."`
	ID   string    `arg:"" name:"ID" help:"Key id (key_…)."`
	JSON bool      `name:"json" help:"Print the revoked key as the API would."`
	// --wait (SPEC §12): see revokeAndWait.
	Wait     bool          `name:"wait" help:"Wait until every live replica has applied the revocation; print the propagation; exit 3 if the timeout passes first (PostgreSQL only)."`
	Timeout  time.Duration `name:"timeout" default:"5s" help:"How long --wait waits, 1s to 30s."`
	Liveness livenessFlags `embed:""`
}

// Run revokes the key. Once it returns, every replica following the
// events log stops allowing the key within its poll interval.
func (k *keysRevokeCmd) Run(d *deps) error {
	if err := manage.ValidateID("org_id", k.Org); err != nil {
		return cliError(err, map[string]string{"org_id": "--org"})
	}
	if k.Wait {
		return k.revokeAndWait(d)
	}
	st, _, err := k.Conn.openMigrated(d.ctx, k.Conn.logger(d.stderr), existingStore)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := requireOrg(d.ctx, st, k.Org); err != nil {
		return err
	}
	key, err := manage.New(st, k.Conn.format, time.Now).RevokeKey(d.ctx, k.Org, k.ID, keygate.Actor{})
	if err != nil {
		return k.revokeError(err)
	}
	if k.JSON {
		return writeJSON(d, httpapi.Data[httpapi.APIKey]{Data: httpapi.NewAPIKey(key, time.Now())})
	}
	fmt.Fprintf(d.stdout, "revoked %s\n", key.ID)
	return nil
}

// revokeError is the message of a revoke that failed.
func (k *keysRevokeCmd) revokeError(err error) error {
	if keygate.ErrorCode(err) == keygate.CodeNotFound {
		return fmt.Errorf("no key %s in organization %s (or it is revoked already); keygate keys list --org %s shows its keys", k.ID, k.Org, k.Org)
	}
	return cliError(err, map[string]string{"org_id": "--org", "id": "ID"})
}

// requireOrg fails, exit status 1, when organization org does not exist,
// so that a mistyped --org is named as such rather than answered with an
// empty list or a missing key.
func requireOrg(ctx context.Context, st store.Store, org string) error {
	_, err := st.GetOrganization(ctx, org)
	switch keygate.ErrorCode(err) {
	case "":
		return nil
	case keygate.CodeNotFound:
		return fmt.Errorf("organization %s does not exist", org)
	default:
		return fmt.Errorf("reading organization %s: %w", org, err)
	}
}

// cliError turns a management error into the CLI's terms: a bad field
// names its flag and is a usage error; anything else keeps its code.
func cliError(err error, flags map[string]string) error {
	var e *keygate.Error
	if errors.As(err, &e) && e.Code == keygate.CodeInvalidRequest {
		// allowed_sources[i] is the i-th --allow-source.
		param, _, _ := strings.Cut(e.Param, "[")
		if flag, ok := flags[param]; ok {
			return usageErrorf("%s: %s", flag, keygate.ErrorMessage(err))
		}
	}
	return err
}

func writeJSON(d *deps, v any) error {
	enc := json.NewEncoder(d.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}
