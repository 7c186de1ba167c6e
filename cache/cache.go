// Package cache remembers key records in process: a ristretto cache keyed by
// token hash, in front of the store, satisfying the same lookup interface.
// It is invalidated by the key-events log (see Follower).
package cache

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
)

// Lookup is what the cache wraps and what it offers: the one query the
// decision needs.
type Lookup interface {
	LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error)
}

// Config configures a Cache.
type Config struct {
	MaxBytes    int64         // --cache-max-bytes
	TTL         time.Duration // --cache-ttl: positive entries are reloaded after it
	NegativeTTL time.Duration // --negative-cache-ttl
	Now         func() time.Time
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
}

// Cache is a Lookup that remembers the answers of another Lookup.
type Cache struct {
	// filled in below
}

// New returns a cache in front of next.
func New(next Lookup, cfg Config) (*Cache, error) {
	panic("todo")
}

// LookupKey answers from the cache, or from next on a miss; concurrent misses
// for one hash make one call to next. Entry.LoadedAt of the returned value
// tells how old the record is.
func (c *Cache) LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error) {
	panic("todo")
}

// Apply invalidates what one event names.
func (c *Cache) Apply(ev keygate.Event) { panic("todo") }

// Purge drops every entry.
func (c *Cache) Purge() { panic("todo") }

// Close releases the cache.
func (c *Cache) Close() { panic("todo") }

// EventSource is the part of the store that a Follower reads.
type EventSource interface {
	LatestEventSeq(ctx context.Context) (int64, error)
	Events(ctx context.Context, after int64, limit int) ([]keygate.Event, error)
}

// Follower applies the key-events log to a cache.
type Follower struct{}

// NewFollower returns a follower that polls src every interval.
func NewFollower(src EventSource, c *Cache, interval time.Duration, logger *slog.Logger, reg prometheus.Registerer) *Follower {
	panic("todo")
}

// Run follows the log until ctx ends; it returns nil then.
func (f *Follower) Run(ctx context.Context) error { panic("todo") }
