package main

import (
	"fmt"
	"testing"
)

func TestPositiveInts(t *testing.T) {
	got, err := positiveInts("rates", "1000, 2000,5000")
	if err != nil || fmt.Sprint(got) != "[1000 2000 5000]" {
		t.Fatalf("positiveInts = %v, %v", got, err)
	}
	for _, bad := range []string{"", "1,0", "1,x", "-3"} {
		if _, err := positiveInts("rates", bad); err == nil {
			t.Errorf("positiveInts(%q) accepted", bad)
		}
	}
	if _, err := parsePids("server=1,redis"); err == nil {
		t.Error("parsePids accepted a name without pid")
	}
}
