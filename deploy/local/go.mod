module github.com/omsdev/oms/deploy/local

go 1.26.8

require github.com/omsdev/oms/pkg v0.0.0

require (
	github.com/Admiral-Piett/goaws v0.5.4 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/gorilla/mux v1.8.0 // indirect
	github.com/gorilla/schema v1.4.1 // indirect
	github.com/mitchellh/copystructure v1.2.0 // indirect
	github.com/mitchellh/reflectwalk v1.0.2 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/omsdev/oms/pkg => ../../pkg

replace github.com/omsdev/oms/proto => ../../proto
