// Package leak handles reports of leaked keys (SPEC §13): the
// secret-scanning partner reports of POST /v1/leaked-keys, their optional
// ECDSA signatures, and the offline scan of files behind `keygate scan`.
//
// A report names tokens someone found in public. Each one that is a live
// key is revoked, deactivated or only recorded (--leak-action), with an
// api_key.leaked audit event, through the store's one transaction per
// change, so every replica follows it from the events log. Tokens that are
// not live keys cost the reporting address a failed authentication, unless
// the report is signed: the endpoint would otherwise be a free oracle for
// guessed tokens.
package leak

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// MaxItems bounds the tokens of one report.
const MaxItems = 100

// Labels of a Result.
const (
	TruePositive  = "true_positive"
	FalsePositive = "false_positive"
)

// Store is what reports need of the key store.
type Store interface {
	LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error)
	ReportLeak(ctx context.Context, orgID, id string, l store.LeakReport, by keygate.Actor) (keygate.Key, error)
}

// Throttle is the failed-authentication throttle of client addresses
// (ratelimit.Throttle), the one Check and the management API use.
type Throttle interface {
	Blocked(addr netip.Addr) (time.Duration, bool)
	Failed(addr netip.Addr)
}

// Config configures a Service.
type Config struct {
	Store  Store
	Format apikey.Format
	// Action is done to a reported live secret key; LeakRevoke if empty.
	// LeakNotify needs Keys (see Validate).
	Action store.LeakAction
	// Keys, if set, are the keys reports must be signed with.
	Keys *KeySet
	// Throttle, if set, counts unsigned reports' false positives.
	Throttle Throttle
	Now      func() time.Time
	Logger   *slog.Logger
}

// Validate checks the configuration, naming the flag at fault.
func (c Config) Validate() error {
	switch c.Action {
	case "", store.LeakRevoke, store.LeakDeactivate:
	case store.LeakNotify:
		if c.Keys == nil {
			return errors.New("--leak-action notify needs --leak-report-keys: an unsigned endpoint that leaves reported keys live would tell anyone which tokens are real")
		}
	default:
		return fmt.Errorf("--leak-action must be revoke, deactivate or notify, got %q", c.Action)
	}
	return nil
}

// Service handles leak reports.
type Service struct {
	cfg Config
}

// New returns a Service, or the error of cfg.Validate.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Action == "" {
		cfg.Action = store.LeakRevoke
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg}, nil
}

// Request is one report as received.
type Request struct {
	// Body is the raw body, what the signature covers.
	Body []byte
	// KeyID and Signature are the Github-Public-Key-Identifier and
	// Github-Public-Key-Signature headers.
	KeyID, Signature string
	// Addr is the client address, for the throttle.
	Addr      netip.Addr
	RequestID string
}

// Result is the answer about one reported token, in the request's order.
type Result struct {
	TokenRaw  string `json:"token_raw"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// RetryAfterError is the cause of a too_many_failed_attempts: how long the
// address stays blocked.
type RetryAfterError struct{ RetryAfter time.Duration }

func (e *RetryAfterError) Error() string { return fmt.Sprintf("blocked for %s", e.RetryAfter) }

// Report handles one report: the signature (when keys are configured),
// the throttle, the body, then each token in order. Errors are
// *keygate.Error: invalid_signature, too_many_failed_attempts (with a
// *RetryAfterError), invalid_request (ErrNotJSON for a body that does not
// parse), or the store's.
func (s *Service) Report(ctx context.Context, req Request) ([]Result, error) {
	signed := false
	if s.cfg.Keys != nil {
		if err := s.cfg.Keys.Verify(req.KeyID, req.Signature, req.Body); err != nil {
			// A bad signature is a failed authentication of its own.
			if err := s.blocked(req.Addr); err != nil {
				return nil, err
			}
			s.failed(req.Addr)
			return nil, &keygate.Error{Code: keygate.CodeInvalidSignature, Message: err.Error()}
		}
		signed = true
	}
	if !signed {
		if err := s.blocked(req.Addr); err != nil {
			return nil, err
		}
	}
	items, err := Parse(req.Body)
	if err != nil {
		return nil, err
	}
	by := keygate.Actor{RequestID: req.RequestID}
	// A token reported twice gets the same answer twice and one action.
	seen := make(map[keygate.Hash]string, len(items))
	out := make([]Result, 0, len(items))
	for _, it := range items {
		label, err := s.item(ctx, it, by, seen)
		if err != nil {
			return nil, err
		}
		if label == FalsePositive && !signed {
			s.failed(req.Addr)
		}
		out = append(out, Result{TokenRaw: it.Token, TokenType: it.Type, Label: label})
	}
	return out, nil
}

func (s *Service) blocked(addr netip.Addr) error {
	if s.cfg.Throttle == nil {
		return nil
	}
	if d, blocked := s.cfg.Throttle.Blocked(addr); blocked {
		return &keygate.Error{Code: keygate.CodeTooManyFailedAttempts, Err: &RetryAfterError{RetryAfter: d}}
	}
	return nil
}

func (s *Service) failed(addr netip.Addr) {
	if s.cfg.Throttle != nil {
		s.cfg.Throttle.Failed(addr)
	}
}

// item labels one token and acts on it when it is a live key: one whose
// token a lookup finds, not revoked and not rolled away past its grace.
// Inactive and expired keys are live: a PATCH could bring them back.
func (s *Service) item(ctx context.Context, it Item, by keygate.Actor, seen map[keygate.Hash]string) (string, error) {
	tok, err := s.cfg.Format.Parse(it.Token)
	if err != nil {
		return FalsePositive, nil // not our shape, or a look-alike: no lookup
	}
	h := tok.Hash()
	if label, ok := seen[h]; ok {
		return label, nil
	}
	label, err := s.act(ctx, tok, h, it, by)
	if err != nil {
		return "", err
	}
	seen[h] = label
	return label, nil
}

func (s *Service) act(ctx context.Context, tok apikey.Token, h keygate.Hash, it Item, by keygate.Actor) (string, error) {
	rec, err := s.cfg.Store.LookupKey(ctx, h)
	switch {
	case errors.Is(err, keygate.ErrNotFound):
		return FalsePositive, nil
	case err != nil:
		return "", fmt.Errorf("leak report: lookup: %w", err)
	}
	if rec.Key.RevokedAt != nil || (rec.TokenExpiresAt != nil && !rec.TokenExpiresAt.After(s.cfg.Now())) {
		return FalsePositive, nil
	}
	action := s.cfg.Action
	if tok.Type() == keygate.Publishable {
		action = store.LeakNotify // public by design: recorded, never acted on
	}
	k, err := s.cfg.Store.ReportLeak(ctx, rec.Key.OrgID, rec.Key.ID,
		store.LeakReport{Action: action, URL: it.URL, Source: it.Source}, by)
	switch {
	case errors.Is(err, keygate.ErrNotFound):
		return FalsePositive, nil // revoked since the lookup: not live any more
	case err != nil:
		return "", fmt.Errorf("leak report: %w", err)
	}
	s.cfg.Logger.Warn("leaked key reported", "key_id", k.ID, "org_id", k.OrgID, "prefix", k.Prefix,
		"action", string(action), "url", it.URL, "source", it.Source, "request_id", by.RequestID)
	return TruePositive, nil
}
