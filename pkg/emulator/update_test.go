package emulator_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

func TestUpdateConfigRotatesAnAPIKey(t *testing.T) {
	env := emulatortest.Start(t)
	env.SetAccessTokenLifetime(3 * time.Second)
	old := env.APIKey()
	apikey := func(k string) url.Values {
		return url.Values{"grant_type": {grantAPIKey}, "apikey": {k}, "response_type": {"cloud_iam"}}
	}
	if status, _ := exchange(t, env.IAMURL, apikey(old)); status != http.StatusOK {
		t.Fatalf("old key before rotation: %d", status)
	}
	err := env.Emulator.UpdateConfig(func(c *config.Config) {
		c.APIKeys[0].Key = "rotated-key-value"
	})
	if err != nil {
		t.Fatal(err)
	}
	if status, tr := exchange(t, env.IAMURL, apikey(old)); status != http.StatusBadRequest || tr.ErrorCode != "BXNIM0415E" {
		t.Errorf("revoked key: %d %q, want 400 BXNIM0415E", status, tr.ErrorCode)
	}
	status, tr := exchange(t, env.IAMURL, apikey("rotated-key-value"))
	if status != http.StatusOK {
		t.Fatalf("new key: %d %q", status, tr.ErrorCode)
	}
	if tr.ExpiresIn != 3 {
		t.Errorf("the token lifetime set before the update was lost: expires_in %d", tr.ExpiresIn)
	}
	if code, body := cos(t, env, "GET", "/"+env.Bucket+"?list-type=2", tr.AccessToken, ""); code != http.StatusOK {
		t.Errorf("COS with the new key's token: %d %s", code, body)
	}
	if err := env.Emulator.UpdateConfig(func(c *config.Config) { c.APIKeys[0].ID = "" }); err == nil {
		t.Error("an invalid configuration was accepted")
	}
	if status, _ := exchange(t, env.IAMURL, apikey("rotated-key-value")); status != http.StatusOK {
		t.Errorf("a refused update changed the configuration: %d", status)
	}
}
