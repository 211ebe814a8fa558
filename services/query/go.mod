module github.com/omsdev/oms/services/query

go 1.26.8

require github.com/omsdev/oms/pkg v0.0.0

replace github.com/omsdev/oms/pkg => ../../pkg
