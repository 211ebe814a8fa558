package serve

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/omsdev/oms/proto/openapi"
)

// openAPIPath is where every gateway serves the OpenAPI document of the
// whole HTTP API (proto/openapi): one document for ingest and query, each
// operation naming the service that serves it. It is served beside
// /healthz, outside the API handler, so no bearer token is needed to read
// how to get one.
const openAPIPath = "/openapi.json"

// openAPIHandler serves doc with a strong ETag, so a client polling for a
// new deployment's document gets 304 until it changes.
func openAPIHandler(doc []byte) http.Handler {
	sum := sha256.Sum256(doc)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", etag)
		// Revalidate each time: the document changes with a deployment.
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(doc))
	})
}

// servedOpenAPI serves the document this binary was built with.
var servedOpenAPI = openAPIHandler(openapi.JSON)
