package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// ghzReport is the part of ghz's JSON report the harness reads.
type ghzReport struct {
	Count   int     `json:"count"`
	RPS     float64 `json:"rps"`
	Total   int64   `json:"total"`
	Latency []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"`
	} `json:"latencyDistribution"`
	StatusCodes map[string]int `json:"statusCodeDistribution"`
}

// runGhz drives Check on addr with ghz (closed loop, conc workers on one
// connection, for d), finding the method by server reflection. ghz reports
// p10…p99, not p99.9.
func runGhz(ctx context.Context, bin, addr string, req *authv3.CheckRequest, conc int, d time.Duration) (Summary, error) {
	if err := checkLoopback(addr); err != nil {
		return Summary{}, err
	}
	data, err := protojson.Marshal(req)
	if err != nil {
		return Summary{}, err
	}
	cmd := exec.CommandContext(ctx, bin, "--insecure",
		"--call", "envoy.service.auth.v3.Authorization/Check",
		"-d", string(data), "-c", strconv.Itoa(conc), "--connections", "1",
		"-z", d.String(), "-O", "json", addr)
	out, err := cmd.Output()
	if err != nil {
		return Summary{}, fmt.Errorf("ghz: %w", err)
	}
	var r ghzReport
	if err := json.Unmarshal(out, &r); err != nil {
		return Summary{}, fmt.Errorf("ghz report: %w", err)
	}
	s := Summary{N: r.Count, Elapsed: time.Duration(float64(r.Count) / r.RPS * float64(time.Second))}
	for code, n := range r.StatusCodes {
		if code != "OK" {
			s.Errors += n
		}
	}
	for _, l := range r.Latency {
		switch l.Percentage {
		case 50:
			s.P50 = time.Duration(l.Latency)
		case 90:
			s.P90 = time.Duration(l.Latency)
		case 99:
			s.P99 = time.Duration(l.Latency)
		}
	}
	return s, nil
}
