package postgres

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	// Connect opens the dedicated connection (Store.ListenConn): never a
	// pooled one, since a transaction-mode pooler breaks LISTEN.
	Connect func(ctx context.Context) (*pgx.Conn, error)
	// Heartbeat (--heartbeat-interval) is how often the listener NOTIFYs
	// itself; two missed heartbeats count as a dead connection.
	Heartbeat time.Duration
	// OnConnect runs after every successful LISTEN, first and again after
	// each reconnect: the caller replays the events log from its last
	// sequence, so nothing committed while disconnected is missed.
	OnConnect func()
	// OnNotify runs for every event notification (payload: the sequence).
	OnNotify func(payload string)
	// OnHeartbeat runs when the listener's own heartbeat came back: the
	// connection delivered everything committed before it was sent.
	OnHeartbeat func(sent time.Time)
	// MinBackoff and MaxBackoff bound the jittered reconnect delay.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	Registerer             prometheus.Registerer
}

// Listener follows NOTIFY on NotifyChannel over one dedicated connection,
// in the manner of jackc/pgxlisten: LISTEN first, then OnConnect (the
// backlog), then notifications as they come, reconnecting with jittered
// backoff whenever the connection fails or its heartbeat stops coming back
// (a LISTEN can die silently behind a NAT or a proxy).
type Listener struct {
	cfg ListenerConfig
	id  string // in heartbeat payloads, so each listener hears its own
	up  atomic.Bool
	// everUp is set after the first LISTEN; only Run's goroutine uses it.
	everUp bool

	connected  prometheus.Gauge
	reconnects prometheus.Counter
	missed     prometheus.Counter
}

// heartbeatPrefix starts every heartbeat payload; event payloads are
// sequence numbers and never start with it.
const heartbeatPrefix = "hb:"

// NewListener returns a listener; Run starts it.
func NewListener(cfg ListenerConfig) (*Listener, error) {
	if cfg.Connect == nil {
		return nil, errors.New("postgres: listener needs Connect")
	}
	if cfg.Heartbeat <= 0 {
		return nil, errors.New("postgres: heartbeat interval must be positive")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnConnect == nil {
		cfg.OnConnect = func() {}
	}
	if cfg.OnNotify == nil {
		cfg.OnNotify = func(string) {}
	}
	if cfg.OnHeartbeat == nil {
		cfg.OnHeartbeat = func(time.Time) {}
	}
	var b [8]byte
	_, _ = crand.Read(b[:])
	l := &Listener{
		cfg: cfg,
		id:  heartbeatPrefix + hex.EncodeToString(b[:]),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_listener_connected",
			Help: "1 while the LISTEN connection for key events is up and its heartbeat returns.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_listener_reconnects_total",
			Help: "Times the LISTEN connection was re-established after it had been up.",
		}),
		missed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_listener_heartbeat_timeouts_total",
			Help: "LISTEN connections dropped because a heartbeat could not be sent or two did not come back.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{l.connected, l.reconnects, l.missed} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// Connected reports whether the LISTEN connection is up.
func (l *Listener) Connected() bool { return l.up.Load() }

// errHeartbeatLost ends a connection whose heartbeats stopped returning.
var errHeartbeatLost = errors.New("two heartbeats did not come back")

// Run listens until ctx ends, reconnecting as needed; it returns nil then.
func (l *Listener) Run(ctx context.Context) error {
	backoff := l.cfg.MinBackoff
	for {
		began := time.Now()
		err := l.listen(ctx)
		l.connected.Set(0)
		l.up.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > l.cfg.MaxBackoff {
			backoff = l.cfg.MinBackoff // it had been healthy: retry promptly
		}
		// Full jitter, so replicas that lost the database together do not
		// reconnect in lockstep.
		delay := time.Duration(rand.Int64N(int64(backoff)) + 1)
		l.cfg.Logger.Warn("event listener disconnected; reconnecting", "err", err, "in", delay.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		backoff = min(2*backoff, l.cfg.MaxBackoff)
	}
}

func (l *Listener) listen(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, l.cfg.Heartbeat*2)
	conn, err := l.cfg.Connect(cctx)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := l.exec(ctx, conn, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("LISTEN: %w", err)
	}
	l.connected.Set(1)
	l.up.Store(true)
	if l.everUp {
		l.reconnects.Inc()
	}
	l.everUp = true
	l.cfg.Logger.Info("event listener connected", "channel", NotifyChannel)
	// LISTEN is in place before the backlog is read, so nothing committed
	// from here on can fall into a gap between the two.
	l.cfg.OnConnect()

	hb := l.cfg.Heartbeat
	lastHeard := time.Now()
	var pending []time.Time // heartbeats sent and not yet heard
	nextBeat := time.Now()
	for {
		if time.Since(lastHeard) > 2*hb {
			l.missed.Inc()
			return errHeartbeatLost
		}
		if !time.Now().Before(nextBeat) {
			sent := time.Now()
			if _, err := l.exec(ctx, conn, "SELECT pg_notify($1, $2)", NotifyChannel, l.id); err != nil {
				if ctx.Err() == nil {
					l.missed.Inc() // the connection cannot even send one
				}
				return fmt.Errorf("heartbeat: %w", err)
			}
			pending = append(pending, sent)
			nextBeat = sent.Add(hb)
		}
		wctx, cancel := context.WithDeadline(ctx, nextBeat)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && wctx.Err() != nil:
			continue // time for the next heartbeat
		case err != nil:
			return err
		}
		switch {
		case n.Payload == l.id:
			lastHeard = time.Now()
			if len(pending) > 0 {
				// Notifications arrive in commit order, so this is the
				// oldest one outstanding.
				l.cfg.OnHeartbeat(pending[0])
				pending = pending[1:]
			}
		case strings.HasPrefix(n.Payload, heartbeatPrefix):
			// another replica's heartbeat
		default:
			l.cfg.OnNotify(n.Payload)
		}
	}
}

// exec runs a statement with a deadline of one heartbeat interval: a
// connection that cannot answer that fast is as good as dead.
func (l *Listener) exec(ctx context.Context, conn *pgx.Conn, sql string, args ...any) (any, error) {
	ectx, cancel := context.WithTimeout(ctx, l.cfg.Heartbeat)
	defer cancel()
	return conn.Exec(ectx, sql, args...)
}
