package bench

import (
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
)

func TestMetricSums(t *testing.T) {
	in := `# HELP x y
# TYPE parley_persister_dlq_total counter
parley_persister_dlq_total{reason="invalid"} 2
parley_persister_dlq_total{reason="undecodable",x="a}b"} 3
go_goroutines 42
`
	mfs, err := parseFamilies(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	m := familySums(slices.Collect(maps.Values(mfs)))
	if m["parley_persister_dlq_total"] != 5 || m["go_goroutines"] != 42 || len(m) != 2 {
		t.Fatalf("familySums = %v", m)
	}
	// A malformed exposition is an error, not a silently smaller sum.
	if _, err := parseFamilies(strings.NewReader(in + "weird{a=\"1\"} notanumber\n")); err == nil {
		t.Fatal("a malformed line parsed")
	}
}

func TestTreeCPUTimes(t *testing.T) {
	self := os.Getpid()
	c, err := treeCPUTimes(self, nil)
	if err != nil || len(c) == 0 {
		t.Fatalf("treeCPUTimes = %v, %v", c, err)
	}
	if _, err := treeCPUTimes(1<<30, nil); err == nil {
		t.Fatal("no error for a missing process")
	}
	m := newCPUMeter(map[string]int{"self": self})
	for i := 0; i < 1e7; i++ { // well over one 10 ms clock tick of CPU
		_ = strings.Repeat("x", i%3)
	}
	if p := m.percent()["self"]; p <= 0 {
		t.Fatalf("CPU %v%%", p)
	}
}

func TestMakeMessages(t *testing.T) {
	cfg := PersistConfig{Records: 5000, Rooms: 100, ZipfS: 1.1, BodyBytes: 100}
	var rep PersistReport
	msgs := makeMessages(cfg, &rep)
	if len(msgs) != 5000 || rep.LargestRoom < 5000/100 {
		t.Fatalf("%d messages, largest room %d", len(msgs), rep.LargestRoom)
	}
	seqs := map[string]int64{}
	ids := map[string]bool{}
	for _, m := range msgs {
		if m.GetSeq() != seqs[m.GetRoomId()]+1 || ids[m.GetMessageId()] || len(m.GetBody()) != 100 || m.GetEpoch() == "" ||
			m.GetSenderId() == "" || m.GetClientMsgId() == "" || m.GetCreateTime() == nil {
			t.Fatalf("bad message %v", m)
		}
		seqs[m.GetRoomId()] = m.GetSeq()
		ids[m.GetMessageId()] = true
		// The record value round-trips as the persister decodes it.
		b, err := proto.Marshal(&eventsv1.MessageRecord{Message: m})
		if err != nil {
			t.Fatal(err)
		}
		var back eventsv1.MessageRecord
		if err := proto.Unmarshal(b, &back); err != nil || !proto.Equal(back.GetMessage(), m) {
			t.Fatalf("record does not round-trip: %v", err)
		}
	}
	if len(seqs) < 50 {
		t.Fatalf("only %d rooms used", len(seqs))
	}
}

func TestHistLatency(t *testing.T) {
	before := []bucket{{0.01, 10}, {0.1, 10}, {1, 10}, {math.Inf(1), 10}}
	// 100 new observations: 50 in (0, 10ms], 49 in (10ms, 100ms], 1 in (100ms, 1s].
	after := []bucket{{0.01, 60}, {0.1, 109}, {1, 110}, {math.Inf(1), 110}}
	l := histLatency(before, after)
	if l.Count != 100 || math.Abs(l.P50-10) > 1e-9 || l.P99 <= 10 || l.P99 > 100 || l.Max != 1000 {
		t.Fatalf("histLatency = %+v", l)
	}
	if l := histLatency(after, after); l.Count != 0 {
		t.Fatalf("no observations: %+v", l)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# TYPE x histogram
x_bucket{le="0.01"} 1
x_bucket{le="0.1"} 3
x_bucket{le="+Inf"} 4
x_sum 0.5
x_count 4
y_bucket{le="0.01"} 100
`)
	}))
	defer srv.Close()
	b, err := scrapeHistogram(t.Context(), srv.URL, "x")
	if err != nil || len(b) != 3 || b[0] != (bucket{0.01, 1}) || b[1] != (bucket{0.1, 3}) || !math.IsInf(b[2].le, 1) || b[2].count != 4 {
		t.Fatalf("scrapeHistogram = %v, %v", b, err)
	}
}
