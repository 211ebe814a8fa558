package main

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// describe renders an error for one line of stderr. A gRPC status reads
// "CODE: message", with the code's canonical name (FAILED_PRECONDITION, as
// in google.rpc.Code and the HTTP API's JSON) rather than Go's spelling;
// INVALID_ARGUMENT lists its field violations, which say more than the
// message.
func describe(err error) string {
	var ue usageError
	if errors.As(err, &ue) {
		return err.Error()
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	return describeStatus(st)
}

func describeStatus(st *status.Status) string {
	msg := st.Message()
	if st.Code() == codes.InvalidArgument {
		if vs := violations(st); vs != "" {
			msg = vs
		}
	}
	return codeName(st.Code()) + ": " + msg
}

// violations joins the BadRequest field violations in st, "" when none.
func violations(st *status.Status) string {
	var parts []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				parts = append(parts, v.GetField()+": "+v.GetDescription())
			}
		}
	}
	return strings.Join(parts, "; ")
}

func codeName(c codes.Code) string {
	if n, ok := code.Code_name[int32(c)]; ok {
		return n
	}
	return fmt.Sprintf("CODE_%d", c)
}
