package server

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/server/chat"
)

func TestValidateNamesTheBadField(t *testing.T) {
	base := func(t *testing.T) *Config {
		t.Helper()
		var c Config
		fs := flag.NewFlagSet("server", flag.ContinueOnError)
		c.Flags(fs)
		if err := fs.Parse([]string{"-token-key", strings.Repeat("k", 32)}); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("defaults: %v", err)
		}
		return &c
	}
	for _, tc := range []struct {
		field string
		bad   func(*Config)
	}{
		{"token-key", func(c *Config) { c.TokenKey = "short" }},
		{"produce-linger", func(c *Config) { c.ProduceLinger = -time.Millisecond }},
		{"redis-flush-delay", func(c *Config) { c.RedisFlushDelay = -time.Microsecond }},
		{"redis-flush-delay", func(c *Config) { c.RedisFlushDelay = time.Second }},
		{"send-timeout", func(c *Config) { c.SendTimeout = time.Millisecond }},
		// Half a MiB keeps a margin below the 1 MB Kafka record.
		{"max message bytes", func(c *Config) { c.Chat.MaxMessageBytes = chat.MaxBodyLimit + 1 }},
	} {
		c := base(t)
		tc.bad(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want an error naming it", tc.field, err)
		}
	}
}
