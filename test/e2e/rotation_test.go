package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator/audit"
	"github.com/cosmount/cosmount/pkg/emulator/config"
	"github.com/cosmount/cosmount/pkg/emulator/emulatortest"
)

// replaceSecret writes a secret file the way the node plugin does on
// republish: a new file renamed over the old one.
func replaceSecret(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// lastPutBy returns the principal of the last PUT of key.
func lastPutBy(entries []audit.Entry, key string) string {
	who := ""
	for _, e := range cosEntries(entries) {
		if e.Method == "PUT" && filepath.Base(e.Path) == key && e.Status == 200 {
			who = e.PrincipalID
		}
	}
	return who
}

// TestCredentialRotation: the node plugin replaces the API key file or the
// HMAC credentials file, and the old key is revoked right after. The
// server's next request uses the new key; writes keep working without a
// remount.
func TestCredentialRotation(t *testing.T) {
	policies := []config.Policy{{Role: config.RoleWriter}}
	tests := []struct {
		name   string
		flag   string
		first  string // file content of the first key
		second string
		// old, new: the principal ids of the two keys
		old, new string
		add      func(c *config.Config)
		revoke   func(c *config.Config)
	}{
		{
			name: "api key", flag: "--api-key-file", first: "first-api-key-0001\n", second: "second-api-key-0002\n",
			old: "ApiKey-rot1", new: "ApiKey-rot2",
			add: func(c *config.Config) {
				c.APIKeys = append(c.APIKeys, config.APIKey{ID: "ApiKey-rot2", Key: "second-api-key-0002", Policies: policies})
			},
			revoke: func(c *config.Config) {
				c.APIKeys = slices.DeleteFunc(c.APIKeys, func(k config.APIKey) bool { return k.ID == "ApiKey-rot1" })
			},
		},
		{
			name: "hmac", flag: "--hmac-credentials-file", first: "rot1-access-key:rot1-secret\n", second: "rot2-access-key:rot2-secret\n",
			old: "rot1-access-key", new: "rot2-access-key",
			add: func(c *config.Config) {
				c.HMACKeys = append(c.HMACKeys, config.HMACKey{AccessKeyID: "rot2-access-key", SecretAccessKey: "rot2-secret", ServiceInstance: emulatortest.ServiceInstanceID, Policies: policies})
			},
			revoke: func(c *config.Config) {
				c.HMACKeys = slices.DeleteFunc(c.HMACKeys, func(k config.HMACKey) bool { return k.AccessKeyID == "rot1-access-key" })
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireFUSE(t)
			env := emulatortest.Start(t, emulatortest.WithConfig(func(c *config.Config) {
				c.APIKeys = append(c.APIKeys, config.APIKey{ID: "ApiKey-rot1", Key: "first-api-key-0001", Policies: policies})
				c.HMACKeys = append(c.HMACKeys, config.HMACKey{AccessKeyID: "rot1-access-key", SecretAccessKey: "rot1-secret", ServiceInstance: emulatortest.ServiceInstanceID, Policies: policies})
			}))
			b := newAPI(t, env)
			secret := filepath.Join(t.TempDir(), "secret")
			replaceSecret(t, secret, tt.first)
			s, err := startServer(t, []string{"--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL, tt.flag, secret,
				"-o", "temp_dir=" + t.TempDir(), env.Bucket})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.path("before.txt"), []byte("before"), 0o644); err != nil {
				t.Fatal(err)
			}
			if who := lastPutBy(env.Audit(), "before.txt"); who != tt.old {
				t.Fatalf("before rotation the PUT was made by %q, want %q", who, tt.old)
			}

			// Rotate: new key created, file replaced, old key revoked.
			if err := env.Emulator.UpdateConfig(tt.add); err != nil {
				t.Fatal(err)
			}
			replaceSecret(t, secret, tt.second)
			if err := env.Emulator.UpdateConfig(tt.revoke); err != nil {
				t.Fatal(err)
			}
			for i, name := range []string{"after1.txt", "after2.txt"} {
				if err := os.WriteFile(s.path(name), []byte(name), 0o644); err != nil {
					t.Fatalf("write %d after rotation: %v\n%s", i, err, s.log())
				}
				b.wantObject(name, []byte(name))
				if who := lastPutBy(env.Audit(), name); who != tt.new {
					t.Errorf("after rotation %s was PUT by %q, want the new key %q", name, who, tt.new)
				}
			}
			if s.Exited() {
				t.Fatalf("the server exited: %v", s.Err())
			}
		})
	}
}

// TestMissingCredentialIsEIO: once the access token has expired and the
// token file is gone, IAM cannot be asked; the writer's close() gets EIO
// (not EACCES: nothing is wrong with its permissions) and the log says why.
// When the file is back, writes work again without a remount.
func TestMissingCredentialIsEIO(t *testing.T) {
	env := emulatortest.Start(t)
	env.SetAccessTokenLifetime(2 * time.Second)
	requireFUSE(t)
	tokenFile := env.WritePodToken(t, t.TempDir(), "default", "default", "e2e-pod", time.Hour)
	s, err := startServer(t, []string{"--endpoint", env.COSURL, "--iam-endpoint", env.IAMURL,
		"--trusted-profile-id", emulatortest.WriterProfileID, "--cr-token-file", tokenFile,
		"-o", "temp_dir=" + t.TempDir(), env.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // past the lifetime of every token the server holds

	f, err := os.Create(s.path("no-credential.txt"))
	if err == nil {
		_, _ = f.Write([]byte("x"))
		err = f.Close()
	}
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("write without a credential: %v, want EIO", err)
	}
	waitForLog(t, s, "compute-resource token", "no such file")

	replaceSecret(t, tokenFile, string(saved))
	if err := os.WriteFile(s.path("back.txt"), []byte("back"), 0o644); err != nil {
		t.Fatalf("write after the token file is back: %v", err)
	}
	newAPI(t, env).wantObject("back.txt", []byte("back"))
}
