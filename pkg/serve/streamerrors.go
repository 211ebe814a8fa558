package serve

import (
	"bytes"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/status"
)

// A server-streaming route (WatchOrder) that fails before its first line
// is answered as a unary route's error: the same status code, a plain
// google.rpc.Status body and the same headers (WWW-Authenticate on 401,
// Retry-After on 429), through the mux's error handler (httpError). The
// gateway's own stream error path would send the Status wrapped in
// {"error": ...}, and none of those headers, although nothing of the
// stream has gone out yet. Once a line has been sent the response is
// committed to 200, and an error stays what the NDJSON contract says: one
// {"error": Status} line that ends the stream.
//
// The gateway offers no hook for this (runtime.WithStreamErrorHandler only
// picks the Status), so unaryStreamErrors watches what the handler writes:
// an error status before any body that did not come from the error
// handler can only be the stream's error chunk, which it holds back,
// decodes with the marshaler that encoded it, and serves again as an
// error.

// unaryStreamErrors is the gateway middleware; mux is set once the mux is
// built (the middleware is one of the mux's options).
type unaryStreamErrors struct {
	mux *runtime.ServeMux
}

func (u *unaryStreamErrors) middleware(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		fw := &firstLine{ResponseWriter: w}
		next(fw, r, params)
		if fw.state != holding {
			return
		}
		_, out := runtime.MarshalerForRequest(u.mux, r)
		var chunk map[string]*spb.Status
		if err := out.Unmarshal(fw.held.Bytes(), &chunk); err == nil && len(chunk) == 1 && chunk["error"] != nil {
			// The server's metadata (X-Correlation-Id) is in the header
			// already, as on a unary error; the error handler drops the
			// stream's Transfer-Encoding and sets the Content-Type.
			runtime.HTTPError(r.Context(), u.mux, out, w, r, status.ErrorProto(chunk["error"]))
			return
		}
		fw.release() // not the stream's error chunk: as it was written
	}
}

// maxHeldBytes bounds what firstLine holds back: a stream's error chunk is
// a Status, far smaller. Past it the response goes out as written.
const maxHeldBytes = 64 << 10

const (
	undecided = iota // nothing written yet
	passing          // the response is not a stream's early error: write through
	holding          // an error status before any body: held back
)

// firstLine holds back an error status written before any body, and what
// follows it, until the handler returns.
type firstLine struct {
	http.ResponseWriter
	state uint8
	code  int
	held  bytes.Buffer
}

// settle marks the response as the error handler's own, to go out as
// written (httpError calls it).
func (w *firstLine) settle() {
	if w.state == undecided {
		w.state = passing
	}
}

func (w *firstLine) WriteHeader(code int) {
	switch {
	case w.state != undecided || code < 200:
		if w.state != holding {
			w.ResponseWriter.WriteHeader(code)
		}
	case code >= 400:
		w.state, w.code = holding, code
	default:
		w.state = passing
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *firstLine) Write(b []byte) (int, error) {
	switch w.state {
	case holding:
		if w.held.Len()+len(b) <= maxHeldBytes {
			return w.held.Write(b)
		}
		w.release()
	case undecided:
		w.state = passing
	}
	return w.ResponseWriter.Write(b)
}

// release sends what was held back, as it was written.
func (w *firstLine) release() {
	w.state = passing
	w.ResponseWriter.WriteHeader(w.code)
	if w.held.Len() > 0 {
		_, _ = w.ResponseWriter.Write(w.held.Bytes())
	}
	w.held = bytes.Buffer{}
}

// FlushError flushes what has gone out; nothing while holding (a flush
// would commit the status line before the error is known).
func (w *firstLine) FlushError() error {
	if w.state == holding {
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *firstLine) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// settleFirstLine tells the firstLine under w, if any, that the error
// being written is the error handler's, already in the unary shape.
func settleFirstLine(w http.ResponseWriter) {
	for {
		switch v := w.(type) {
		case *firstLine:
			v.settle()
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return
		}
	}
}
