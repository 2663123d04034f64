package auth

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestTokenRoundTrip(t *testing.T) {
	iss, err := NewIssuer(testKey, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tok, exp := iss.Issue(Identity{UserID: "u1", Username: "ann"})
	if time.Until(exp) <= 0 {
		t.Fatal("expiry in the past")
	}
	id, err := iss.Verify(tok)
	if err != nil || id.UserID != "u1" || id.Username != "ann" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
}

func TestTokenRejects(t *testing.T) {
	iss, _ := NewIssuer(testKey, time.Minute)
	other, _ := NewIssuer([]byte("another-key-another-key-another-key"), time.Minute)
	good, _ := iss.Issue(Identity{UserID: "u1"})
	forged, _ := other.Issue(Identity{UserID: "u1"})
	p, _, _ := strings.Cut(good, ".")
	noneAlg := base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"alg":"none","sub":"u1","exp":9999999999}`))
	expiredIss, _ := NewIssuer(testKey, time.Minute)
	expiredIss.now = func() time.Time { return time.Now().Add(-time.Hour) }
	expired, _ := expiredIss.Issue(Identity{UserID: "u1"})
	for name, tok := range map[string]string{
		"empty":        "",
		"no signature": p,
		"forged":       forged,
		"tampered":     p + "x." + strings.SplitN(good, ".", 2)[1],
		"alg none":     noneAlg + "." + iss.sign(noneAlg)[:5],
		"expired":      expired,
	} {
		if _, err := iss.Verify(tok); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := iss.Verify(expired); err != ErrTokenExpired {
		t.Errorf("expired token: %v, want ErrTokenExpired", err)
	}
}

func TestIssuerNeedsLongKey(t *testing.T) {
	if _, err := NewIssuer([]byte("short"), time.Minute); err == nil {
		t.Fatal("accepted a 5-byte key")
	}
}

func TestPassword(t *testing.T) {
	p := Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}
	h, err := HashPassword(p, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q is not PHC argon2id", h)
	}
	if ok, err := CheckPassword(h, "correct horse"); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, _ := CheckPassword(h, "wrong horse"); ok {
		t.Fatal("wrong password accepted")
	}
	if _, err := CheckPassword("$bcrypt$x", "x"); err == nil {
		t.Fatal("malformed hash accepted")
	}
}

func FuzzVerify(f *testing.F) {
	iss, _ := NewIssuer(testKey, time.Minute)
	good, _ := iss.Issue(Identity{UserID: "u"})
	f.Add(good)
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := iss.Verify(tok)
		if err == nil && tok != good && id.UserID == "" {
			t.Fatalf("accepted %q without a subject", tok)
		}
	})
}
