package iamserver

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestConcurrentUse exchanges and verifies tokens while the configuration
// and the token lifetime change underneath; run it with -race.
func TestConcurrentUse(t *testing.T) {
	f := newFixture(t, baseConfig(t))
	cr := f.crToken(t, "team-a", "writer", "pod-1")
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				form := apiKeyForm
				if j%2 == 0 {
					form = crForm(cr, "Profile-link")
				}
				r := f.post(t, form)
				if r.status != http.StatusOK {
					errs <- string(r.body)
					return
				}
				if _, err := f.srv.VerifyAccessToken(r.json(t)["access_token"].(string)); err != nil {
					errs <- err.Error()
					return
				}
			}
		}()
	}
	for i := 0; i < 10; i++ {
		if err := f.srv.SetConfig(baseConfig(t)); err != nil {
			t.Fatal(err)
		}
		f.srv.SetAccessTokenLifetime(time.Duration(i+1) * time.Minute)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
