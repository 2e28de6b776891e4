package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password rules.
const (
	// MinPasswordLen is the fewest characters a password may have.
	MinPasswordLen = 8
	// MaxPasswordLen is the most bytes a password may have.
	MaxPasswordLen = 1024
	// MaxNameLen is the most characters a user name may have.
	MaxNameLen = 64
)

// HashParams is the cost of an argon2id password hash.
type HashParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// DefaultHashParams returns the cost of new hashes: 64 MiB, one pass, two
// threads, a 16-byte salt and a 32-byte key; about 50ms on two cores.
func DefaultHashParams() HashParams {
	return HashParams{Memory: 64 * 1024, Time: 1, Threads: 2, SaltLen: 16, KeyLen: 32}
}

func (p HashParams) withDefaults() HashParams {
	d := DefaultHashParams()
	if p.Memory == 0 {
		p.Memory = d.Memory
	}
	if p.Time == 0 {
		p.Time = d.Time
	}
	if p.Threads == 0 {
		p.Threads = d.Threads
	}
	if p.SaltLen == 0 {
		p.SaltLen = d.SaltLen
	}
	if p.KeyLen == 0 {
		p.KeyLen = d.KeyLen
	}
	return p
}

// Bounds on the parameters of a hash, so a corrupt or hostile stored hash
// cannot make verification take all memory or time.
const (
	maxMemory  = 4 << 20 // KiB: 4 GiB
	maxTime    = 64
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 128
)

func (p HashParams) check() error {
	switch {
	case p.Threads == 0:
		return errors.New("p must be at least 1")
	case p.Time == 0 || p.Time > maxTime:
		return fmt.Errorf("t must be from 1 to %d", maxTime)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory:
		return fmt.Errorf("m must be from 8*p to %d KiB", maxMemory)
	case p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("salt must be %d to %d bytes", minSaltLen, maxSaltLen)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("hash must be %d to %d bytes", minKeyLen, maxKeyLen)
	}
	return nil
}

// HashPassword returns the argon2id hash of password with a random salt, in
// the PHC string format:
//
//	$argon2id$v=19$m=65536,t=1,p=2$<salt>$<hash>
//
// with salt and hash in unpadded standard base64. It checks the parameters,
// not the password (see CheckPassword).
func HashPassword(password string, p HashParams) (string, error) {
	if err := p.check(); err != nil {
		return "", fmt.Errorf("hash password: bad parameters: %w", err)
	}
	salt := make([]byte, p.SaltLen)
	rand.Read(salt) // never fails (crypto/rand)
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches the PHC string hash,
// comparing in constant time. It returns an error when hash is not a valid
// argon2id PHC string.
func VerifyPassword(password, hash string) (bool, error) {
	p, salt, key, err := parsePHC(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// parsePHC parses an argon2id PHC string.
func parsePHC(s string) (HashParams, []byte, []byte, error) {
	bad := func(why string) (HashParams, []byte, []byte, error) {
		return HashParams{}, nil, nil, fmt.Errorf("parse password hash: %s", why)
	}
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return bad("want $argon2id$v=19$m=M,t=T,p=P$SALT$HASH")
	}
	if parts[1] != "argon2id" {
		return bad(fmt.Sprintf("algorithm %q is not argon2id", parts[1]))
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad(fmt.Sprintf("version %q is not v=%d", parts[2], argon2.Version))
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return bad("want parameters m=M,t=T,p=P")
	}
	var p HashParams
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(kv[i], name+"=")
		if !ok {
			return bad(fmt.Sprintf("parameter %d is %q, want %s=N", i+1, kv[i], name))
		}
		bits := 32
		if name == "p" {
			bits = 8
		}
		// ParseUint accepts no sign, space or "+"; a leading zero is harmless.
		n, err := strconv.ParseUint(v, 10, bits)
		if err != nil {
			return bad(fmt.Sprintf("parameter %s=%q is not a number", name, v))
		}
		switch name {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			p.Threads = uint8(n)
		}
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(parts[4])
	if err != nil {
		return bad("salt is not unpadded base64")
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err != nil {
		return bad("hash is not unpadded base64")
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	if err := p.check(); err != nil {
		return bad(err.Error())
	}
	return p, salt, key, nil
}

// needsRehash reports whether a stored hash was made with parameters other
// than p, so a successful login should replace it.
func needsRehash(hash string, p HashParams) bool {
	got, _, _, err := parsePHC(hash)
	return err != nil || got.Memory != p.Memory || got.Time != p.Time || got.Threads != p.Threads ||
		got.KeyLen != p.KeyLen || got.SaltLen != p.SaltLen
}

// CheckPassword returns an *InputError when password may not be used: empty,
// shorter than MinPasswordLen characters, longer than MaxPasswordLen bytes,
// or not UTF-8.
func CheckPassword(password string) error {
	bad := func(msg string) error { return &InputError{Field: "password", Message: msg} }
	switch n := utf8.RuneCountInString(password); {
	case password == "":
		return bad("password is empty: choose one of at least 8 characters")
	case !utf8.ValidString(password):
		return bad("password is not valid UTF-8")
	case n < MinPasswordLen:
		return bad(fmt.Sprintf("password is too short: %d characters, need at least %d", n, MinPasswordLen))
	case len(password) > MaxPasswordLen:
		return bad(fmt.Sprintf("password is too long: %d bytes, at most %d", len(password), MaxPasswordLen))
	}
	return nil
}

// CheckUserName returns an *InputError unless name is 1 to MaxNameLen
// characters of lower-case letters a-z, digits, '.', '_' and '-', starting
// with a letter or digit.
func CheckUserName(name string) error {
	bad := func(msg string) error { return &InputError{Field: "name", Message: msg} }
	if name == "" {
		return bad("user name is empty")
	}
	if len(name) > MaxNameLen {
		return bad(fmt.Sprintf("user name is too long: %d characters, at most %d", len(name), MaxNameLen))
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return bad(fmt.Sprintf("user name %q: use lower-case letters a-z, digits, '.', '_' and '-', starting with a letter or digit", name))
		}
	}
	return nil
}

// hash hashes a password with the service's parameters, holding a hasher
// slot.
func (s *Service) hash(ctx context.Context, password string) (string, error) {
	if err := s.acquireHasher(ctx); err != nil {
		return "", err
	}
	defer s.releaseHasher()
	return HashPassword(password, s.cfg.Hash)
}

// verify checks a password against a hash, holding a hasher slot.
func (s *Service) verify(ctx context.Context, password, hash string) (bool, error) {
	if err := s.acquireHasher(ctx); err != nil {
		return false, err
	}
	defer s.releaseHasher()
	return VerifyPassword(password, hash)
}

// dummyHash returns a hash made with the service's parameters that no login
// matches: verifying against it costs what verifying a real user costs, so
// a login's time does not tell whether the user exists.
func (s *Service) dummyHash() string {
	s.dummyOnce.Do(func() {
		secret := make([]byte, 32)
		rand.Read(secret)
		h, err := HashPassword(base64.RawStdEncoding.EncodeToString(secret), s.cfg.Hash)
		if err != nil {
			// Bad parameters: every hash fails the same way, so logins fail
			// alike; fall back to a valid cheap hash.
			h, _ = HashPassword(string(secret), HashParams{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
		}
		s.dummy = h
	})
	return s.dummy
}

func (s *Service) acquireHasher(ctx context.Context) error {
	select {
	case s.hashers <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait to hash a password: %w", ctx.Err())
	}
}

func (s *Service) releaseHasher() { <-s.hashers }
