package serve

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The gateway calls unary methods in process: gatewayConn hands the
// request to the method's handler through the same interceptor chain the
// gRPC server runs, with the HTTP request's metadata as incoming metadata,
// and the response headers and trailers back as the gateway asks for them.
// This is what an HTTP call cost most of its CPU on before: encoding the
// request, HTTP/2 framing over an in-memory connection both ways, and
// decoding it again. What a gRPC hop checks is kept: the server's message
// size limits, status errors as they are, a cancelled or expired call as
// CANCELLED or DEADLINE_EXCEEDED. Streaming calls (query's WatchOrder)
// still go through the in-memory gRPC connection.

// registrar registers services with the gRPC server and keeps their unary
// handlers for the gateway.
type registrar struct {
	server  *grpc.Server
	methods map[string]unaryMethod // by full method name
}

type unaryMethod struct {
	impl    any
	handler grpc.MethodHandler
}

func (r *registrar) RegisterService(sd *grpc.ServiceDesc, impl any) {
	r.server.RegisterService(sd, impl)
	for _, m := range sd.Methods {
		r.methods["/"+sd.ServiceName+"/"+m.MethodName] = unaryMethod{impl: impl, handler: m.Handler}
	}
}

// gatewayConn is the gateway's grpc.ClientConnInterface.
type gatewayConn struct {
	methods   map[string]unaryMethod
	intercept grpc.UnaryServerInterceptor // the server's unary chain
	maxRecv   int                         // the server's receive limit
	maxSend   int                         // the server's send limit
	streams   grpc.ClientConnInterface    // the in-memory gRPC connection
}

var _ grpc.ClientConnInterface = (*gatewayConn)(nil)

func (c *gatewayConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.streams.NewStream(ctx, desc, method, opts...)
}

func (c *gatewayConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	m, ok := c.methods[method]
	in, inOK := args.(proto.Message)
	out, outOK := reply.(proto.Message)
	if !ok || !inOK || !outOK {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	if n := proto.Size(in); n > c.maxRecv {
		return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, c.maxRecv)
	}
	// The server side of the call sees the HTTP request's metadata as
	// incoming, and none of it as outgoing (a call it makes must not
	// forward the caller's credentials).
	md, _ := metadata.FromOutgoingContext(ctx)
	sctx := metadata.NewOutgoingContext(metadata.NewIncomingContext(ctx, md), nil)
	st := &gatewayStream{method: method}
	sctx = grpc.NewContextWithServerTransportStream(sctx, st)
	resp, err := m.handler(m.impl, sctx, func(v any) error {
		req, ok := v.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "request of type %T", v)
		}
		moveMessage(req, in)
		return nil
	}, c.intercept)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = st.md(&st.header)
		case grpc.TrailerCallOption:
			*o.TrailerAddr = st.md(&st.trailer)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		if _, ok := status.FromError(err); !ok {
			return status.Error(codes.Unknown, err.Error())
		}
		return err
	}
	res, ok := resp.(proto.Message)
	if !ok || res == nil {
		return status.Errorf(codes.Internal, "response of type %T", resp)
	}
	if n := proto.Size(res); n > c.maxSend {
		return status.Errorf(codes.ResourceExhausted, "grpc: trying to send message larger than max (%d vs. %d)", n, c.maxSend)
	}
	moveMessage(out, res)
	return nil
}

// moveMessage sets every field of dst (a new message) to src's, as hand
// written code would, field by field: message and list fields are shared,
// not copied, since src is not used after. Generated messages keep each
// field in an exported struct field (a oneof in one interface field); the
// unexported ones are the runtime's own state, and the unknown fields,
// which are carried over.
func moveMessage(dst, src proto.Message) {
	dv, sv := reflect.ValueOf(dst), reflect.ValueOf(src)
	if sv.Kind() == reflect.Pointer && sv.IsNil() {
		return // a nil message is an empty one
	}
	if dv.Type() != sv.Type() || dv.Kind() != reflect.Pointer || dv.IsNil() || dv.Elem().Kind() != reflect.Struct {
		proto.Merge(dst, src)
		return
	}
	d, s := dv.Elem(), sv.Elem()
	for _, i := range exportedFields(d.Type()) {
		d.Field(i).Set(s.Field(i))
	}
	if u := src.ProtoReflect().GetUnknown(); len(u) > 0 {
		dst.ProtoReflect().SetUnknown(u)
	}
}

var fieldsByType sync.Map // reflect.Type → []int

func exportedFields(t reflect.Type) []int {
	if f, ok := fieldsByType.Load(t); ok {
		return f.([]int)
	}
	var f []int
	for i := range t.NumField() {
		if t.Field(i).IsExported() {
			f = append(f, i)
		}
	}
	fieldsByType.Store(t, f)
	return f
}

// gatewayStream is the grpc.ServerTransportStream of an in-process call:
// it collects the headers and trailers the server sets.
type gatewayStream struct {
	method string

	mu          sync.Mutex
	header      metadata.MD
	trailer     metadata.MD
	headersSent bool
}

func (s *gatewayStream) Method() string { return s.method }

func (s *gatewayStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headersSent {
		return fmt.Errorf("transport: the stream is done or WriteHeader was already called")
	}
	s.header = metadata.Join(s.header, md)
	return nil
}

func (s *gatewayStream) SendHeader(md metadata.MD) error {
	if err := s.SetHeader(md); err != nil {
		return err
	}
	s.mu.Lock()
	s.headersSent = true
	s.mu.Unlock()
	return nil
}

func (s *gatewayStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trailer = metadata.Join(s.trailer, md)
	return nil
}

func (s *gatewayStream) md(p *metadata.MD) metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *p
}

// chainUnary runs interceptors in order around a handler, as
// grpc.ChainUnaryInterceptor does for the server.
func chainUnary(interceptors []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return interceptors[0](ctx, req, info, chainedHandler(interceptors, 0, info, handler))
	}
}

func chainedHandler(interceptors []grpc.UnaryServerInterceptor, curr int, info *grpc.UnaryServerInfo, final grpc.UnaryHandler) grpc.UnaryHandler {
	if curr == len(interceptors)-1 {
		return final
	}
	return func(ctx context.Context, req any) (any, error) {
		return interceptors[curr+1](ctx, req, info, chainedHandler(interceptors, curr+1, info, final))
	}
}
