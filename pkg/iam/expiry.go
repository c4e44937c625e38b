package iam

import "time"

// Expiry returns when the token the cache holds expires, without
// exchanging anything; the zero time when it holds none yet (or Close was
// called). For metrics: how long until the server would be without a
// usable token if refreshes kept failing.
func (c *CachingSource) Expiry() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.cur.AccessToken == "" {
		return time.Time{}
	}
	return c.cur.Expiry
}
