package main

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The google.longrunning.Operations routes of the gateway. There is no
// generated gateway for that service, so these handlers do what generated
// ones do: build the request from the path and query, call the client over
// the gateway's connection (so the auth interceptors run), and answer with
// the mux's marshaler and error handler, in the shape of every other route.
//
//	GET /v1/operations/{id}
//	GET /v1/operations/{id}:wait?timeout=5s
//	GET /v1/operations?filter=order="orders/{id}"&page_size=&page_token=
func registerOperationRoutes(mux *runtime.ServeMux, client longrunningpb.OperationsClient) error {
	routes := []struct {
		pattern, method string
		call            routeCall
	}{
		{"/v1/{name=operations/*}", longrunningpb.Operations_GetOperation_FullMethodName,
			fromPathAndQuery(func(name string) *longrunningpb.GetOperationRequest {
				return &longrunningpb.GetOperationRequest{Name: name}
			}, client.GetOperation)},
		{"/v1/{name=operations/*}:wait", longrunningpb.Operations_WaitOperation_FullMethodName,
			fromPathAndQuery(func(name string) *longrunningpb.WaitOperationRequest {
				return &longrunningpb.WaitOperationRequest{Name: name}
			}, client.WaitOperation)},
		{"/v1/{name=operations}", longrunningpb.Operations_ListOperations_FullMethodName,
			fromPathAndQuery(func(name string) *longrunningpb.ListOperationsRequest {
				return &longrunningpb.ListOperationsRequest{Name: name}
			}, client.ListOperations)},
	}
	for _, rt := range routes {
		err := mux.HandlePath(http.MethodGet, rt.pattern, func(w http.ResponseWriter, r *http.Request, params map[string]string) {
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			_, outbound := runtime.MarshalerForRequest(mux, r)
			actx, err := runtime.AnnotateContext(ctx, mux, r, rt.method, runtime.WithHTTPPathPattern(rt.pattern))
			if err != nil {
				runtime.HTTPError(ctx, mux, outbound, w, r, err)
				return
			}
			var md runtime.ServerMetadata
			resp, err := rt.call(actx, params["name"], r, grpc.Header(&md.HeaderMD), grpc.Trailer(&md.TrailerMD))
			actx = runtime.NewServerMetadataContext(actx, md)
			if err != nil {
				runtime.HTTPError(actx, mux, outbound, w, r, err)
				return
			}
			runtime.ForwardResponseMessage(actx, mux, outbound, w, r, resp, mux.GetForwardResponseOptions()...)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// nameFromPath keeps the query string from setting the name the path set.
var nameFromPath = utilities.NewDoubleArray([][]string{{"name"}})

// queryParams fills req's other fields from the query string, as the
// generated handlers do (timeout=5s, filter=..., page_size=10); unknown
// parameters are ignored, as there.
// routeCall calls a method for a request to its route; name is the path's.
type routeCall func(ctx context.Context, name string, r *http.Request, opts ...grpc.CallOption) (proto.Message, error)

// fromPathAndQuery is the routeCall of a method whose request is the name
// in the path and the rest from the query parameters.
func fromPathAndQuery[Req proto.Message, Resp proto.Message](newReq func(name string) Req, call func(context.Context, Req, ...grpc.CallOption) (Resp, error)) routeCall {
	return func(ctx context.Context, name string, r *http.Request, opts ...grpc.CallOption) (proto.Message, error) {
		req := newReq(name)
		if err := queryParams(req, r); err != nil {
			return nil, err
		}
		return call(ctx, req, opts...)
	}
}

func queryParams(req proto.Message, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return status.Errorf(codes.InvalidArgument, "%v", err)
	}
	// One parameter at a time, so that a bad value is reported against
	// its field.
	for k, v := range r.Form {
		if err := runtime.PopulateQueryParameters(req, url.Values{k: v}, nameFromPath); err != nil {
			return badRequest(k, err.Error())
		}
	}
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	return nil
}
