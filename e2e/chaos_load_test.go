package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
)

// chaosClient is one caller of the load, with a real signed token.
type chaosClient struct {
	principal  string // as the processor records it: "customer:…", "service:…"
	token      string
	customerID string      // the body's customerId
	actor      order.Actor // what ingest puts in its commands, for replays
}

// chaosClients are a staff client (the stack's standard token), a
// customer and a storefront-like service client, each minted by the
// stack's issuer.
func chaosClients(t *testing.T) []chaosClient {
	custTok, custID := customer(t)
	shop := "chaos-shop-" + uuid.NewString()[:8]
	return []chaosClient{
		{principal: "service:staff-console", token: sys.tokens[devissuer.EnvStaff], customerID: "c-chaos",
			actor: order.Actor{ID: "service:staff-console", AllOrders: true}},
		{principal: "customer:" + custID, token: custTok, customerID: custID,
			actor: order.Actor{ID: "customer:" + custID, CustomerID: custID}},
		{principal: "service:" + shop, token: service(t, shop, auth.ScopeCreate, auth.ScopeRead, auth.ScopePay, auth.ScopeCancel), customerID: "c-chaos",
			actor: order.Actor{ID: "service:" + shop}},
	}
}

// chaosKey names a command as the processor records it.
type chaosKey struct{ principal, id string }

// chaosAccepted is a command ingest answered 2xx for.
type chaosAccepted struct {
	chaosKey
	order string
	kind  string
	at    time.Time // when the 2xx arrived
}

type chaosLoadOptions struct {
	creators int     // goroutines creating orders
	rate     float64 // creates per second over all creators; 0 is as fast as possible
	total    int     // stop after this many accepted creates; 0 is until stop
	// Follow-ups: every order is paid; cancelShare of them are also
	// cancelled at the same time; race sends two pays and two cancels at
	// once to every order.
	noFollowUps bool
	cancelShare float64
	race        bool
	// immediate sends follow-ups right after the create's 202 instead of
	// after the create is applied (see chaosImmediateFollowUps).
	immediate bool
	// resendShare of accepted requests are sent again with the same key
	// and body 0.5 to 3 s later, as a client that missed the answer would.
	resendShare float64
	// replayShare of accepted commands are delivered twice: the same
	// command put on the queue again 0.5 to 3 s later with a new
	// deduplication id, as an at-least-once delivery or a redrive of an
	// applied command would. Only the processor's idempotency record can
	// tell.
	replayShare float64
}

// chaosLoad drives ingest over HTTP and records every accepted command.
type chaosLoad struct {
	e       *chaosEnv
	o       chaosLoadOptions
	clients []chaosClient
	http    *http.Client

	stopping chan struct{}
	stopOnce sync.Once
	creators sync.WaitGroup
	follows  sync.WaitGroup
	sem      chan struct{} // bounds concurrent follow-ups

	mu       sync.Mutex
	accepted []chaosAccepted
	seen     map[chaosKey]bool
	pending  map[string]chaosClient // created, follow-ups waiting for the create to apply
	creates  int
	gaveUp   int // never answered 2xx (not accepted, so not accounted)
	resent   int
	replayed int
	refused  []string
	unfollow int // orders whose follow-ups were never sent (create never applied)
}

func startChaosLoad(t *testing.T, e *chaosEnv, o chaosLoadOptions) *chaosLoad {
	l := &chaosLoad{
		e: e, o: o, clients: chaosClients(t),
		http:     &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		stopping: make(chan struct{}),
		sem:      make(chan struct{}, 8),
		seen:     map[chaosKey]bool{},
		pending:  map[string]chaosClient{},
	}
	var tick <-chan time.Time
	if o.rate > 0 {
		tk := time.NewTicker(time.Duration(float64(time.Second) / o.rate))
		tick = tk.C
		go func() { <-l.stopping; tk.Stop() }()
	}
	for i := range o.creators {
		l.creators.Add(1)
		go func() {
			defer l.creators.Done()
			cl := l.clients[i%len(l.clients)]
			for {
				if tick != nil {
					select {
					case <-l.stopping:
						return
					case <-tick:
					}
				} else if l.stopped() {
					return
				}
				if o.total > 0 {
					l.mu.Lock()
					done := l.creates >= o.total
					if !done {
						l.creates++
					}
					l.mu.Unlock()
					if done {
						return
					}
				}
				l.create(cl)
			}
		}()
	}
	if !o.noFollowUps && !o.immediate {
		l.follows.Add(1)
		go l.watch()
	}
	return l
}

func (l *chaosLoad) stopped() bool {
	select {
	case <-l.stopping:
		return true
	default:
		return false
	}
}

// waitCreators waits until a bounded load (total) has sent everything.
func (l *chaosLoad) waitCreators() { l.creators.Wait() }

// stop ends new creates and waits until every created order's follow-ups
// have been sent (or could not be: see unfollow).
func (l *chaosLoad) stop() {
	l.stopOnce.Do(func() { close(l.stopping) })
	l.creators.Wait()
	l.follows.Wait()
	l.http.CloseIdleConnections()
}

func (l *chaosLoad) create(cl chaosClient) {
	body := fmt.Sprintf(`{"customerId":%q,"currencyCode":"USD","lineItems":[{"sku":"SKU-1","name":"Mug","quantity":2,"unitPriceMinor":"1200"}]}`, cl.customerID)
	cmd := order.CreateOrder{CustomerID: cl.customerID, Currency: "USD", Lines: []order.LineItem{{SKU: "SKU-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1200}}}
	name, ok := l.submit(cl, "", "/v1/orders", body, cmd, uuid.NewString())
	if !ok || l.o.noFollowUps {
		return
	}
	id := strings.TrimPrefix(name, "orders/")
	if l.o.immediate {
		l.follows.Add(1)
		go func() {
			defer l.follows.Done()
			l.followUp(cl, id)
		}()
		return
	}
	l.mu.Lock()
	l.pending[id] = cl
	l.mu.Unlock()
}

// watch releases the follow-ups of each order once its create is applied,
// asking PostgreSQL for all waiting orders at once.
func (l *chaosLoad) watch() {
	defer l.follows.Done()
	var gaveUpAt time.Time
	for {
		l.mu.Lock()
		ids := make([]string, 0, len(l.pending))
		for id := range l.pending {
			ids = append(ids, id)
		}
		l.mu.Unlock()
		if len(ids) == 0 && l.stopped() {
			l.creators.Wait() // a create may still be answering
			l.mu.Lock()
			n := len(l.pending)
			l.mu.Unlock()
			if n == 0 {
				return
			}
			continue
		}
		if l.stopped() && gaveUpAt.IsZero() {
			gaveUpAt = time.Now().Add(chaosSettleTimeout)
		}
		if !gaveUpAt.IsZero() && time.Now().After(gaveUpAt) {
			l.mu.Lock()
			l.unfollow += len(l.pending)
			clear(l.pending)
			l.mu.Unlock()
			return
		}
		var ready []string
		if len(ids) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			l.e.db.NewSelect().Table("orders").Column("id").Where("id IN (?)", bun.In(ids)).Scan(ctx, &ready)
			cancel()
		}
		for _, id := range ready {
			l.mu.Lock()
			cl, ok := l.pending[id]
			delete(l.pending, id)
			l.mu.Unlock()
			if !ok {
				continue
			}
			l.follows.Add(1)
			go func() {
				defer l.follows.Done()
				l.followUp(cl, id)
			}()
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// followUp pays the order and, for some orders, cancels it at the same
// time; in race mode it sends two pays and two cancels at once.
func (l *chaosLoad) followUp(cl chaosClient, id string) {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	kinds := []string{"pay"}
	switch {
	case l.o.race:
		kinds = []string{"pay", "cancel", "pay", "cancel"}
	case rand.Float64() < l.o.cancelShare:
		kinds = append(kinds, "cancel")
	}
	var wg sync.WaitGroup
	for _, k := range kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body string
			var cmd order.Body
			switch k {
			case "pay":
				ref := "ch_" + uuid.NewString()[:8]
				body, cmd = `{"paymentReference":"`+ref+`","amountMinor":"2400"}`, order.PayOrder{Reference: ref, AmountMinor: 2400}
			default:
				body, cmd = `{"reason":"chaos"}`, order.CancelOrder{Reason: "chaos"}
			}
			l.submit(cl, id, "/v1/orders/"+id+":"+k, body, cmd, uuid.NewString())
		}()
	}
	wg.Wait()
}

// submit sends one command until ingest answers 2xx, retrying with the
// same key (as a client must) through errors and 5xx. It records the
// command when accepted and returns the order's name from the answer.
func (l *chaosLoad) submit(cl chaosClient, orderID, path, body string, cmd order.Body, key string) (string, bool) {
	kind := string(cmd.Kind())
	deadline := time.Now().Add(90 * time.Second)
	var stopDeadline time.Time
	wait := 100 * time.Millisecond
	for {
		status, name, raw, err := l.post(cl, path, body, key)
		switch {
		case err == nil && status == http.StatusAccepted:
			if orderID == "" {
				orderID = strings.TrimPrefix(name, "orders/")
			}
			k := chaosKey{cl.principal, key}
			l.mu.Lock()
			if !l.seen[k] {
				l.seen[k] = true
				l.accepted = append(l.accepted, chaosAccepted{chaosKey: k, order: orderID, kind: kind, at: time.Now()})
			}
			l.mu.Unlock()
			if rand.Float64() < l.o.replayShare {
				l.later(func() { l.replay(order.Command{ID: key, OrderID: orderID, Actor: cl.actor, Body: cmd}) })
			}
			if rand.Float64() < l.o.resendShare {
				l.later(func() { l.resend(cl, kind, name, path, body, key) })
			}
			return name, true
		case err == nil && status >= 400 && status < 500 && status != http.StatusTooManyRequests && status != http.StatusRequestTimeout:
			l.mu.Lock()
			l.refused = append(l.refused, fmt.Sprintf("%s %s by %s: %d %s", kind, path, cl.principal, status, strings.TrimSpace(raw)))
			l.mu.Unlock()
			return "", false
		}
		if l.stopped() && stopDeadline.IsZero() {
			stopDeadline = time.Now().Add(30 * time.Second)
		}
		if time.Now().After(deadline) || (!stopDeadline.IsZero() && time.Now().After(stopDeadline)) {
			l.mu.Lock()
			l.gaveUp++
			l.mu.Unlock()
			return "", false
		}
		time.Sleep(wait)
		wait = min(wait*2, time.Second)
	}
}

// later runs f 0.5 to 3 s from now; stop waits for it.
func (l *chaosLoad) later(f func()) {
	l.follows.Add(1)
	go func() {
		defer l.follows.Done()
		time.Sleep(time.Duration(500+rand.IntN(2500)) * time.Millisecond)
		f()
	}()
}

// replay puts an accepted command on the command queue a second time, as
// ingest encoded it, under a new deduplication id.
func (l *chaosLoad) replay(cmd order.Command) {
	body, err := orderpb.EncodeCommand(cmd)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = l.e.sqs.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: aws.String(l.e.urls.Command), MessageBody: aws.String(string(body)),
		MessageGroupId: aws.String(cmd.OrderID), MessageDeduplicationId: aws.String(uuid.NewString()),
	})
	if err == nil { // an outage of the endpoint: not replayed, nothing to count
		l.mu.Lock()
		l.replayed++
		l.mu.Unlock()
	}
}

// resend repeats an accepted request once: the same key and body must be
// the same command, however far it got.
func (l *chaosLoad) resend(cl chaosClient, kind, name, path, body, key string) {
	status, again, raw, err := l.post(cl, path, body, key)
	if err != nil || status >= 500 {
		return // an outage; the first answer stands
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resent++
	switch {
	case status != http.StatusAccepted:
		l.refused = append(l.refused, fmt.Sprintf("resent %s %s by %s: %d %s", kind, path, cl.principal, status, strings.TrimSpace(raw)))
	case again != name:
		l.refused = append(l.refused, fmt.Sprintf("resent %s %s by %s named %s, first %s", kind, path, cl.principal, again, name))
	}
}

func (l *chaosLoad) post(cl chaosClient, path, body, key string) (int, string, string, error) {
	req, err := http.NewRequest("POST", "http://"+l.e.ingestHTTP+path, strings.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cl.token)
	req.Header.Set("Idempotency-Key", key)
	resp, err := l.http.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", "", err
	}
	var b struct {
		Name string `json:"name"`
	}
	json.Unmarshal(raw, &b)
	return resp.StatusCode, b.Name, string(raw), nil
}

// snapshot is what the load recorded.
func (l *chaosLoad) snapshot() (accepted []chaosAccepted, refused []string, gaveUp, resent, replayed, unfollow int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]chaosAccepted(nil), l.accepted...), append([]string(nil), l.refused...), l.gaveUp, l.resent, l.replayed, l.unfollow
}
