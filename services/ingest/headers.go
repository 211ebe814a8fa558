package main

import (
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/omsdev/oms/pkg/order"
)

// checkIdempotencyKey refuses an Idempotency-Key header the gRPC metadata
// could not carry faithfully (non-ASCII, too long, sent twice) with a 400
// naming the header. Passed on, such a key would be dropped on the way and
// the request would get a generated key, so a retry would create a second
// order.
func checkIdempotencyKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vs := r.Header.Values("Idempotency-Key")
		desc := ""
		switch {
		case len(vs) > 1:
			desc = "must be sent once"
		case len(vs) == 1:
			if err := order.ValidateRequestID(vs[0]); err != nil {
				desc = err.Error()
			}
		}
		if desc == "" {
			next.ServeHTTP(w, r)
			return
		}
		st, _ := status.New(codes.InvalidArgument, "Idempotency-Key: "+desc).WithDetails(
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "Idempotency-Key", Description: desc}}},
			&errdetails.ErrorInfo{Reason: "INVALID_IDEMPOTENCY_KEY", Domain: errorDomain},
		)
		body, _ := protojson.Marshal(st.Proto())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write(body)
	})
}
