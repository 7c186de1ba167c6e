package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keygate/keygate/manage"
)

// TestMetrics_RequestsByMethodRouteAndCode: every call is counted and
// timed under its ServeMux pattern, never its raw path, so a key id never
// becomes a label.
func TestMetrics_RequestsByMethodRouteAndCode(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		k, tok := e.key(manage.NewKey{})
		want(t, e.get("/v1/api-keys/"+k.ID, tok), http.StatusOK)
		want(t, e.get("/v1/api-keys/"+k.ID, tok), http.StatusOK)
		want(t, e.get("/v1/api-keys/key_nope", tok), http.StatusNotFound)
		want(t, e.do(req{method: "PUT", path: "/v1/api-keys/" + k.ID, token: tok}), http.StatusMethodNotAllowed)
		want(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + k.ID, token: tok, body: `{"name":"x"}`}), http.StatusOK)
		want(t, e.get("/v1/no/such/path", tok), http.StatusNotFound)

		r := e.get("/metrics", "")
		want(t, r, http.StatusOK)
		body := string(r.Body)
		for _, line := range []string{
			`keygate_http_requests_total{code="200",method="get",route="/v1/api-keys/{id}"} 2`,
			`keygate_http_requests_total{code="404",method="get",route="/v1/api-keys/{id}"} 1`,
			`keygate_http_requests_total{code="405",method="put",route="/v1/api-keys/{id}"} 1`,
			`keygate_http_requests_total{code="200",method="patch",route="/v1/api-keys/{id}"} 1`,
			`keygate_http_requests_total{code="404",method="get",route="/"} 1`,
			`keygate_http_request_duration_seconds_count{code="200",method="get",route="/v1/api-keys/{id}"} 2`,
			`keygate_http_request_duration_seconds_count{code="200",method="patch",route="/v1/api-keys/{id}"} 1`,
		} {
			if !strings.Contains(body, line+"\n") {
				t.Errorf("/metrics lacks %s", line)
			}
		}
		for _, raw := range []string{k.ID, "key_nope", "/v1/no/such/path"} {
			if strings.Contains(body, raw) {
				t.Errorf("/metrics has the raw path part %q as a label", raw)
			}
		}
	})
}
