// Package openapi holds the OpenAPI 3 document of the OMS HTTP API,
// oms.openapi.json, which the ingest and query gateways serve at
// GET /openapi.json. tools/openapi generates it from oms.swagger.json and
// overlay.yaml (scripts/generate.sh); it is never edited by hand.
package openapi

import _ "embed"

// JSON is the document. Embedded, so that a binary serves the document of
// the API it was built with, wherever it runs.
//
//go:embed oms.openapi.json
var JSON []byte
