package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// fieldsFlag adds --fields, the read mask.
func (a *app) fieldsFlag(c *cobra.Command) {
	c.Flags().StringSliceVar(&a.flags.fields, "fields", nil, "fields to read, e.g. id,state,version (all when empty)")
}

func (a *app) readMask() *fieldmaskpb.FieldMask {
	if len(a.flags.fields) == 0 {
		return nil
	}
	return &fieldmaskpb.FieldMask{Paths: a.flags.fields}
}

func (a *app) queryClient() (omsv1.OrderQueryServiceClient, error) {
	conn, err := a.conn(a.flags.query)
	if err != nil {
		return nil, err
	}
	return omsv1.NewOrderQueryServiceClient(conn), nil
}

func (a *app) getCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "get ORDER",
		Short: "Show an order",
		Example: `  omsctl get orders/0b6f…
  omsctl get 0b6f… --fields id,state,version -o json`,
		Args: oneOrder,
		RunE: onOrder(func(c *cobra.Command, name string) error {
			cl, err := a.queryClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.callContext(c.Context())
			defer cancel()
			o, err := cl.GetOrder(ctx, &omsv1.GetOrderRequest{Name: name, ReadMask: a.readMask(), MinVersion: a.flags.minVersion})
			if err != nil {
				return failure{"get " + name, err}
			}
			if a.flags.output == "json" {
				return a.writeJSON(o)
			}
			return printOrders(a.stdout, []*omsv1.Order{o})
		}),
	}
	a.fieldsFlag(c)
	c.Flags().Int64Var(&a.flags.minVersion, "min-version", 0, "wait (up to --timeout) until the order has reached this version: read your own write")
	return c
}

func (a *app) listCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "list",
		Short: "List orders, newest first",
		Example: `  omsctl list --filter 'state = PAID AND customer_id = "c-1"' --page-size 20
  omsctl list --all -o json | jq -r .name`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := a.queryClient()
			if err != nil {
				return err
			}
			req := &omsv1.ListOrdersRequest{Filter: a.flags.filter, OrderBy: a.flags.orderBy, PageSize: a.flags.pageSize,
				PageToken: a.flags.pageToken, ReadMask: a.readMask()}
			if !a.flags.all {
				ctx, cancel := a.callContext(c.Context())
				defer cancel()
				resp, err := cl.ListOrders(ctx, req)
				if err != nil {
					return failure{"list", err}
				}
				if a.flags.output == "json" {
					return a.writeJSON(resp)
				}
				if err := printOrders(a.stdout, resp.GetOrders()); err != nil {
					return err
				}
				if resp.GetNextPageToken() != "" {
					fmt.Fprintf(a.stderr, "more: --page-token %s (or --all)\n", resp.GetNextPageToken())
				}
				return nil
			}
			return a.listAll(c.Context(), cl, req)
		},
	}
	f := c.Flags()
	f.StringVar(&a.flags.filter, "filter", "", `AIP-160 filter, e.g. 'state = PAID' or 'create_time >= "2026-01-01T00:00:00Z"'`)
	f.StringVar(&a.flags.orderBy, "order-by", "", `"create_time desc" (the default) or "create_time asc"`)
	f.Int32Var(&a.flags.pageSize, "page-size", 0, "orders per page (the service's default when 0)")
	f.StringVar(&a.flags.pageToken, "page-token", "", "continue from a previous page")
	f.BoolVar(&a.flags.all, "all", false, "follow every page (json: one order per line)")
	a.fieldsFlag(c)
	return c
}

// listAll follows next_page_token to the end. Orders are printed page by
// page, so a long listing starts at once; the table is aligned per page.
func (a *app) listAll(ctx context.Context, cl omsv1.OrderQueryServiceClient, req *omsv1.ListOrdersRequest) error {
	return a.eachPage(ctx, req.PageToken, func(ctx context.Context, token string) (string, error) {
		req.PageToken = token
		resp, err := cl.ListOrders(ctx, req)
		if err != nil {
			return "", failure{"list", err}
		}
		if a.flags.output == "json" {
			for _, o := range resp.GetOrders() {
				if err := a.writeJSONLine(o); err != nil {
					return "", err
				}
			}
		} else if len(resp.GetOrders()) > 0 || token == "" {
			if err := printOrders(a.stdout, resp.GetOrders()); err != nil {
				return "", err
			}
		}
		return resp.GetNextPageToken(), nil
	})
}

// eachPage calls page with token, then with each next page token it
// returns, until one is empty or it fails; each call gets a --timeout of
// its own.
func (a *app) eachPage(ctx context.Context, token string, page func(ctx context.Context, token string) (next string, err error)) error {
	for {
		cctx, cancel := a.callContext(ctx)
		next, err := page(cctx, token)
		cancel()
		if err != nil || next == "" {
			return err
		}
		token = next
	}
}

func (a *app) eventsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "events ORDER",
		Short: "Show an order's history, oldest first, rejected commands included",
		Args:  oneOrder,
		RunE: onOrder(func(c *cobra.Command, name string) error {
			cl, err := a.queryClient()
			if err != nil {
				return err
			}
			all := &omsv1.ListOrderEventsResponse{}
			err = a.eachPage(c.Context(), "", func(ctx context.Context, token string) (string, error) {
				resp, err := cl.ListOrderEvents(ctx, &omsv1.ListOrderEventsRequest{Parent: name, PageToken: token})
				all.Events = append(all.Events, resp.GetEvents()...)
				return resp.GetNextPageToken(), err
			})
			if err != nil {
				return failure{"events " + name, err}
			}
			if a.flags.output == "json" {
				return a.writeJSON(all)
			}
			return printEvents(a.stdout, all.GetEvents())
		}),
	}
}

func (a *app) watchCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "watch ORDER",
		Short: "Print the order, then each change as it commits, until interrupted (or for --timeout)",
		Example: `  omsctl watch orders/0b6f…
  omsctl watch orders/0b6f… --since-version 2 --timeout 30s -o json`,
		Args: oneOrder,
		RunE: onOrder(func(c *cobra.Command, name string) error {
			ctx := c.Context()
			if c.Flags().Changed("timeout") {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, a.flags.timeout)
				defer cancel()
			}
			return a.watch(ctx, name)
		}),
	}
	c.Flags().Int64Var(&a.flags.sinceVersion, "since-version", 0, "send only states newer than this version (0: the current state first)")
	a.fieldsFlag(c)
	return c
}

// watch streams the order's states. A stream the server ends (a restart, a
// deploy) is resumed from the last version seen, so nothing is missed or
// printed twice; the watch itself ends only on interrupt or --timeout,
// which are not failures.
func (a *app) watch(ctx context.Context, name string) error {
	cl, err := a.queryClient()
	if err != nil {
		return err
	}
	since := a.flags.sinceVersion
	header := false
	pause := 100 * time.Millisecond
	for {
		stream, err := cl.WatchOrder(ctx, &omsv1.WatchOrderRequest{Name: name, SinceVersion: since, ReadMask: a.readMask()})
		for err == nil {
			var resp *omsv1.WatchOrderResponse
			if resp, err = stream.Recv(); err != nil {
				break
			}
			o := resp.GetOrder()
			if v := o.GetVersion(); v > since {
				since = v
			}
			pause = 100 * time.Millisecond
			if a.flags.output == "json" {
				err = a.writeJSONLine(o)
				continue
			}
			if !header {
				fmt.Fprintf(a.stdout, watchFormat, anySlice(orderHeader)...)
				header = true
			}
			fmt.Fprintf(a.stdout, watchFormat, anySlice(blanks(orderCells(o)))...)
		}
		switch {
		case ctx.Err() != nil:
			return nil // interrupted, or --timeout passed
		case errors.Is(err, io.EOF), status.Code(err) == codes.Unavailable:
			// The server ended the stream or went away: resume.
		default:
			return failure{"watch " + name, err}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// watchFormat aligns the rows of a table printed one row at a time.
const watchFormat = "%-45s   %-9s   %-20s   %-14s   %-7s   %s\n"

func blanks(cells []string) []string {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	return cells
}

func anySlice(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
