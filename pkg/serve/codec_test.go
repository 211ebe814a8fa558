package serve

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// rawCodec sends and receives messages as the bytes given, so a test can
// put on the wire what no generated client would encode.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// stringField1 encodes a message whose field 1 (GetOrderRequest.name,
// HealthCheckRequest.service) is s, whatever bytes s holds.
func stringField1(s string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// Over a real socket: a request with invalid UTF-8 in a string field, or
// bytes that are not protobuf at all, is INVALID_ARGUMENT with a
// BadRequest detail, for unary calls and for streams; the handler never
// runs. A well-formed request goes through the same codec unharmed.
func TestUndecodableRequestIsInvalidArgument(t *testing.T) {
	t.Parallel()
	srv := start(t, API{})
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct {
		name string
		req  []byte
		want string
	}{
		{"invalid UTF-8", stringField1("orders/\xff\xfe"), "request is not valid protobuf: string field contains invalid UTF-8"},
		{"truncated field", []byte{0x0a, 0x10, 'o'}, "request is not valid protobuf"},
		{"bad wire type", []byte{0x0f}, "request is not valid protobuf"},
	} {
		var out []byte
		err := conn.Invoke(ctx, omsv1.OrderQueryService_GetOrder_FullMethodName, &tc.req, &out)
		checkBadRequest(t, tc.name, err, tc.want)
	}

	req := stringField1("orders/ok-é")
	var out []byte
	if err := conn.Invoke(ctx, omsv1.OrderQueryService_GetOrder_FullMethodName, &req, &out); err != nil {
		t.Fatalf("valid request: %v", err)
	}
	var o omsv1.Order
	if err := proto.Unmarshal(out, &o); err != nil || o.Name != "orders/ok-é" {
		t.Errorf("valid request answered %v, %v", &o, err)
	}

	// A stream's received messages are checked too (health Watch).
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/grpc.health.v1.Health/Watch")
	if err != nil {
		t.Fatal(err)
	}
	watch := stringField1("svc-\xc3")
	if err := stream.SendMsg(&watch); err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	checkBadRequest(t, "stream", stream.RecvMsg(&out), "string field contains invalid UTF-8")
}

// The caller's interceptors (authentication) run before the check, as
// they would for any other request.
func TestUndecodableRequestIsCheckedAfterCallerInterceptors(t *testing.T) {
	t.Parallel()
	deny := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return nil, status.Error(codes.Unauthenticated, "no token")
	}
	srv := start(t, API{UnaryInterceptors: []grpc.UnaryServerInterceptor{deny}})
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, out := stringField1("orders/\xff"), []byte(nil)
	err = conn.Invoke(ctx, omsv1.OrderQueryService_GetOrder_FullMethodName, &req, &out)
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("undecodable request from an unauthenticated caller: %v, want UNAUTHENTICATED", err)
	}
}

func checkBadRequest(t *testing.T, name string, err error, want string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), want) {
		t.Errorf("%s: %v, want INVALID_ARGUMENT %q", name, err, want)
		return
	}
	var details []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				details = append(details, fmt.Sprintf("%s: %s", v.Field, v.Description))
			}
		}
	}
	if len(details) != 1 || !strings.Contains(details[0], want) {
		t.Errorf("%s: BadRequest details %q, want one with %q", name, details, want)
	}
}
