package config

import (
	"flag"
	"strings"
	"testing"
)

func TestParseEnvAndFlags(t *testing.T) {
	t.Setenv("PARLEY_KAFKA_BROKERS", "a:1,b:2")
	t.Setenv("PARLEY_ADDR", "from-env")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var brokers List
	fs.Var(&brokers, "kafka-brokers", "")
	addr := fs.String("addr", "default", "")
	if err := Parse(fs, []string{"-addr", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if *addr != "from-flag" {
		t.Errorf("flag must win over env, got %q", *addr)
	}
	if len(brokers) != 2 || brokers[1] != "b:2" {
		t.Errorf("brokers = %v", brokers)
	}
}

func TestParseBadEnv(t *testing.T) {
	t.Setenv("PARLEY_PORT", "not-a-number")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("port", 1, "")
	if err := Parse(fs, nil); err == nil {
		t.Fatal("want an error naming PARLEY_PORT")
	}
}

// FuzzList parses arbitrary comma-separated values (from flags and the
// environment): no panic, no empty or padded entries.
func FuzzList(f *testing.F) {
	f.Add("a:1,b:2")
	f.Add(" , ,x")
	f.Fuzz(func(t *testing.T, s string) {
		var l List
		if err := l.Set(s); err != nil {
			return
		}
		for _, e := range l {
			if e == "" || strings.TrimSpace(e) != e {
				t.Fatalf("entry %q from %q", e, s)
			}
		}
	})
}
