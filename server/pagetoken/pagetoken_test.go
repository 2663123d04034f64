package pagetoken

import (
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, tok := range []Token{{Query: "a"}, {Query: "room:1|fwd", After: "x", Seq: 42}} {
		got, err := Decode(Encode(tok), tok.Query)
		if err != nil || got != tok {
			t.Fatalf("round trip %+v: got %+v, %v", tok, got, err)
		}
	}
}

func TestRejects(t *testing.T) {
	good := Encode(Token{Query: "q1", Seq: 3})
	for name, tc := range map[string]struct{ tok, query string }{
		"other query": {good, "q2"},
		"not base64":  {"!!!", "q1"},
		"not json":    {"bm90IGpzb24", "q1"},
		"negative":    {Encode(Token{Query: "q1", Seq: -1}), "q1"},
	} {
		if _, err := Decode(tc.tok, tc.query); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPageSize(t *testing.T) {
	cases := []struct {
		in      int32
		want    int
		wantErr bool
	}{{0, 50, false}, {10, 10, false}, {100, 100, false}, {101, 0, true}, {-1, 0, true}}
	for _, c := range cases {
		got, err := PageSize(c.in, 50, 100)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("PageSize(%d) = %d, %v", c.in, got, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(Token{Query: "q", After: "k", Seq: 9}), "q")
	f.Add("", "q")
	f.Add("e30", "q")
	f.Fuzz(func(t *testing.T, s, q string) {
		tok, err := Decode(s, q)
		if err == nil && tok.Query != q {
			t.Fatalf("accepted a token for query %q as %q", tok.Query, q)
		}
	})
}
