package e2e

import (
	"testing"

	"github.com/omsdev/oms/pkg/order"
)

// The chaos suite's books are only as good as its checks: each check must
// see the fault it is there for.

func chaosEv(seq int64, typ order.EventType, kind, id, from string, version int64) chaosEvent {
	return chaosEvent{order: "o1", seq: seq, typ: string(typ), command: kind, commandID: id, actor: "service:a", from: from, version: version}
}

func TestChaosHistoryCheckSeesDuplicateEffects(t *testing.T) {
	created := chaosEv(1, order.EventCreated, "create", "c", "STATE_UNSPECIFIED", 1)
	paid := chaosEv(2, order.EventPaid, "pay", "p1", "CREATED", 2)
	for _, tc := range []struct {
		name          string
		version, last int64
		evs           []chaosEvent
		ok            bool
	}{
		{"created, paid, a rejected pay, cancelled", 3, 4, []chaosEvent{created, paid,
			chaosEv(3, order.EventCommandRejected, "pay", "p2", "PAID", 2), chaosEv(4, order.EventCancelled, "cancel", "x", "PAID", 3)}, true},
		{"paid twice", 3, 3, []chaosEvent{created, paid, chaosEv(3, order.EventPaid, "pay", "p2", "PAID", 3)}, false},
		{"one command, two entries", 2, 3, []chaosEvent{created, paid, chaosEv(3, order.EventCommandRejected, "pay", "p1", "PAID", 2)}, false},
		{"version ahead of the history", 3, 2, []chaosEvent{created, paid}, false},
		{"an entry missing", 2, 3, []chaosEvent{created, paid}, false},
		{"a gap in the sequence", 2, 2, []chaosEvent{created, chaosEv(3, order.EventPaid, "pay", "p1", "CREATED", 2)}, false},
		{"a change that skips a version", 3, 2, []chaosEvent{created, chaosEv(2, order.EventPaid, "pay", "p1", "CREATED", 3)}, false},
	} {
		if got := chaosCheckHistory(tc.version, tc.last, tc.evs); (got == "") != tc.ok {
			t.Errorf("%s: %q", tc.name, got)
		}
	}
}

func TestChaosCommandCheckSeesLostAndWrongOutcomes(t *testing.T) {
	pay := chaosAccepted{chaosKey: chaosKey{"service:a", "p2"}, order: "o1", kind: "pay"}
	applied := chaosProcessed{order: "o1", command: "pay", outcome: "applied"}
	rejected := chaosProcessed{order: "o1", command: "pay", outcome: "rejected", reason: "cannot pay an order in state CANCELLED"}
	mine := chaosEv(3, order.EventCommandRejected, "pay", "p2", "CANCELLED", 2)
	other := chaosEv(4, order.EventCommandRejected, "pay", "p3", "CANCELLED", 2)
	for _, tc := range []struct {
		name    string
		p       chaosProcessed
		evs     []chaosEvent
		history []chaosEvent
		ok      bool
	}{
		{"applied once", applied, []chaosEvent{chaosEv(2, order.EventPaid, "pay", "p2", "CREATED", 2)}, nil, true},
		{"applied without an entry", applied, nil, nil, false},
		{"applied twice", applied, []chaosEvent{chaosEv(2, order.EventPaid, "pay", "p2", "CREATED", 2), chaosEv(3, order.EventPaid, "pay", "p2", "PAID", 3)}, nil, false},
		{"applied, recorded as a rejection", applied, []chaosEvent{mine}, nil, false},
		{"rejected after a cancel", rejected, []chaosEvent{mine}, nil, true},
		{"rejected, the rejection recorded by another pay", rejected, nil, []chaosEvent{other}, true},
		{"rejected, recorded nowhere", rejected, nil, nil, false},
		{"rejected where it was allowed", chaosProcessed{order: "o1", command: "pay", outcome: "rejected", reason: "cannot pay an order in state CREATED"},
			[]chaosEvent{chaosEv(3, order.EventCommandRejected, "pay", "p2", "CREATED", 1)}, nil, false},
		{"rejected for another reason", chaosProcessed{order: "o1", command: "pay", outcome: "rejected", reason: "payment amount 1 does not match order total 2400 USD"},
			[]chaosEvent{mine}, nil, false},
		{"refused", chaosProcessed{order: "o1", command: "pay", outcome: "refused", reason: "order not found"}, nil, nil, false},
		{"recorded on another order", chaosProcessed{order: "o2", command: "pay", outcome: "applied"}, []chaosEvent{chaosEv(2, order.EventPaid, "pay", "p2", "CREATED", 2)}, nil, false},
	} {
		if got := chaosCheckCommand(pay, tc.p, tc.evs, tc.history); (got == "") != tc.ok {
			t.Errorf("%s: %q", tc.name, got)
		}
	}
	create := chaosAccepted{chaosKey: chaosKey{"service:a", "c"}, order: "o1", kind: "create"}
	if got := chaosCheckCommand(create, chaosProcessed{order: "o1", command: "create", outcome: "rejected", reason: "cannot create an order in state CREATED"},
		[]chaosEvent{chaosEv(1, order.EventOrderRejected, "create", "c", "STATE_UNSPECIFIED", 1)}, nil); got == "" {
		t.Error("a rejected create passed")
	}
}

func TestChaosNotificationTallySeesGapsAndDisorder(t *testing.T) {
	history := map[string][]chaosEvent{"o1": {
		chaosEv(1, order.EventCreated, "create", "c", "STATE_UNSPECIFIED", 1),
		chaosEv(2, order.EventPaid, "pay", "p", "CREATED", 2),
		chaosEv(3, order.EventCommandRejected, "cancel", "x", "PAID", 2),
	}}
	n := func(seq, version int64, typ order.EventType) chaosNote {
		return chaosNote{order: "o1", seq: seq, version: version, typ: string(typ)}
	}
	n1, n2, n3 := n(1, 1, order.EventCreated), n(2, 2, order.EventPaid), n(3, 2, order.EventCommandRejected)
	for _, tc := range []struct {
		name                      string
		notes                     []chaosNote
		missing, outOfOrder, dups int
		problems                  bool
	}{
		{"complete and in order", []chaosNote{n1, n2, n3}, 0, 0, 0, false},
		{"one missing", []chaosNote{n1, n3}, 1, 0, 0, true},
		{"out of order", []chaosNote{n2, n1, n3}, 0, 1, 0, true},
		{"a duplicate", []chaosNote{n1, n2, n2, n3}, 0, 0, 1, false},
		{"a late duplicate is not disorder", []chaosNote{n1, n2, n3, n1}, 0, 0, 1, false},
		{"not in the history", []chaosNote{n1, n2, n3, n(4, 3, order.EventCancelled)}, 0, 0, 0, true},
		{"wrong version", []chaosNote{n1, n(2, 3, order.EventPaid), n3}, 0, 1, 0, true},
	} {
		var tally chaosNoteTally
		tally.count(tc.notes, history)
		if tally.missing != tc.missing || tally.outOfOrder != tc.outOfOrder || tally.dup != tc.dups || (len(tally.problems) > 0) != tc.problems {
			t.Errorf("%s: missing %d, out of order %d, duplicates %d, problems %q", tc.name, tally.missing, tally.outOfOrder, tally.dup, tally.problems)
		}
	}
}
