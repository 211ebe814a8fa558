package serve

import (
	"context"
	"fmt"
	"net"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/test/bufconn"
)

// Streaming calls from the gateway reach the gRPC server over in-memory
// connections served by the same *grpc.Server as the public port, so every
// interceptor runs for them too, and they need no client certificate when
// the public port requires one. Unary calls do not leave the process at
// all (gateway.go).

// inProcessListener hands the gRPC server the gateway's connections.
type inProcessListener struct{ *bufconn.Listener }

// inProcessConn marks a connection as the gateway's, for serverCreds.
type inProcessConn struct{ net.Conn }

// newInProcessListener: 64 KiB per direction and connection is plenty
// for HTTP/2 frames of 16 KiB, and is allocated up front.
func newInProcessListener() inProcessListener {
	return inProcessListener{bufconn.Listen(64 << 10)}
}

func (l inProcessListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return inProcessConn{c}, nil
}

// dial connects the gateway with n connections, round robin: the server's
// MaxConcurrentStreams applies to each, so one connection would hold the
// HTTP port to that many calls in flight.
func (l inProcessListener) dial(n int, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("oms-inprocess")
	eps := make([]resolver.Endpoint, n)
	for i := range eps {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: fmt.Sprintf("gateway-%d", i)}}}
	}
	r.InitialState(resolver.State{Endpoints: eps})
	return grpc.NewClient(r.Scheme()+":///gateway", append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
	}, opts...)...)
}

// serverCreds is TLS on the public port and nothing on the gateway's
// in-memory connections, which no one outside the process can open.
type serverCreds struct {
	credentials.TransportCredentials
}

func (c serverCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, ok := conn.(inProcessConn); ok {
		return conn, inProcessInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	return c.TransportCredentials.ServerHandshake(conn)
}

func (c serverCreds) Clone() credentials.TransportCredentials {
	return serverCreds{c.TransportCredentials.Clone()}
}

// inProcessInfo is the AuthInfo of a gateway connection: it carries no
// client certificate; HTTP callers authenticate per request.
type inProcessInfo struct{ credentials.CommonAuthInfo }

func (inProcessInfo) AuthType() string { return "in-process" }
