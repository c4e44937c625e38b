package iamserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

func TestTokenErrors(t *testing.T) {
	f := newFixture(t, baseConfig(t))
	good := func() string { return f.crToken(t, "team-a", "writer", "pod-1") }
	forged := func() string {
		// Signed by another key but claiming the issuer key's kid.
		k := *otherKey
		k.KID = issuerKey.KID
		raw, err := k.Mint(satoken.Claims{Issuer: testIssuer, Audience: []string{"iam"}, Namespace: "team-a",
			ServiceAccount: "writer", IssuedAt: f.clock.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	withKey := func(k *satoken.Key, c satoken.Claims) string {
		raw, err := k.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	tests := []struct {
		name        string
		method      string
		form        url.Values
		wantStatus  int
		wantCode    string
		wantMessage string
		wantDetails string // substring
	}{
		{name: "GET", method: http.MethodGet, wantStatus: 405, wantCode: "BXNIM0060E", wantMessage: "HTTP 405 Method Not Allowed"},
		{name: "PUT", method: http.MethodPut, wantStatus: 405, wantCode: "BXNIM0060E", wantMessage: "HTTP 405 Method Not Allowed"},
		{name: "missing grant_type", form: url.Values{"apikey": {"x"}}, wantStatus: 400, wantCode: "BXNIM0109E", wantMessage: "Property missing or empty.", wantDetails: "grant_type"},
		{name: "unsupported grant", form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, wantStatus: 400, wantCode: CodeUnsupportedGrant},
		{name: "missing apikey", form: url.Values{"grant_type": {GrantAPIKey}}, wantStatus: 400, wantCode: "BXNIM0109E", wantDetails: "apikey"},
		{name: "unknown apikey", form: url.Values{"grant_type": {GrantAPIKey}, "apikey": {"secret-api-key-2"}}, wantStatus: 400, wantCode: "BXNIM0415E", wantMessage: "Provided API key could not be found."},
		{name: "missing cr_token", form: url.Values{"grant_type": {GrantCRToken}, "profile_id": {"Profile-link"}}, wantStatus: 400, wantCode: "BXNIM0109E", wantDetails: "cr_token"},
		{name: "missing profile", form: url.Values{"grant_type": {GrantCRToken}, "cr_token": {"x.y.z"}}, wantStatus: 400, wantCode: "BXNIM0109E", wantDetails: "profile_id"},
		{name: "malformed token", form: crForm("not-a-jwt", "Profile-link"), wantStatus: 400, wantCode: "BXNIM0407E", wantDetails: "well-formed"},
		{name: "expired token", form: crForm(f.crToken(t, "team-a", "writer", "p", func(c *satoken.Claims) {
			c.IssuedAt = f.clock.Now().Add(-2 * time.Hour)
		}), "Profile-link"), wantStatus: 400, wantCode: "BXNIM0407E", wantDetails: "expired"},
		{name: "not yet valid", form: crForm(f.crToken(t, "team-a", "writer", "p", func(c *satoken.Claims) {
			c.NotBeforeOffset = 10 * time.Minute
		}), "Profile-link"), wantStatus: 400, wantCode: "BXNIM0407E", wantDetails: "not valid yet"},
		{name: "wrong audience", form: crForm(f.crToken(t, "team-a", "writer", "p", func(c *satoken.Claims) {
			c.Audience = []string{"https://kubernetes.default.svc", "vault"}
		}), "Profile-link"), wantStatus: 400, wantCode: "BXNIM0407E", wantDetails: "audience"},
		{name: "lifetime over 3600s", form: crForm(f.crToken(t, "team-a", "writer", "p", func(c *satoken.Claims) {
			c.Lifetime = 3601 * time.Second
		}), "Profile-link"), wantStatus: 400, wantCode: "BXNIM0407E", wantDetails: "lifetime of 3601s exceeds the maximum of 3600s"},
		{name: "wrong issuer", form: crForm(f.crToken(t, "team-a", "writer", "p", func(c *satoken.Claims) {
			c.Issuer = "https://other-cluster.example"
		}), "Profile-link"), wantStatus: 400, wantCode: "BXNIM0407E", wantDetails: "issuer is not trusted"},
		{name: "bad signature", form: crForm(forged(), "Profile-link"), wantStatus: 400, wantCode: "BXNIM0407E", wantDetails: "signature is invalid"},
		{name: "unknown kid", form: crForm(withKey(otherKey, satoken.Claims{Issuer: testIssuer, Audience: []string{"iam"},
			Namespace: "team-a", ServiceAccount: "writer", IssuedAt: f.clock.Now()}), "Profile-link"),
			wantStatus: 400, wantCode: "BXNIM0407E", wantDetails: "No signing key"},
		{name: "unknown profile id", form: crForm(good(), "Profile-nope"), wantStatus: 400, wantCode: CodeUnknownProfile, wantMessage: "Provided profile could not be found."},
		{name: "unknown profile name", form: url.Values{"grant_type": {GrantCRToken}, "cr_token": {good()}, "profile_name": {"nope"}}, wantStatus: 400, wantCode: CodeUnknownProfile},
		{name: "id and name of different profiles", form: url.Values{"grant_type": {GrantCRToken}, "cr_token": {good()},
			"profile_id": {"Profile-link"}, "profile_name": {"crn-profile"}}, wantStatus: 400, wantCode: CodeUnknownProfile},
		{name: "not eligible: service account", form: crForm(f.crToken(t, "team-a", "reader", "pod-7"), "Profile-link"),
			wantStatus: 400, wantCode: "BXNIM0398E", wantMessage: "Selected trusted profile not eligible.", wantDetails: "'c1abc2def:team-a:reader:pod-7'"},
		{name: "not eligible: namespace", form: crForm(f.crToken(t, "team-b", "writer", "pod-8"), "Profile-link"),
			wantStatus: 400, wantCode: "BXNIM0398E", wantDetails: "c1abc2def:team-b:writer:pod-8"},
		{name: "not eligible: token without pod", form: crForm(f.crToken(t, "team-x", "writer", ""), "Profile-crn"),
			wantStatus: 400, wantCode: "BXNIM0398E", wantDetails: "c1abc2def:team-x:writer:"},
	}
	idPattern := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequest(method, f.ts.URL+TokenPath, strings.NewReader(tt.form.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("User-Agent", "iamserver-test/1.0")
			r := do(t, req)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", r.status, tt.wantStatus, r.body)
			}
			var body errorBody
			dec := json.NewDecoder(bytes.NewReader(r.body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("envelope %s: %v", r.body, err)
			}
			if body.ErrorCode != tt.wantCode {
				t.Errorf("errorCode = %q, want %q", body.ErrorCode, tt.wantCode)
			}
			if !strings.Contains(body.ErrorMessage, tt.wantMessage) || body.ErrorMessage == "" {
				t.Errorf("errorMessage = %q, want it to contain %q", body.ErrorMessage, tt.wantMessage)
			}
			if !strings.Contains(body.ErrorDetails, tt.wantDetails) {
				t.Errorf("errorDetails = %q, want it to contain %q", body.ErrorDetails, tt.wantDetails)
			}
			ctx := body.Context
			if !idPattern.MatchString(ctx.RequestID) || r.header.Get("transaction-id") != ctx.RequestID {
				t.Errorf("requestId %q, transaction-id %q", ctx.RequestID, r.header.Get("transaction-id"))
			}
			if got := r.header.Get("ibm-cloud-service-name"); got != "iam-identity" {
				t.Errorf("ibm-cloud-service-name = %q", got)
			}
			if got := r.header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			want := errorContext{
				RequestID: ctx.RequestID, RequestType: "incoming.Identity_Token", UserAgent: "iamserver-test/1.0",
				URL: f.ts.URL, InstanceID: f.srv.instanceID, ThreadID: ctx.ThreadID, Host: "iam-test-host",
				StartTime: "04.03.2026 05:06:07:250 UTC", EndTime: "04.03.2026 05:06:07:250 UTC", ElapsedTime: "0",
				Locale: "en_US", ClusterName: "cosmount-emulator",
			}
			if ctx != want || ctx.ThreadID == "" {
				t.Errorf("context =\n%+v\nwant\n%+v", ctx, want)
			}
			// The envelope never echoes the credentials it was given.
			for _, v := range tt.form {
				for _, s := range v {
					if len(s) > 20 && bytes.Contains(r.body, []byte(s)) {
						t.Errorf("response echoes a credential")
					}
				}
			}
		})
	}
}

func TestTokenSuccess(t *testing.T) {
	f := newFixture(t, baseConfig(t))
	// An ES256 token with several audiences, as some issuers sign.
	ecToken, err := ecKey.Mint(satoken.Claims{Issuer: testIssuer, Audience: []string{"other", "iam"}, Namespace: "team-a",
		ServiceAccount: "writer", IssuedAt: f.clock.Now(), Lifetime: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		form      url.Values
		basic     []string
		wantID    string
		wantType  config.PrincipalType
		wantRoles []config.Role
	}{
		{name: "profile by id, no basic auth", form: crForm(f.crToken(t, "team-a", "writer", "pod-1"), "Profile-link"),
			wantID: "Profile-link", wantType: config.PrincipalProfile, wantRoles: []config.Role{config.RoleWriter}},
		{name: "profile by name, bx:bx", basic: []string{"bx", "bx"},
			form:   url.Values{"grant_type": {GrantCRToken}, "cr_token": {f.crToken(t, "team-a", "writer", "pod-1")}, "profile_name": {"link-profile"}},
			wantID: "Profile-link", wantType: config.PrincipalProfile, wantRoles: []config.Role{config.RoleWriter}},
		{name: "profile by crn via cluster-CRN link, client credentials", basic: []string{"my-client", "my-secret"},
			form: url.Values{"grant_type": {GrantCRToken}, "cr_token": {f.crToken(t, "team-b", "app", "")},
				"profile_crn": {"crn:v1:bluemix:public:iam-identity::a/acct1::profile:Profile-crn"}},
			wantID: "Profile-crn", wantType: config.PrincipalProfile},
		{name: "id and name of the same profile, token with trailing newline, scope",
			form: url.Values{"grant_type": {GrantCRToken}, "cr_token": {f.crToken(t, "team-a", "writer", "pod-1") + "\n"},
				"profile_id": {"Profile-link"}, "profile_name": {"link-profile"}, "scope": {"ibm openid"}},
			wantID: "Profile-link", wantType: config.PrincipalProfile, wantRoles: []config.Role{config.RoleWriter}},
		{name: "ES256 service-account token", form: crForm(ecToken, "Profile-link"),
			wantID: "Profile-link", wantType: config.PrincipalProfile, wantRoles: []config.Role{config.RoleWriter}},
		{name: "apikey", form: url.Values{"grant_type": {GrantAPIKey}, "apikey": {"secret-api-key-1"}, "response_type": {"cloud_iam"}},
			wantID: "ApiKey-1", wantType: config.PrincipalAPIKey, wantRoles: []config.Role{config.RoleReader}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.post(t, tt.form, tt.basic...)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			assertTokenBody(t, r, f.clock.Now(), time.Hour)
			p, err := f.srv.VerifyAccessToken(r.json(t)["access_token"].(string))
			if err != nil {
				t.Fatalf("VerifyAccessToken: %v", err)
			}
			var roles []config.Role
			for _, pol := range p.Policies {
				roles = append(roles, pol.Role)
			}
			if p.ID != tt.wantID || p.Type != tt.wantType || !reflect.DeepEqual(roles, tt.wantRoles) {
				t.Errorf("principal = %+v", p)
			}
		})
	}
}

// assertTokenBody checks IAM's exact 200 body.
func assertTokenBody(t *testing.T, r reply, now time.Time, lifetime time.Duration) {
	t.Helper()
	if r.header.Get("transaction-id") == "" || r.header.Get("ibm-cloud-service-name") != "iam-identity" ||
		r.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers = %v", r.header)
	}
	// Keys, in IBM's order.
	dec := json.NewDecoder(bytes.NewReader(r.body))
	var keys []string
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	wantKeys := []string{"access_token", "refresh_token", "ims_user_id", "token_type", "expires_in", "expiration", "scope"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("keys = %v, want %v", keys, wantKeys)
	}
	m := r.json(t)
	secs := float64((lifetime + time.Second - 1) / time.Second)
	exp := now.Add(lifetime)
	wantExp := float64(exp.Unix())
	if exp.Nanosecond() != 0 {
		wantExp++
	}
	if m["refresh_token"] != "not_supported" || m["token_type"] != "Bearer" || m["scope"] != "ibm openid" ||
		m["expires_in"] != secs || m["expiration"] != wantExp {
		t.Errorf("body = %v (want expires_in %v, expiration %v)", m, secs, wantExp)
	}
	if id, ok := m["ims_user_id"].(float64); !ok || id <= 0 || id != float64(int64(id)) {
		t.Errorf("ims_user_id = %v", m["ims_user_id"])
	}
	if tok, _ := m["access_token"].(string); strings.Count(tok, ".") != 2 {
		t.Errorf("access_token is not a JWT")
	}
}

func TestRuleOperators(t *testing.T) {
	// The token: cluster c1abc2def, namespace team-a, service account writer,
	// pod web-5f7, resource group rg-0123 "Default", location us-south.
	tests := []struct {
		name  string
		conds []config.Condition
		want  bool
	}{
		{"EQUALS namespace", []config.Condition{cond("namespace", "EQUALS", "team-a")}, true},
		{"EQUALS namespace miss", []config.Condition{cond("namespace", "EQUALS", "Team-A")}, false},
		{"NOT_EQUALS name", []config.Condition{cond("name", "NOT_EQUALS", "reader")}, true},
		{"NOT_EQUALS name miss", []config.Condition{cond("name", "NOT_EQUALS", "writer")}, false},
		{"EQUALS_IGNORE_CASE service_instance", []config.Condition{cond("service_instance", "EQUALS_IGNORE_CASE", "C1ABC2DEF")}, true},
		{"EQUALS_IGNORE_CASE miss", []config.Condition{cond("service_instance", "EQUALS_IGNORE_CASE", "c1abc")}, false},
		{"NOT_EQUALS_IGNORE_CASE resource_group_name", []config.Condition{cond("resource_group_name", "NOT_EQUALS_IGNORE_CASE", "prod")}, true},
		{"NOT_EQUALS_IGNORE_CASE miss", []config.Condition{cond("resource_group_name", "NOT_EQUALS_IGNORE_CASE", "DEFAULT")}, false},
		{"CONTAINS pod", []config.Condition{cond("pod", "CONTAINS", "web-")}, true},
		{"CONTAINS miss", []config.Condition{cond("pod", "CONTAINS", "db-")}, false},
		{"IN location", []config.Condition{cond("location", "IN", "eu-de, us-south")}, true},
		{"IN miss", []config.Condition{cond("location", "IN", "eu-de,us-east")}, false},
		{"EQUALS resource_group_id", []config.Condition{cond("resource_group_id", "EQUALS", "rg-0123")}, true},
		{"all conditions must hold", []config.Condition{cond("namespace", "EQUALS", "team-a"), cond("name", "EQUALS", "reader")}, false},
		{"several conditions hold", []config.Condition{cond("namespace", "EQUALS", "team-a"), cond("name", "IN", "reader,writer")}, true},
	}
	f := newFixture(t, baseConfig(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Profiles = append(cfg.Profiles, config.Profile{ID: "Profile-rule", Name: "rule-profile",
				Rules: []config.Rule{{Name: "r", Conditions: tt.conds}}})
			if err := f.srv.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
			r := f.post(t, crForm(f.crToken(t, "team-a", "writer", "web-5f7"), "Profile-rule"))
			if got := r.status == http.StatusOK; got != tt.want {
				t.Fatalf("granted = %v, want %v: %s", got, tt.want, r.body)
			}
			if !tt.want && r.json(t)["errorCode"] != "BXNIM0398E" {
				t.Errorf("body = %s", r.body)
			}
		})
	}
}

func TestConfigRejectsBadTrust(t *testing.T) {
	testKeys(t)
	tests := []struct {
		name string
		edit func(*config.Config)
	}{
		{"unknown operator", func(c *config.Config) {
			c.Profiles[0].Rules = []config.Rule{{Conditions: []config.Condition{cond("namespace", "LIKE", "x")}}}
		}},
		{"unknown claim", func(c *config.Config) {
			c.Profiles[0].Rules = []config.Rule{{Conditions: []config.Condition{cond("cluster", "EQUALS", "x")}}}
		}},
		{"empty rule", func(c *config.Config) { c.Profiles[0].Rules = []config.Rule{{Name: "all"}} }},
		{"bad crType", func(c *config.Config) { c.Profiles[0].Links[0].CRType = "VSI" }},
		{"link without namespace", func(c *config.Config) { c.Profiles[0].Links[0].Namespace = "" }},
		{"duplicate issuer", func(c *config.Config) { c.Issuers = append(c.Issuers, c.Issuers[0]) }},
		{"invalid config", func(c *config.Config) { c.Issuers[0].Issuer = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(t)
			tt.edit(cfg)
			if _, err := New(cfg, Options{SigningKey: accessKey}); err == nil {
				t.Error("New accepted the config")
			}
		})
	}
}

func TestAuditRecord(t *testing.T) {
	f := newFixture(t, baseConfig(t))
	log := audit.NewLog(nil, 100)
	ts := httptestServer(t, log.Middleware("iam", f.srv))
	for _, form := range []url.Values{
		{"grant_type": {GrantAPIKey}, "apikey": {"secret-api-key-1"}},
		{"grant_type": {GrantAPIKey}, "apikey": {"wrong"}},
	} {
		req, _ := http.NewRequest(http.MethodPost, ts+TokenPath, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		do(t, req)
	}
	e := log.Entries()
	if len(e) != 2 {
		t.Fatalf("entries = %+v", e)
	}
	if e[0].Operation != "Token" || e[0].PrincipalType != "apikey" || e[0].PrincipalID != "ApiKey-1" || e[0].Status != 200 || e[0].RequestID == "" {
		t.Errorf("granted entry = %+v", e[0])
	}
	if e[1].ErrorCode != "BXNIM0415E" || e[1].Status != 400 || e[1].PrincipalID != "" {
		t.Errorf("refused entry = %+v", e[1])
	}
}

func cond(claim, op, value string) config.Condition {
	return config.Condition{Claim: claim, Operator: op, Value: value}
}
