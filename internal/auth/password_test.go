package auth

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestHashVerify(t *testing.T) {
	phc := regexp.MustCompile(`^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	h1, err := HashPassword("correct horse", fastHash.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if !phc.MatchString(h1) {
		t.Fatalf("hash %q is not in the PHC format", h1)
	}
	h2, err := HashPassword("correct horse", fastHash.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if h1 == h2 {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
	tests := []struct {
		password string
		want     bool
	}{
		{"correct horse", true},
		{"correct horsE", false},
		{"correct horse ", false},
		{"", false},
	}
	for _, tt := range tests {
		for _, h := range []string{h1, h2} {
			got, err := VerifyPassword(tt.password, h)
			if err != nil || got != tt.want {
				t.Errorf("VerifyPassword(%q) = %v, %v; want %v", tt.password, got, err, tt.want)
			}
		}
	}
}

func TestDefaultHashParams(t *testing.T) {
	p := DefaultHashParams()
	if p.Memory != 64*1024 || p.Time != 1 || p.Threads != 2 {
		t.Errorf("DefaultHashParams() = %+v, want m=65536 t=1 p=2", p)
	}
	if err := p.check(); err != nil {
		t.Error(err)
	}
	if _, err := HashPassword("x", HashParams{Memory: 1, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}); err == nil {
		t.Error("HashPassword with m=1 succeeded")
	}
}

func TestParsePHCBad(t *testing.T) {
	good, err := HashPassword("secret password", fastHash.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=..., salt, hash
	salt, key := parts[4], parts[5]
	tests := map[string]string{
		"empty":            "",
		"bcrypt":           "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"argon2i":          "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"argon2d":          "$argon2d$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"old version":      "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key,
		"no version":       "$argon2id$m=64,t=1,p=1$" + salt + "$" + key,
		"no leading $":     "argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"params reordered": "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + key,
		"param missing":    "$argon2id$v=19$m=64,t=1$" + salt + "$" + key,
		"extra param":      "$argon2id$v=19$m=64,t=1,p=1,k=2$" + salt + "$" + key,
		"negative":         "$argon2id$v=19$m=-64,t=1,p=1$" + salt + "$" + key,
		"plus sign":        "$argon2id$v=19$m=+64,t=1,p=1$" + salt + "$" + key,
		"not a number":     "$argon2id$v=19$m=sixty,t=1,p=1$" + salt + "$" + key,
		"zero time":        "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key,
		"zero threads":     "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key,
		"threads overflow": "$argon2id$v=19$m=64,t=1,p=256$" + salt + "$" + key,
		"memory too small": "$argon2id$v=19$m=7,t=1,p=1$" + salt + "$" + key,
		"memory huge":      "$argon2id$v=19$m=4294967295,t=1,p=1$" + salt + "$" + key,
		"time huge":        "$argon2id$v=19$m=64,t=100000,p=1$" + salt + "$" + key,
		"padded salt":      "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key,
		"bad salt":         "$argon2id$v=19$m=64,t=1,p=1$!!!!$" + key,
		"short salt":       "$argon2id$v=19$m=64,t=1,p=1$AAAA$" + key,
		"empty hash":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$",
		"short hash":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$AAAAAAAA",
		"trailing field":   good + "$x",
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			if _, _, _, err := parsePHC(s); err == nil {
				t.Errorf("parsePHC(%q) succeeded", s)
			}
			ok, err := VerifyPassword("secret password", s)
			if ok || err == nil {
				t.Errorf("VerifyPassword(%q) = %v, %v; want false and an error", s, ok, err)
			}
		})
	}
	if _, _, _, err := parsePHC(good); err != nil {
		t.Errorf("parsePHC(good): %v", err)
	}
}

func FuzzParsePHC(f *testing.F) {
	f.Add("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g")
	f.Add("$argon2id$v=19$m=65536,t=1,p=2$$")
	f.Add("$argon2i$v=19$m=64,t=1,p=1$a$b")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := parsePHC(s)
		if err != nil {
			return
		}
		// Whatever parses stays within the bounds verification can afford.
		if p.check() != nil || int(p.SaltLen) != len(salt) || int(p.KeyLen) != len(key) {
			t.Fatalf("parsePHC(%q) = %+v with salt %d and key %d bytes", s, p, len(salt), len(key))
		}
	})
}

func TestNeedsRehash(t *testing.T) {
	p := fastHash.withDefaults()
	h, err := HashPassword("some password", p)
	if err != nil {
		t.Fatal(err)
	}
	if needsRehash(h, p) {
		t.Error("a hash with the current parameters needs a rehash")
	}
	q := p
	q.Time = 2
	if !needsRehash(h, q) {
		t.Error("a hash with other parameters needs no rehash")
	}
	if !needsRehash("garbage", p) {
		t.Error("an unreadable hash needs no rehash")
	}
}

func TestCheckPassword(t *testing.T) {
	tests := []struct {
		password string
		ok       bool
	}{
		{"", false},
		{"short", false},
		{"1234567", false},
		{"12345678", true},
		{"ääääääää", true}, // eight characters, sixteen bytes
		{"äääääää", false},
		{"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", false},
		{strings.Repeat("x", MaxPasswordLen), true},
		{strings.Repeat("x", MaxPasswordLen+1), false},
	}
	for _, tt := range tests {
		err := CheckPassword(tt.password)
		if (err == nil) != tt.ok {
			t.Errorf("CheckPassword(%q) = %v, want ok %v", tt.password, err, tt.ok)
		}
		var ie *InputError
		if err != nil && (!errors.As(err, &ie) || ie.Field != "password" || !errors.Is(err, ErrInvalid)) {
			t.Errorf("CheckPassword(%q) = %#v, want an *InputError for password", tt.password, err)
		}
	}
}

func TestCheckUserName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"a", true},
		{"bob.smith", true},
		{"ci_bot-2", true},
		{"0day", true},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
		{"", false},
		{"Alice", false},
		{".hidden", false},
		{"-rf", false},
		{"a b", false},
		{"token:abc", false},
		{"system:cli", false},
		{"ålice", false},
		{"a/b", false},
		{"a\n", false},
	}
	for _, tt := range tests {
		err := CheckUserName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("CheckUserName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckUserName(%q) = %v, not ErrInvalid", tt.name, err)
		}
	}
}

// BenchmarkVerifyPassword measures a login's hash at the default cost; the
// target is under 100ms on two cores.
func BenchmarkVerifyPassword(b *testing.B) {
	h, err := HashPassword("correct horse battery", DefaultHashParams())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, err := VerifyPassword("correct horse battery", h); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
