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
