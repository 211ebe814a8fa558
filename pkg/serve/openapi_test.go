package serve

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/omsdev/oms/proto/openapi"
)

// Every gateway serves the API's OpenAPI document at /openapi.json without
// a token, even where the API routes require one; other methods on that
// path are API requests like any other.
func TestOpenAPIDocumentIsServedWithoutAuth(t *testing.T) {
	t.Parallel()
	srv := start(t, API{RequireBearer: true})
	url := "http://" + srv.HTTPAddr() + "/openapi.json"

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json without a token: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(body, openapi.JSON) {
		t.Error("served document differs from proto/openapi's")
	}
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.OpenAPI == "" || doc.Paths["/v1/orders"] == nil {
		t.Errorf("served document: openapi %q, %d paths, %v", doc.OpenAPI, len(doc.Paths), err)
	}

	// Revalidation: the same document is not sent again.
	etag := resp.Header.Get("ETag")
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("If-None-Match", etag)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match %q: %s, want 304", etag, resp.Status)
	}

	// The bearer check still guards everything else, this path's other
	// methods included.
	for _, tc := range []struct{ method, path string }{{"POST", "/openapi.json"}, {"GET", "/v1/orders/1"}} {
		req, _ := http.NewRequest(tc.method, "http://"+srv.HTTPAddr()+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s without a token: %s, want 401 with a challenge", tc.method, tc.path, resp.Status)
		}
	}
}
