package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHTTPLabelsByRoute(t *testing.T) {
	h := HTTP("test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/orders/") {
			SetRoute(r.Context(), "/v1/orders/{name}")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		http.NotFound(w, r)
	}))
	for _, p := range []string{"/v1/orders/a", "/v1/orders/b", "/nope"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", p, nil))
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`oms_http_requests_total{code="202",method="POST",route="/v1/orders/{name}",service="test"} 2`,
		`oms_http_requests_total{code="404",method="POST",route="other",service="test"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// A method the server does not know is labelled "other", so clients
// cannot create series at will.
func TestHTTPMethodLabelIsBounded(t *testing.T) {
	h := HTTP("methods", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, m := range []string{"GET", "DELETE", "OPTIONS", "BREW", "PROPFIND", "get", "X-RANDOM-1", "X-RANDOM-2"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(m, "/", nil))
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	var methods []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "oms_http_requests_total{") && strings.Contains(line, `service="methods"`) {
			methods = append(methods, line)
		}
	}
	for _, want := range []string{`method="GET"`, `method="DELETE"`, `method="OPTIONS"`, `method="other",route="other",service="methods"} 5`} {
		if !strings.Contains(strings.Join(methods, "\n"), want) {
			t.Errorf("no series with %s in\n%s", want, strings.Join(methods, "\n"))
		}
	}
	if len(methods) != 4 {
		t.Errorf("%d series, want 4 (GET, DELETE, OPTIONS, other):\n%s", len(methods), strings.Join(methods, "\n"))
	}
}
