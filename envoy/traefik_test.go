package envoy

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// traefikDynamic is the part of Traefik's dynamic configuration traefik.yaml uses,
// with Traefik's field names: an unknown or misspelt key fails the strict decode.
type traefikDynamic struct {
	HTTP struct {
		Routers map[string]struct {
			EntryPoints []string `yaml:"entryPoints"`
			Rule        string   `yaml:"rule"`
			Service     string   `yaml:"service"`
			Middlewares []string `yaml:"middlewares"`
		} `yaml:"routers"`
		Middlewares map[string]struct {
			Headers *struct {
				CustomRequestHeaders map[string]string `yaml:"customRequestHeaders"`
			} `yaml:"headers"`
			ForwardAuth *struct {
				Address             string   `yaml:"address"`
				TrustForwardHeader  bool     `yaml:"trustForwardHeader"`
				AuthResponseHeaders []string `yaml:"authResponseHeaders"`
			} `yaml:"forwardAuth"`
		} `yaml:"middlewares"`
		Services map[string]struct {
			LoadBalancer struct {
				Servers []struct {
					URL string `yaml:"url"`
				} `yaml:"servers"`
			} `yaml:"loadBalancer"`
		} `yaml:"services"`
	} `yaml:"http"`
}

func TestTraefikConfig_ForwardAuthToKeygate(t *testing.T) {
	data, err := os.ReadFile("traefik.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c traefikDynamic
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("traefik.yaml: %v", err)
	}
	r, ok := c.HTTP.Routers["api"]
	if !ok {
		t.Fatal("no router api")
	}
	if _, ok := c.HTTP.Services[r.Service]; !ok {
		t.Errorf("router api's service %q is not defined", r.Service)
	}
	if want := []string{"keygate-clean", "keygate", "keygate-strip-credentials"}; !slices.Equal(r.Middlewares, want) {
		t.Fatalf("middlewares %q, want %q: clean, ask keygate, then strip the credentials", r.Middlewares, want)
	}
	mw := c.HTTP.Middlewares
	fa := mw["keygate"].ForwardAuth
	if fa == nil || !strings.HasSuffix(fa.Address, "/forward-auth") {
		t.Fatalf("keygate middleware is not a forwardAuth to keygate's /forward-auth: %+v", fa)
	}
	if fa.TrustForwardHeader {
		t.Error("trustForwardHeader is true: a client's X-Forwarded-Method/Uri would be judged")
	}
	clean := mw["keygate-clean"].Headers
	strip := mw["keygate-strip-credentials"].Headers
	if clean == nil || strip == nil {
		t.Fatal("keygate-clean and keygate-strip-credentials must be headers middlewares")
	}
	for _, h := range identityHeaders {
		if !slices.ContainsFunc(fa.AuthResponseHeaders, func(s string) bool { return strings.EqualFold(s, h) }) {
			t.Errorf("authResponseHeaders leaves out %s", h)
		}
		if !removes(clean.CustomRequestHeaders, h) {
			t.Errorf("keygate-clean does not remove a client-sent %s", h)
		}
	}
	for _, h := range []string{"x-original-method", "x-original-uri"} {
		if !removes(clean.CustomRequestHeaders, h) {
			t.Errorf("keygate-clean does not remove a client-sent %s", h)
		}
	}
	for _, h := range []string{"authorization", "x-api-key"} {
		if !removes(strip.CustomRequestHeaders, h) {
			t.Errorf("keygate-strip-credentials does not remove %s", h)
		}
		if removes(clean.CustomRequestHeaders, h) {
			t.Errorf("keygate-clean removes %s before keygate sees it", h)
		}
	}
}

// removes reports whether Traefik's customRequestHeaders removes h (an empty value).
func removes(m map[string]string, h string) bool {
	for k, v := range m {
		if strings.EqualFold(k, h) && v == "" {
			return true
		}
	}
	return false
}
