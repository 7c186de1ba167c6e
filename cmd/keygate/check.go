package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/tlsfiles"
)

// checkCmd is `keygate check`: one Check request as Envoy would send it,
// to see what keygate decides for a key and a route.
type checkCmd struct {
	Addr    string        `required:"" placeholder:"HOST:PORT" help:"keygate's gRPC address."`
	Key     string        `required:"" placeholder:"TOKEN" help:"The API key, sent as 'authorization: Bearer <key>'."`
	Method  string        `default:"GET" help:"HTTP method of the request."`
	Path    string        `default:"/" help:"HTTP path of the request, with any query."`
	Header  []string      `short:"H" sep:"none" placeholder:"'NAME: VALUE'" help:"Another request header; repeat for several."`
	Ext     []string      `name:"ext" sep:"none" placeholder:"NAME=VALUE" help:"A context extension, as an Envoy route sets it (keygate.scope=admin, keygate.cost=5, keygate.ratelimit=search); repeat for several."`
	Timeout time.Duration `default:"5s" help:"How long to wait for keygate, connecting included."`
	TLSCA   string        `name:"tls-ca" placeholder:"FILE" help:"Connect over TLS, verifying keygate against this CA (PEM)."`
	TLSCert string        `name:"tls-cert" placeholder:"FILE" help:"Client certificate (PEM) for mTLS; with --tls-key."`
	TLSKey  string        `name:"tls-key" placeholder:"FILE" help:"Client private key (PEM) for mTLS; with --tls-cert."`

	headers   map[string]string
	ext       map[string]string
	creds     credentials.TransportCredentials
	tlsConfig *tls.Config // nil without TLS
}

// Validate checks the request flags; a malformed one is a usage error.
func (c *checkCmd) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("--addr %q: want host:port", c.Addr)
	}
	if !httpguts.ValidHeaderFieldName(c.Method) {
		return fmt.Errorf("--method %q is not an HTTP method", c.Method)
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("--path %q must start with '/'", c.Path)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("--timeout must be positive")
	}
	c.creds = insecure.NewCredentials()
	if c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" {
		cfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: c.TLSCA, Cert: c.TLSCert, Key: c.TLSKey})
		if err != nil {
			return err
		}
		c.creds, c.tlsConfig = credentials.NewTLS(cfg), cfg
	}
	c.headers = map[string]string{"authorization": "Bearer " + c.Key}
	for _, h := range c.Header {
		name, value, ok := strings.Cut(h, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		if !ok || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return fmt.Errorf("-H %q: want 'name: value'", h)
		}
		value = strings.TrimSpace(value)
		// Envoy joins a repeated header with commas; so does check.
		if prev, dup := c.headers[name]; dup && name != "authorization" {
			value = prev + "," + value
		}
		c.headers[name] = value
	}
	for _, x := range c.Ext {
		name, value, ok := strings.Cut(x, "=")
		if !ok || name == "" {
			return fmt.Errorf("--ext %q: want NAME=VALUE", x)
		}
		if _, dup := c.ext[name]; dup {
			return fmt.Errorf("--ext %q: %s given twice", x, name)
		}
		if c.ext == nil {
			c.ext = map[string]string{}
		}
		c.ext[name] = value
	}
	return nil
}

// Run sends the request and prints the decision: exit 0 allowed, 1
// denied, 2 when keygate could not be asked.
func (c *checkCmd) Run(d *deps) error {
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(c.creds))
	if err != nil {
		return usageErrorf("--addr %q: %v", c.Addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(d.ctx, c.Timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, c.request())
	if err != nil {
		if code := status.Code(err); (code == codes.Unavailable || code == codes.Unimplemented) && c.answersHTTP(d.ctx) {
			return usageErrorf("check %s: this looks like keygate's HTTP port (serve's --http-addr), which speaks HTTP/1; "+
				"--addr wants the gRPC port (serve's --grpc-addr, default :9001)", c.Addr)
		}
		return &exitError{code: exitUsage, err: fmt.Errorf("check %s: %s", c.Addr, status.Convert(err).Message())}
	}
	if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		printAllow(d.stdout, resp)
		return nil
	}
	printDeny(d.stdout, resp)
	return &exitError{code: exitFail}
}

// answersHTTP tells whether --addr answers an HTTP/1.1 request, the
// sign of a gRPC call sent to keygate's HTTP port (or another web server).
// A gRPC transport error says only that the answer was not HTTP/2, in
// words that name frames and prefaces; asking again in HTTP/1.1 is the
// honest way to tell.
func (c *checkCmd) answersHTTP(ctx context.Context) bool {
	scheme, transport := "http", &http.Transport{DisableKeepAlives: true}
	if c.tlsConfig != nil {
		scheme, transport.TLSClientConfig = "https", c.tlsConfig.Clone()
		transport.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	client := &http.Client{Transport: transport, Timeout: 2 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+c.Addr+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

func (c *checkCmd) request() *authv3.CheckRequest {
	host, _, _ := net.SplitHostPort(c.Addr)
	if h, ok := c.headers["host"]; ok {
		host = h
	}
	headers := map[string]string{":method": c.Method, ":path": c.Path, ":authority": host, ":scheme": "http"}
	for k, v := range c.headers {
		headers[k] = v
	}
	if _, ok := headers["x-request-id"]; !ok {
		if id, err := apikey.NewRequestID(); err == nil {
			headers["x-request-id"] = id
		}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: headers["x-request-id"], Method: c.Method, Path: c.Path, Host: host, Scheme: "http",
			Protocol: "HTTP/1.1", Headers: headers,
		}},
		ContextExtensions: c.ext,
	}}
}

func printAllow(w io.Writer, resp *authv3.CheckResponse) {
	ok := resp.GetOkResponse()
	fmt.Fprintln(w, "allowed")
	printHeaders(w, "set", ok.GetHeaders())
	for _, name := range ok.GetHeadersToRemove() {
		fmt.Fprintf(w, "  remove    %s\n", name)
	}
	printHeaders(w, "response", ok.GetResponseHeadersToAdd())
	if md := resp.GetDynamicMetadata(); md != nil {
		b, err := protojson.Marshal(md)
		if err == nil {
			fmt.Fprintf(w, "  metadata  %s\n", compactJSON(b))
		}
	}
}

func printDeny(w io.Writer, resp *authv3.CheckResponse) {
	den := resp.GetDeniedResponse()
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(den.GetBody()), &body)
	fmt.Fprintf(w, "denied %d %s\n", den.GetStatus().GetCode(), body.Error.Code)
	fmt.Fprintf(w, "  message   %s\n", body.Error.Message)
	fmt.Fprintf(w, "  grpc      %s\n", codes.Code(resp.GetStatus().GetCode()))
	printHeaders(w, "header", den.GetHeaders())
	fmt.Fprintf(w, "  body      %s\n", strings.TrimSpace(den.GetBody()))
}

func printHeaders(w io.Writer, verb string, hs []*corev3.HeaderValueOption) {
	sort.SliceStable(hs, func(i, j int) bool { return hs[i].GetHeader().GetKey() < hs[j].GetHeader().GetKey() })
	for _, h := range hs {
		v := h.GetHeader().GetValue()
		if v == "" {
			v = string(h.GetHeader().GetRawValue())
		}
		fmt.Fprintf(w, "  %-9s %s: %s\n", verb, h.GetHeader().GetKey(), v)
	}
}

// compactJSON re-encodes protojson output, whose spacing is deliberately
// unstable, as compact JSON.
func compactJSON(b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return string(b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}
