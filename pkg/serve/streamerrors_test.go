package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// failingQuery fails GetOrder and WatchOrder alike, as the name asks; a
// watch of "orders/late-*" sends one order first.
type failingQuery struct {
	omsv1.UnimplementedOrderQueryServiceServer
}

func (failingQuery) failure(name string) error {
	switch strings.TrimPrefix(name, "orders/late-") {
	case "orders/expired", "expired":
		return status.Error(codes.Unauthenticated, `token is expired "exp" \ 2m ago`)
	case "orders/limited", "limited":
		st, err := status.New(codes.ResourceExhausted, "slow down").
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
		if err != nil {
			return err
		}
		return st.Err()
	case "orders/invalid", "invalid":
		st, err := status.New(codes.InvalidArgument, "read_mask: no field nope").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "read_mask", Description: "no field nope"}},
		})
		if err != nil {
			return err
		}
		return st.Err()
	}
	return status.Errorf(codes.NotFound, "order %s not found", name)
}

func (q failingQuery) GetOrder(ctx context.Context, req *omsv1.GetOrderRequest) (*omsv1.Order, error) {
	return nil, q.failure(req.Name)
}

func (q failingQuery) WatchOrder(req *omsv1.WatchOrderRequest, s grpc.ServerStreamingServer[omsv1.WatchOrderResponse]) error {
	if strings.HasPrefix(req.Name, "orders/late-") {
		if err := s.Send(&omsv1.WatchOrderResponse{Order: &omsv1.Order{Name: req.Name, Version: 1}}); err != nil {
			return err
		}
	}
	return q.failure(req.Name)
}

type served struct {
	code   int
	header http.Header
	body   string
}

func get(t *testing.T, url string) served {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("X-Request-Id", "req-1") // the same correlation id each time
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Del("Date")
	return served{resp.StatusCode, resp.Header, string(b)}
}

// A watch that fails before its first line is answered exactly as GetOrder
// failing the same way: status, body (a plain Status) and headers,
// WWW-Authenticate and Retry-After included. One that fails after it ends
// with an {"error": Status} line in its 200. A service's own writer
// wrapper (services/query's per-line deadline) sees every line.
func TestStreamErrorBeforeTheFirstLineIsAUnaryError(t *testing.T) {
	t.Parallel()
	var lineWrites atomic.Int64
	countLines := func(next runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
			next(&countingWriter{ResponseWriter: w, n: &lineWrites}, r, params)
		}
	}
	srv := start(t, API{
		Register:       func(s grpc.ServiceRegistrar) { omsv1.RegisterOrderQueryServiceServer(s, failingQuery{}) },
		GatewayOptions: []runtime.ServeMuxOption{runtime.WithMiddlewares(countLines)},
	})
	base := "http://" + srv.HTTPAddr() + "/v1/orders/"

	for _, tc := range []struct {
		name   string
		code   int
		header string // one header the error must carry
		want   string
	}{
		{"expired", http.StatusUnauthorized, "WWW-Authenticate",
			`Bearer realm="oms", error="invalid_token", error_description="token is expired exp  2m ago"`},
		{"limited", http.StatusTooManyRequests, "Retry-After", "2"},
		{"invalid", http.StatusBadRequest, "Content-Type", "application/json"},
		{"missing", http.StatusNotFound, "X-Correlation-Id", "req-1"},
	} {
		unary := get(t, base+tc.name)
		watch := get(t, base+tc.name+":watch")
		if unary.code != tc.code || unary.header.Get(tc.header) != tc.want {
			t.Fatalf("%s: GetOrder %d, %s %q: the test's premise is wrong", tc.name, unary.code, tc.header, unary.header.Get(tc.header))
		}
		if watch.code != unary.code || watch.body != unary.body {
			t.Errorf("%s: watch %d %s\nGetOrder %d %s", tc.name, watch.code, watch.body, unary.code, unary.body)
		}
		for k := range mergeKeys(unary.header, watch.header) {
			if !slices.Equal(watch.header.Values(k), unary.header.Values(k)) {
				t.Errorf("%s: watch header %s %q, GetOrder %q", tc.name, k, watch.header.Values(k), unary.header.Values(k))
			}
		}
		var st errorBody
		if err := json.Unmarshal([]byte(watch.body), &st); err != nil || st.Code == 0 || strings.Contains(watch.body, `"error"`) {
			t.Errorf("%s: watch body %s is not a plain Status", tc.name, watch.body)
		}
	}

	// After the first line, the error is the stream's last line.
	lineWrites.Store(0)
	req, _ := http.NewRequest("GET", base+"late-expired:watch", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("late error: %s, WWW-Authenticate %q; want 200 without a challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	lines := bufio.NewScanner(resp.Body)
	var got []string
	for lines.Scan() {
		got = append(got, lines.Text())
	}
	var first struct {
		Result struct {
			Order struct{ Name, Version string }
		}
	}
	var last struct{ Error errorBody }
	if len(got) != 2 || json.Unmarshal([]byte(got[0]), &first) != nil || first.Result.Order.Name != "orders/late-expired" ||
		json.Unmarshal([]byte(got[1]), &last) != nil || last.Error.Code != int(codes.Unauthenticated) {
		t.Fatalf("late error: lines %q, want a result then an UNAUTHENTICATED error line", got)
	}
	if n := lineWrites.Load(); n < 4 { // two lines, each and its delimiter
		t.Errorf("the service's writer saw %d writes of a two-line stream", n)
	}
}

func mergeKeys(hs ...http.Header) map[string]bool {
	keys := map[string]bool{}
	for _, h := range hs {
		for k := range h {
			keys[k] = true
		}
	}
	return keys
}

// countingWriter counts the writes that reach it.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	w.n.Add(1)
	return w.ResponseWriter.Write(b)
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// What is not a stream's error chunk goes out as the handler wrote it: an
// error status with another body (held back, then released, however
// long), a success, and the error handler's own answers.
func TestFirstLineReleasesWhatIsNotAStreamError(t *testing.T) {
	t.Parallel()
	u := &unaryStreamErrors{}
	mux := runtime.NewServeMux(runtime.WithMiddlewares(u.middleware), runtime.WithErrorHandler(httpError),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, JSONMarshaler()))
	u.mux = mux
	long := strings.Repeat("x", maxHeldBytes+10)
	handlers := map[string]runtime.HandlerFunc{
		"/text": func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			http.Error(w, "unexpected error", http.StatusInternalServerError)
		},
		"/long": func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, `{"error":"`)
			io.WriteString(w, long)
			io.WriteString(w, `"}`)
		},
		"/empty": func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			w.WriteHeader(http.StatusConflict)
		},
		"/ok": func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			io.WriteString(w, `{"error":{"code":5}}`) // a 200: a line, whatever it says
		},
		"/handled": func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			runtime.HTTPError(r.Context(), mux, JSONMarshaler(), w, r, status.Error(codes.NotFound, "gone"))
			// Out already, not held back: a flush reaches the client.
			_ = http.NewResponseController(w).Flush()
		},
		"/chunk": func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":5,"message":"gone"}}`)
			io.WriteString(w, "\n")
		},
	}
	for path, h := range handlers {
		if err := mux.HandlePath("GET", path, h); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/text", http.StatusInternalServerError, "unexpected error\n"},
		{"/long", http.StatusBadGateway, `{"error":"` + long + `"}`},
		{"/empty", http.StatusConflict, ""},
		{"/ok", http.StatusOK, `{"error":{"code":5}}`},
		{"/handled", http.StatusNotFound, `{"code":5,"message":"gone"}`},
		{"/chunk", http.StatusNotFound, `{"code":5,"message":"gone"}`},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		if rec.Code != tc.code || compactJSON(rec.Body.String()) != compactJSON(tc.body) {
			t.Errorf("%s: %d %.100q, want %d %.100q", tc.path, rec.Code, rec.Body.String(), tc.code, tc.body)
		}
		if tc.path == "/handled" && !rec.Flushed {
			t.Error("the error handler's own answer was held back")
		}
	}
}

// compactJSON drops the spacing of JSON (protojson's varies); anything
// else is returned as it is.
func compactJSON(s string) string {
	var b bytes.Buffer
	if json.Compact(&b, []byte(s)) != nil {
		return s
	}
	return b.String()
}
