package secrets

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// cached is what a remote provider read for one key: a value, or that there
// was none.
type cached struct {
	value string
	found bool
}

// cache keeps what a remote provider read for a while, and makes concurrent
// reads of one key share one call. Errors are not kept. It is safe for
// concurrent use.
type cache struct {
	ttl time.Duration // <= 0: nothing is kept
	now func() time.Time

	mu      sync.Mutex
	entries map[string]cacheEntry

	calls singleflight.Group

	// waiting, when set, is called each time a get waits for a call (its
	// own or another's), for tests.
	waiting func()
}

type cacheEntry struct {
	cached
	expires time.Time
}

func newCache(ttl time.Duration, now func() time.Time) *cache {
	if now == nil {
		now = time.Now
	}
	return &cache{ttl: ttl, now: now, entries: map[string]cacheEntry{}}
}

// get returns what is kept for key, or what fetch reads, which it keeps. A
// caller whose ctx ends stops waiting at once. A caller that waited for
// another's call, which failed because that caller's context ended, calls
// again with its own context rather than fail for someone else.
func (c *cache) get(ctx context.Context, key string, fetch func(context.Context) (cached, error)) (cached, error) {
	if v, ok := c.kept(key); ok {
		return v, nil
	}
	for {
		led := false
		ch := c.calls.DoChan(key, func() (any, error) {
			led = true
			// A call that ended just before this one began may have kept it.
			if v, ok := c.kept(key); ok {
				return v, nil
			}
			v, err := fetch(ctx)
			if err == nil {
				c.keep(key, v)
			}
			return v, err
		})
		if c.waiting != nil {
			c.waiting()
		}
		select {
		case <-ctx.Done():
			return cached{}, ctx.Err()
		case r := <-ch:
			if r.Err == nil {
				return r.Val.(cached), nil
			}
			if !led && ctx.Err() == nil && (errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, context.DeadlineExceeded)) {
				continue
			}
			return cached{}, r.Err
		}
	}
}

func (c *cache) kept(key string) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !c.now().Before(e.expires) {
		return cached{}, false
	}
	return e.cached, true
}

func (c *cache) keep(key string, v cached) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	// Drop expired entries, so that names no longer used do not pile up. A
	// provider holds few names, so a pass over all of them is cheap.
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	c.entries[key] = cacheEntry{cached: v, expires: now.Add(c.ttl)}
}
