// Command openapi writes the OMS OpenAPI 3 document: the Swagger 2.0 that
// protoc-gen-openapiv2 makes from the protos, converted with kin-openapi,
// plus a checked-in overlay of what the protos cannot say (the 202 of
// commands, the error body as the gateway serves it, bearer
// authentication, the hand-written operations routes, the servers).
//
//	go run . -swagger ../../proto/oms.swagger.json -overlay ../../proto/openapi/overlay.yaml -out ../../proto/openapi/oms.openapi.json
//
// scripts/generate.sh runs it; the output is never edited by hand.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
)

func main() {
	swagger := flag.String("swagger", "", "the Swagger 2.0 document protoc-gen-openapiv2 wrote")
	overlay := flag.String("overlay", "", "the overlay (YAML)")
	out := flag.String("out", "", "where to write the OpenAPI 3 document")
	flag.Parse()
	if err := run(*swagger, *overlay, *out); err != nil {
		fmt.Fprintln(os.Stderr, "openapi:", err)
		os.Exit(1)
	}
}

func run(swaggerPath, overlayPath, outPath string) error {
	if swaggerPath == "" || overlayPath == "" || outPath == "" {
		return fmt.Errorf("-swagger, -overlay and -out are required")
	}
	swagger, err := os.ReadFile(swaggerPath)
	if err != nil {
		return err
	}
	overlay, err := os.ReadFile(overlayPath)
	if err != nil {
		return err
	}
	doc, err := Generate(context.Background(), swagger, overlay)
	if err != nil {
		return err
	}
	return os.WriteFile(outPath, doc, 0o644)
}
