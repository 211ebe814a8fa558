package serve

import (
	"context"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// httpError is the gateway's error handler: the default one (401 for
// UNAUTHENTICATED, 429 for RESOURCE_EXHAUSTED, ...) plus the headers HTTP
// clients expect with those statuses:
//
//   - 401: WWW-Authenticate: Bearer realm="oms", error="invalid_token",
//     error_description="<the status message>". When the request carried
//     no bearer token at all, error and error_description are left out, as
//     RFC 6750 §3.1 asks.
//   - 429: Retry-After: the whole seconds of a google.rpc.RetryInfo
//     detail, rounded up.
//
// And a body the gateway could not decode gets the BadRequest detail a
// service's own 400s carry, naming "body".
func httpError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	settleFirstLine(w) // already in the unary shape (streamerrors.go)
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument:
		if body, ok := bodyViolation(ctx, r, st); ok {
			err = body.Err()
		}
	case codes.Unauthenticated:
		// The default handler sets WWW-Authenticate to the bare message.
		w = pinHeader{w, "WWW-Authenticate", bearerChallenge(r, st.Message())}
	case codes.ResourceExhausted:
		if secs, ok := retryAfter(st); ok {
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// bodyViolation recognizes the gateway's report of a request body it could
// not decode and returns it with a BadRequest violation on "body". The
// generated handlers pass the JSON decoder's error on as a bare
// INVALID_ARGUMENT (status.Errorf("%v", err)) without calling the service;
// a refusal from a service comes back with server metadata and carries
// details of its own.
func bodyViolation(ctx context.Context, r *http.Request, st *status.Status) (*status.Status, bool) {
	if len(st.Details()) > 0 || r.Method == http.MethodGet || r.Method == http.MethodHead || !decoderMessage(st.Message()) {
		return nil, false
	}
	if md, ok := runtime.ServerMetadataFromContext(ctx); ok && (len(md.HeaderMD) > 0 || len(md.TrailerMD) > 0) {
		return nil, false // the service answered
	}
	desc := clip(strings.TrimPrefix(st.Message(), "proto: "), maxDetailRunes)
	out, err := status.New(codes.InvalidArgument, "body: "+desc).WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "body", Description: desc}},
	})
	return out, err == nil
}

// decoderMessage reports whether msg is an error from the gateway's body
// decoder: encoding/json reading the body, then protojson.
func decoderMessage(msg string) bool {
	for _, p := range []string{"proto:", "invalid character ", "unexpected EOF", "unexpected end of JSON input", "json: "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// maxDetailRunes bounds decoder text repeated to the client: it can quote
// the input (an unknown field's name), which may be up to the body limit.
const maxDetailRunes = 200

// clip makes s valid UTF-8 of at most n runes.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// pinHeader sets a header just before the status line goes out, over
// whatever the handler set.
type pinHeader struct {
	http.ResponseWriter
	key, value string
}

func (w pinHeader) WriteHeader(code int) {
	w.Header().Set(w.key, w.value)
	w.ResponseWriter.WriteHeader(code)
}

func (w pinHeader) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bearerChallenge is the RFC 6750 challenge for a refused request.
func bearerChallenge(r *http.Request, msg string) string {
	const realm = `Bearer realm="oms"`
	scheme, token, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return realm // no credentials: no error code
	}
	desc := quotable(msg)
	if desc == "" {
		return realm + `, error="invalid_token"`
	}
	return realm + `, error="invalid_token", error_description="` + desc + `"`
}

// quotable keeps the characters RFC 6750 allows in error_description
// (printable ASCII but " and \).
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

// retryAfter is the RetryInfo delay of st in whole seconds, rounded up.
func retryAfter(st *status.Status) (int64, bool) {
	for _, d := range st.Details() {
		ri, ok := d.(*errdetails.RetryInfo)
		if !ok || ri.GetRetryDelay() == nil {
			continue
		}
		delay := ri.GetRetryDelay().AsDuration()
		if delay < 0 {
			continue
		}
		return int64(math.Ceil(delay.Seconds())), true
	}
	return 0, false
}

// requireBearer answers 401 at once to a request without a bearer token,
// in the gateway's error shape.
func requireBearer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
		if strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(token) != "" {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", bearerChallenge(r, ""))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"code":16,"message":"missing bearer token","details":[]}`+"\n")
	})
}
