package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

func (a *app) operationsClient() (longrunningpb.OperationsClient, error) {
	conn, err := a.conn(a.flags.query)
	if err != nil {
		return nil, err
	}
	return longrunningpb.NewOperationsClient(conn), nil
}

func (a *app) operationCommand() *cobra.Command {
	c := &cobra.Command{
		Use:     "operation",
		Aliases: []string{"operations", "op"},
		Short:   "Read the operations that tell how commands ended",
	}
	c.AddCommand(a.operationGetCommand(), a.operationWaitCommand(), a.operationListCommand())
	return c
}

func (a *app) operationGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show an operation: pending, or done with the order or the reason it was not applied",
		Args:  oneOperation,
		RunE: onOperation(func(c *cobra.Command, name string) error {
			cl, err := a.operationsClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.callContext(c.Context())
			defer cancel()
			op, err := cl.GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: name})
			if err != nil {
				return failure{"operation get " + name, err}
			}
			return a.printOperation(op)
		}),
	}
}

func (a *app) operationWaitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait (up to --timeout) for an operation; exit 1 with the reason when its command was not applied",
		Args:  oneOperation,
		RunE: onOperation(func(c *cobra.Command, name string) error {
			op, err := a.waitOperation(c.Context(), name)
			if err != nil {
				return failure{"operation wait " + name, err}
			}
			if err := a.printOperation(op); err != nil {
				return err
			}
			if op.GetError() != nil {
				return failure{"operation wait " + name, status.FromProto(op.GetError()).Err()}
			}
			return nil
		}),
	}
}

func (a *app) operationListCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "list --order ORDER",
		Short: "List the operations of an order's commands",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			order, err := orderName(a.flags.operationOrder)
			if err != nil {
				return err
			}
			cl, err := a.operationsClient()
			if err != nil {
				return err
			}
			all := &longrunningpb.ListOperationsResponse{}
			err = a.eachPage(c.Context(), "", func(ctx context.Context, token string) (string, error) {
				resp, err := cl.ListOperations(ctx, &longrunningpb.ListOperationsRequest{Name: "operations", Filter: operationFilter(order),
					PageSize: a.flags.operationPageSize, PageToken: token})
				all.Operations = append(all.Operations, resp.GetOperations()...)
				return resp.GetNextPageToken(), err
			})
			if err != nil {
				return failure{"operation list " + order, err}
			}
			if a.flags.output == "json" {
				return a.writeJSON(all)
			}
			return printOperations(a.stdout, all.GetOperations())
		},
	}
	c.Flags().StringVar(&a.flags.operationOrder, "order", "", "the order, orders/{id} or the bare id")
	c.Flags().Int32Var(&a.flags.operationPageSize, "page-size", 0, "operations per call (the service's default when 0); every page is read")
	c.MarkFlagRequired("order")
	return c
}

// operationFilter is ListOperations' filter for one order's operations.
func operationFilter(order string) string { return "order = " + strconv.Quote(order) }

func (a *app) printOperation(op *longrunningpb.Operation) error {
	if a.flags.output == "json" {
		return a.writeJSON(op)
	}
	if err := printOperations(a.stdout, []*longrunningpb.Operation{op}); err != nil {
		return err
	}
	order, err := operationOrder(op)
	if err != nil || order == nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	return printOrders(a.stdout, []*omsv1.Order{order})
}

// waitOperation calls WaitOperation until the operation is done or
// --timeout has passed. The service may end a wait before the timeout it
// was given (it bounds how long a call may hold a connection), so one call
// is not enough; a short pause between calls keeps a service that answers
// at once from being called in a tight loop.
func (a *app) waitOperation(ctx context.Context, name string) (*longrunningpb.Operation, error) {
	cl, err := a.operationsClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.flags.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	pause := 50 * time.Millisecond
	var last *longrunningpb.Operation
	for {
		op, err := cl.WaitOperation(ctx, &longrunningpb.WaitOperationRequest{Name: name, Timeout: durationpb.New(max(time.Until(deadline), 0))})
		switch {
		case err == nil && op.GetDone():
			return op, nil
		case err == nil:
			last = op
		case ctx.Err() == nil && status.Code(err) == codes.DeadlineExceeded:
			// The service's own bound on one wait.
		case ctx.Err() != nil:
			return nil, stillPending(ctx, name, a.flags.timeout, last)
		default:
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, stillPending(ctx, name, a.flags.timeout, last)
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// stillPending says why a wait ended before the operation did, with what
// the last answer said about its attempts.
func stillPending(ctx context.Context, name string, timeout time.Duration, last *longrunningpb.Operation) error {
	if ctx.Err() == context.Canceled {
		return status.Errorf(codes.Canceled, "interrupted while waiting for %s; wait again with: omsctl operation wait %s", name, name)
	}
	msg := fmt.Sprintf("%s is still pending after %s", name, timeout)
	if last != nil {
		md := operationMetadata(last)
		msg += fmt.Sprintf(" (%d attempts", md.GetAttempts())
		if md.GetLastErrorClass() != "" {
			msg += ", last error " + md.GetLastErrorClass()
		}
		msg += ")"
	}
	return status.Error(codes.DeadlineExceeded, msg+"; wait again with: omsctl operation wait "+name)
}
