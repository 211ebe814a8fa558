module github.com/omsdev/oms/cmd/omsctl

go 1.26.8

replace github.com/omsdev/oms/proto => ../../proto

require (
	cloud.google.com/go/longrunning v1.5.0
	github.com/google/uuid v1.6.0
	github.com/omsdev/oms/proto v0.0.0
	github.com/spf13/cobra v1.10.2
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/grpc-ecosystem/grpc-gateway/v2 v2.33.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c // indirect
)
