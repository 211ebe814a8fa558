#!/usr/bin/env bash
# Regenerates proto/oms/v1 from the .proto files. Tool versions are pinned in
# tools/go.mod (protoc plugins) and tools/buf/go.mod (buf); the googleapis
# protos come from the npm package google-proto-files, pinned in
# tools/protodeps/package-lock.json, and are staged into proto/.third_party (ignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.bin"
mkdir -p "$bin"

(cd "$root/tools" && GOWORK=off go build -o "$bin/" \
	google.golang.org/protobuf/cmd/protoc-gen-go \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc \
	github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway \
	github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2)
(cd "$root/tools/buf" && GOWORK=off go build -o "$bin/" github.com/bufbuild/buf/cmd/buf)

cd "$root/tools/protodeps"
if [ ! -d node_modules/google-proto-files ]; then
	npm ci --silent --no-audit --no-fund
fi
tp="$root/proto/.third_party"
rm -rf "$tp" && mkdir -p "$tp/google/api"
# Only the annotations the contract uses, not all of googleapis.
for f in annotations http field_behavior resource client launch_stage; do
	cp "node_modules/google-proto-files/google/api/$f.proto" "$tp/google/api/"
done
cd "$root/proto"

export PATH="$bin:$PATH"
buf lint --path oms
rm -f oms/v1/*.pb.go oms/v1/*.pb.gw.go oms.swagger.json openapi/oms.openapi.json
buf generate

# The OpenAPI 3 document the gateways serve: the swagger above, converted,
# plus openapi/overlay.yaml (tools/openapi; kin-openapi pinned in its go.mod).
(cd "$root/tools/openapi" && GOWORK=off go run . -swagger "$root/proto/oms.swagger.json" \
	-overlay "$root/proto/openapi/overlay.yaml" -out "$root/proto/openapi/oms.openapi.json")
