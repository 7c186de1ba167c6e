package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// buildKeygate builds ./cmd/keygate of the module in dir into out, once per
// harness run.
func buildKeygate(ctx context.Context, dir, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/keygate")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building keygate in %s: %w", dir, err)
	}
	return nil
}

// freePort is a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// child is a server the harness started: keygate or the null server.
type child struct {
	name     string
	cmd      *exec.Cmd
	GRPCAddr string
	HTTPAddr string // keygate only
	done     chan struct{}
}

// startKeygate runs `keygate serve` against dbURL on loopback ports, with no
// per-key rate limit and no failed-auth throttle (the harness sends from one
// address), and waits until /readyz answers 200.
func startKeygate(ctx context.Context, bin, name, dbURL string, cacheMaxBytes int64, logDir string) (*child, error) {
	gp, err := freePort()
	if err != nil {
		return nil, err
	}
	hp, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &child{name: name, GRPCAddr: fmt.Sprintf("127.0.0.1:%d", gp), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", hp)}
	args := []string{"serve", "--database-url", dbURL,
		"--grpc-addr", c.GRPCAddr, "--http-addr", c.HTTPAddr,
		"--rate-limit", "0", "--failed-auth-limit", "0",
		"--cache-max-bytes", strconv.FormatInt(cacheMaxBytes, 10),
		// The 1 000 000-key runs last minutes: keep entries and the
		// negative cache for all of it.
		"--cache-ttl", "1h", "--negative-cache-ttl", "1h"}
	if err := c.start(ctx, bin, args, logDir); err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, "http://"+c.HTTPAddr+"/readyz"); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// startNull runs this harness's null ext_authz server as a child process.
func startNull(ctx context.Context, name string, defaults bool, logDir string, extra ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	gp, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &child{name: name, GRPCAddr: fmt.Sprintf("127.0.0.1:%d", gp)}
	args := []string{"null", "-addr", c.GRPCAddr}
	if defaults {
		args = append(args, "-grpc-defaults")
	}
	args = append(args, extra...)
	if err := c.start(ctx, self, args, logDir); err != nil {
		return nil, err
	}
	if err := c.waitTCP(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *child) start(ctx context.Context, bin string, args []string, logDir string) error {
	logf, err := os.Create(filepath.Join(logDir, c.name+".log"))
	if err != nil {
		return err
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the harness
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", c.name, err)
	}
	c.done = make(chan struct{})
	go func() { _ = c.cmd.Wait(); logf.Close(); close(c.done) }()
	return nil
}

func (c *child) waitHTTP(ctx context.Context, u string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before it was ready (see its log)", c.name)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("%s: %s not ready after 60s", c.name, u)
}

func (c *child) waitTCP(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := net.DialTimeout("tcp", c.GRPCAddr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before it listened", c.name)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: not listening after 30s", c.name)
}

// Stop ends the child with SIGTERM, then SIGKILL after 10 s.
func (c *child) Stop() {
	if c == nil || c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// RSS is the child's resident set size (VmRSS) in bytes.
func (c *child) RSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", c.cmd.Process.Pid)
}

// Metric is the value of the unlabelled metric name on the child's /metrics.
func (c *child) Metric(name string) (float64, error) {
	resp, err := http.Get("http://" + c.HTTPAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s not on /metrics", name)
}
