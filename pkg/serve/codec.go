package serve

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A request that does not decode (a string field holding invalid UTF-8,
// say) is the caller's mistake: INVALID_ARGUMENT, not INTERNAL.
//
// grpc-go cannot be told so by the codec: its recv (rpc_util.go, v1.85)
// turns any error from Unmarshal into codes.Internal, and for a unary call
// that happens in the generated handler's decode step, before any
// interceptor runs. So requestCodec does not fail: it empties the message,
// marks it as undecodable, and returns nil. refuseUndecodable, which runs
// next for that very message (as a unary interceptor, or in RecvMsg of the
// stream a stream interceptor wraps), sees the mark and answers
// INVALID_ARGUMENT; the handler never sees the message. The mark lives in
// the message itself, so nothing outlives a request that is dropped.
//
// The codec is installed with grpc.ForceServerCodecV2: it never decodes
// for the process's clients, where no interceptor would look for the mark.
type requestCodec struct{ encoding.CodecV2 }

func newRequestCodec() requestCodec { return requestCodec{encoding.GetCodecV2(protoenc.Name)} }

// The marks are unknown fields with the largest field number and a nonce
// made at start-up: a client cannot send one by accident (and one sent on
// purpose only refuses the client's own request).
var markUTF8, markOther = func() ([]byte, []byte) {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	mark := func(kind string) []byte {
		b := protowire.AppendTag(nil, protowire.MaxValidNumber, protowire.BytesType)
		return protowire.AppendBytes(b, append([]byte("oms undecodable request "+kind+" "), nonce...))
	}
	return mark("utf8"), mark("other")
}()

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if err == nil || !ok {
		return err // !ok is a server bug: INTERNAL is right
	}
	proto.Reset(m)
	mark := markOther
	var utf8 interface{ InvalidUTF8() bool }
	if errors.As(err, &utf8) && utf8.InvalidUTF8() {
		mark = markUTF8
	}
	m.ProtoReflect().SetUnknown(bytes.Clone(mark))
	return nil
}

// decodeError is the INVALID_ARGUMENT for m when the codec marked it.
func decodeError(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil
	}
	var desc string
	switch u := pm.ProtoReflect().GetUnknown(); {
	case len(u) == 0:
		return nil
	case bytes.Equal(u, markUTF8):
		desc = "request is not valid protobuf: string field contains invalid UTF-8"
	case bytes.Equal(u, markOther):
		desc = "request is not valid protobuf"
	default:
		return nil
	}
	st, err := status.New(codes.InvalidArgument, desc).WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "request", Description: desc}},
	})
	if err != nil {
		return status.Error(codes.InvalidArgument, desc)
	}
	return st.Err()
}

// refuseUndecodable answers INVALID_ARGUMENT for a request the codec
// marked, before any interceptor inside it or the handler sees it.
func refuseUndecodable(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := decodeError(req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// refuseUndecodableStream does the same for each message a stream receives.
func refuseUndecodableStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, decodeCheckedStream{ss})
}

type decodeCheckedStream struct{ grpc.ServerStream }

func (s decodeCheckedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return decodeError(m)
}
