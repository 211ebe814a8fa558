package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// commandCommands are the five order commands, each sent to ingest.
func (a *app) commandCommands() []*cobra.Command {
	return []*cobra.Command{a.createCommand(), a.payCommand(), a.shipCommand(), a.deliverCommand(), a.cancelCommand()}
}

// commandFlags are the flags every order command takes.
func (a *app) commandFlags(c *cobra.Command) {
	c.Flags().StringVar(&a.flags.requestID, "request-id", "", "idempotency key (a new UUID when empty, printed so the command can be retried safely)")
	c.Flags().BoolVar(&a.flags.wait, "wait", false, "wait (up to --timeout) for the command's operation; exit 1 with the reason when it was not applied")
}

type createFlags struct {
	customer, currency, orderID, file string
	lines, addressLines               []string
	expectedTotal                     int64
	recipient, locality, area         string
	postalCode, regionCode            string
}

func (a *app) createCommand() *cobra.Command {
	var f createFlags
	c := &cobra.Command{
		Use:   "create",
		Short: "Create an order, from flags or a JSON file",
		Example: `  omsctl create --currency USD --line "SKU-1:Mug:2:1200" --wait
  omsctl create --file order.json        # the API's JSON shape, as POST /v1/orders takes it
  cat order.json | omsctl create --file -`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			order, err := f.order(c, a.stdin)
			if err != nil {
				return err
			}
			return a.send(c.Context(), "create", func(ctx context.Context, cl omsv1.OrderCommandServiceClient, id string) (*omsv1.CommandAcceptance, error) {
				return cl.CreateOrder(ctx, &omsv1.CreateOrderRequest{Order: order, OrderId: f.orderID, RequestId: id})
			})
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.customer, "customer", "", "customer id (a customer's token fills in its own)")
	fl.StringVar(&f.currency, "currency", "", "ISO 4217 currency code, e.g. USD")
	fl.StringArrayVar(&f.lines, "line", nil, `a line item "SKU:name:quantity:unit_price_minor" (repeat for more; the name may contain colons)`)
	fl.Int64Var(&f.expectedTotal, "expected-total", 0, "the total (minor units) the client expects; the order is refused if it differs")
	fl.StringVar(&f.recipient, "recipient", "", "shipping address: recipient")
	fl.StringArrayVar(&f.addressLines, "address-line", nil, "shipping address: a street line (repeat for more)")
	fl.StringVar(&f.locality, "locality", "", "shipping address: city or town")
	fl.StringVar(&f.area, "administrative-area", "", "shipping address: state or province")
	fl.StringVar(&f.postalCode, "postal-code", "", "shipping address: postal code")
	fl.StringVar(&f.regionCode, "region-code", "", "shipping address: CLDR region code, e.g. US")
	fl.StringVar(&f.orderID, "order-id", "", "a chosen order id (a UUID; staff only; derived from the request id when empty)")
	fl.StringVarP(&f.file, "file", "f", "", `the order as JSON, in the API's shape ("-" reads stdin); excludes the order flags`)
	c.MarkFlagFilename("file", "json")
	a.commandFlags(c)
	return c
}

// orderFlags are the flags that describe the order itself, which --file
// replaces.
var orderFlags = []string{"customer", "currency", "line", "expected-total", "recipient", "address-line",
	"locality", "administrative-area", "postal-code", "region-code"}

// order builds the order to create from --file or the flags.
func (f *createFlags) order(c *cobra.Command, stdin io.Reader) (*omsv1.Order, error) {
	if f.file != "" {
		for _, name := range orderFlags {
			if c.Flags().Changed(name) {
				return nil, usagef("--file and --%s: the file describes the whole order", name)
			}
		}
		return readOrder(f.file, stdin)
	}
	if len(f.lines) == 0 {
		return nil, usagef(`create needs --line "SKU:name:quantity:unit_price_minor" (one per item) or --file`)
	}
	o := &omsv1.Order{CustomerId: f.customer, CurrencyCode: f.currency, TotalMinor: f.expectedTotal}
	for i, s := range f.lines {
		l, err := parseLine(s)
		if err != nil {
			return nil, usagef("--line #%d: %v", i+1, err)
		}
		o.LineItems = append(o.LineItems, l)
	}
	addr := &omsv1.PostalAddress{Recipient: f.recipient, AddressLines: f.addressLines, Locality: f.locality,
		AdministrativeArea: f.area, PostalCode: f.postalCode, RegionCode: f.regionCode}
	if f.recipient != "" || len(f.addressLines) > 0 || f.locality != "" || f.area != "" || f.postalCode != "" || f.regionCode != "" {
		o.ShippingAddress = addr
	}
	return o, nil
}

// parseLine reads "SKU:name:quantity:unit_price_minor". The name is
// everything between the SKU and the last two fields, so it may contain
// colons. Ranges are the service's to check, so its message is the one
// the user sees for every rule.
func parseLine(s string) (*omsv1.LineItem, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 4 {
		return nil, fmt.Errorf("%q: want SKU:name:quantity:unit_price_minor", s)
	}
	n := len(parts)
	qty, err := strconv.ParseInt(parts[n-2], 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%q: quantity %q is not a whole number", s, parts[n-2])
	}
	price, err := strconv.ParseInt(parts[n-1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%q: unit price %q is not a whole number of minor units", s, parts[n-1])
	}
	return &omsv1.LineItem{Sku: parts[0], Name: strings.Join(parts[1:n-2], ":"), Quantity: int32(qty), UnitPriceMinor: price}, nil
}

// readOrder reads an order in the API's JSON shape (either field spelling,
// as the HTTP API accepts) from path, or stdin for "-".
func readOrder(path string, stdin io.Reader) (*omsv1.Order, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, usagef("--file: %v", err)
	}
	o := &omsv1.Order{}
	if err := protojson.Unmarshal(b, o); err != nil {
		return nil, usagef("--file %s: not an order in the API's JSON shape: %v", path, err)
	}
	return o, nil
}

func (a *app) payCommand() *cobra.Command {
	var amount int64
	var reference string
	c := &cobra.Command{
		Use:     "pay ORDER --amount N --reference R",
		Short:   "Record the payment of an order (the amount must equal its total)",
		Example: `  omsctl pay orders/0b6f… --amount 2400 --reference ch_1 --wait`,
		Args:    oneOrder,
		RunE: onOrder(func(c *cobra.Command, name string) error {
			return a.send(c.Context(), "pay "+name, func(ctx context.Context, cl omsv1.OrderCommandServiceClient, id string) (*omsv1.CommandAcceptance, error) {
				return cl.PayOrder(ctx, &omsv1.PayOrderRequest{Name: name, RequestId: id, AmountMinor: amount, PaymentReference: reference})
			})
		}),
	}
	c.Flags().Int64Var(&amount, "amount", 0, "amount paid, in minor units (cents)")
	c.Flags().StringVar(&reference, "reference", "", "the payment provider's reference")
	c.MarkFlagRequired("amount")
	c.MarkFlagRequired("reference")
	a.commandFlags(c)
	return c
}

func (a *app) shipCommand() *cobra.Command {
	var carrier, tracking string
	c := &cobra.Command{
		Use:   "ship ORDER --carrier C --tracking T",
		Short: "Record that a paid order was shipped",
		Args:  oneOrder,
		RunE: onOrder(func(c *cobra.Command, name string) error {
			return a.send(c.Context(), "ship "+name, func(ctx context.Context, cl omsv1.OrderCommandServiceClient, id string) (*omsv1.CommandAcceptance, error) {
				return cl.ShipOrder(ctx, &omsv1.ShipOrderRequest{Name: name, RequestId: id, Carrier: carrier, TrackingNumber: tracking})
			})
		}),
	}
	c.Flags().StringVar(&carrier, "carrier", "", "carrier, e.g. UPS")
	c.Flags().StringVar(&tracking, "tracking", "", "tracking number")
	c.MarkFlagRequired("carrier")
	c.MarkFlagRequired("tracking")
	a.commandFlags(c)
	return c
}

func (a *app) deliverCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "deliver ORDER",
		Short: "Record that a shipped order was delivered",
		Args:  oneOrder,
		RunE: onOrder(func(c *cobra.Command, name string) error {
			return a.send(c.Context(), "deliver "+name, func(ctx context.Context, cl omsv1.OrderCommandServiceClient, id string) (*omsv1.CommandAcceptance, error) {
				return cl.DeliverOrder(ctx, &omsv1.DeliverOrderRequest{Name: name, RequestId: id})
			})
		}),
	}
	a.commandFlags(c)
	return c
}

func (a *app) cancelCommand() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "cancel ORDER [--reason R]",
		Short: "Cancel an order that has not shipped",
		Args:  oneOrder,
		RunE: onOrder(func(c *cobra.Command, name string) error {
			return a.send(c.Context(), "cancel "+name, func(ctx context.Context, cl omsv1.OrderCommandServiceClient, id string) (*omsv1.CommandAcceptance, error) {
				return cl.CancelOrder(ctx, &omsv1.CancelOrderRequest{Name: name, RequestId: id, Reason: reason})
			})
		}),
	}
	c.Flags().StringVar(&reason, "reason", "", "why the order is cancelled")
	a.commandFlags(c)
	return c
}

type sendFunc func(ctx context.Context, cl omsv1.OrderCommandServiceClient, requestID string) (*omsv1.CommandAcceptance, error)

// send sends one command under --request-id, prints the acceptance and,
// with --wait, waits for the command's operation. The acceptance is
// printed even when the wait fails, so its request id is there to retry
// with.
func (a *app) send(ctx context.Context, op string, call sendFunc) error {
	reqID := a.flags.requestID
	if reqID == "" {
		reqID = a.newID()
	}
	conn, err := a.conn(a.flags.ingest)
	if err != nil {
		return err
	}
	cctx, cancel := a.callContext(ctx)
	acc, err := call(cctx, omsv1.NewOrderCommandServiceClient(conn), reqID)
	cancel()
	if err != nil {
		return failure{op, err}
	}
	if op == "create" {
		op += " " + acc.GetName()
	}
	if !a.flags.wait {
		return a.printAcceptance(reqID, acc, nil)
	}
	if acc.GetOperation() == "" {
		a.printAcceptance(reqID, acc, nil)
		return failure{op, errors.New("ingest named no operation to wait for; it predates operations")}
	}
	done, err := a.waitOperation(ctx, acc.GetOperation())
	if perr := a.printAcceptance(reqID, acc, done); perr != nil {
		return perr
	}
	if err != nil {
		return failure{op, err}
	}
	if done.GetError() != nil {
		return failure{op, status.FromProto(done.GetError()).Err()}
	}
	return nil
}

// printAcceptance prints what ingest answered and, after --wait, the
// operation (its order, in a table).
func (a *app) printAcceptance(reqID string, acc *omsv1.CommandAcceptance, done *longrunningpb.Operation) error {
	if a.flags.output == "json" {
		parts := []jsonPart{{"requestId", rawString(reqID)}, {"acceptance", acc}}
		if done != nil {
			parts = append(parts, jsonPart{"operation", done})
		}
		return a.writeJSONObject(parts)
	}
	w := newTable(a.stdout)
	row(w, "REQUEST ID", "ORDER", "OPERATION", "ACCEPTED")
	row(w, reqID, acc.GetName(), acc.GetOperation(), timeText(acc.GetAcceptTime()))
	if err := w.Flush(); err != nil {
		return err
	}
	if done == nil || done.GetError() != nil {
		return nil
	}
	order, err := operationOrder(done)
	if err != nil || order == nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	return printOrders(a.stdout, []*omsv1.Order{order})
}

// orderName accepts "orders/{id}" or the bare id.
func orderName(arg string) (string, error) { return resourceName("orders", arg) }

// operationName accepts "operations/{id}" or the bare id.
func operationName(arg string) (string, error) { return resourceName("operations", arg) }

// onOrder and onOperation are the RunE of a command of one order (one
// operation): they run run with its name, parsed from the argument.
func onOrder(run func(c *cobra.Command, name string) error) func(*cobra.Command, []string) error {
	return onResource(orderName, run)
}

func onOperation(run func(c *cobra.Command, name string) error) func(*cobra.Command, []string) error {
	return onResource(operationName, run)
}

func onResource(parse func(string) (string, error), run func(c *cobra.Command, name string) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		name, err := parse(args[0])
		if err != nil {
			return err
		}
		return run(c, name)
	}
}

func resourceName(collection, arg string) (string, error) {
	id := strings.TrimPrefix(arg, collection+"/")
	if id == "" || strings.Contains(id, "/") {
		return "", usagef("%q: want %s/{id} or the bare id", arg, collection)
	}
	return collection + "/" + id, nil
}

// noArgs and oneOrder are cobra's argument checks, as usage errors.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q (see %s --help)", c.Name(), args, c.CommandPath())
	}
	return nil
}

func oneOrder(c *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usagef("%s needs one order, orders/{id} or the bare id (see %s --help)", c.Name(), c.CommandPath())
	}
	return nil
}

func oneOperation(c *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usagef("%s needs one operation, operations/{id} or the bare id (see %s --help)", c.Name(), c.CommandPath())
	}
	return nil
}
