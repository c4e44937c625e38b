package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cosmount/cosmount/pkg/emulator"
	"github.com/cosmount/cosmount/pkg/emulator/satoken"
)

const mintDoc = `Mints a Kubernetes projected service-account token, as kubelet hands to the
CSI driver: claims iss, sub (system:serviceaccount:NS:SA), aud, exp, iat, nbf,
jti and kubernetes.io {namespace, serviceaccount, pod}. The key comes from
--issuer-key (a PEM file, e.g. from gen-issuer-key) or from the data directory
of an emulator running the default configuration (--data-dir), whose IAM then
accepts the token for the trusted profiles that trust NS and SA of cluster
test-cluster. The token is written to --out (mode 0600) or to stdout.
`

func runMintToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("mint-token", mintDoc, stderr)
	keyFile := fs.String("issuer-key", "", "issuer private key (PEM)")
	dataDir := fs.String("data-dir", "", "use the built-in issuer key of the emulator data directory instead of --issuer-key")
	issuer := fs.String("issuer", emulator.DefaultIssuer, `"iss" claim`)
	namespace := fs.String("namespace", "default", "pod namespace")
	sa := fs.String("service-account", "default", "service account name")
	pod := fs.String("pod", "", "pod name (optional; binds the token to a pod)")
	audience := fs.String("audience", "iam", "comma-separated audiences")
	lifetime := fs.Duration("lifetime", time.Hour, "token lifetime (IBM IAM accepts at most 1h)")
	out := fs.String("out", "", "write the token to this file (mode 0600) instead of stdout")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*keyFile == "") == (*dataDir == "") {
		return usagef("give exactly one of --issuer-key and --data-dir")
	}
	if *lifetime <= 0 {
		return usagef("--lifetime %s: must be positive", *lifetime)
	}
	var auds []string
	for a := range strings.SplitSeq(*audience, ",") {
		if a = strings.TrimSpace(a); a != "" {
			auds = append(auds, a)
		}
	}
	if len(auds) == 0 {
		return usagef("--audience: at least one audience is required")
	}
	if *dataDir != "" {
		*keyFile = emulator.IssuerKeyFile(*dataDir)
	}
	key, err := satoken.Load(*keyFile)
	if err != nil {
		return err
	}
	tok, err := key.Mint(satoken.Claims{
		Issuer:            *issuer,
		Audience:          auds,
		Namespace:         *namespace,
		ServiceAccount:    *sa,
		ServiceAccountUID: newUID(),
		Pod:               *pod,
		PodUID:            podUID(*pod),
		Lifetime:          *lifetime,
	})
	if err != nil {
		return err
	}
	if *out == "" {
		_, err := fmt.Fprintln(stdout, tok)
		return err
	}
	return writeSecretFile(*out, tok)
}

func podUID(pod string) string {
	if pod == "" {
		return ""
	}
	return newUID()
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// writeSecretFile replaces path atomically by a file of mode 0600, so a
// reader (a mounted filesystem re-reading its token) never sees it half written.
func writeSecretFile(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

const genKeyDoc = `Generates an RSA 2048 service-account issuer key: DIR/key.pem (private, mode
0600) and DIR/jwks.json (public), replacing existing ones. Point an issuer's
jwksFile at jwks.json and mint tokens with mint-token --issuer-key DIR/key.pem.
`

func runGenIssuerKey(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gen-issuer-key", genKeyDoc, stderr)
	outDir := fs.String("out-dir", "", "directory to write key.pem and jwks.json into (created if missing; required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *outDir == "" {
		return usagef("--out-dir is required")
	}
	k, err := emulator.WriteIssuerKey(*outDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s (kid %s)\n", filepath.Join(*outDir, emulator.KeyFileName), filepath.Join(*outDir, emulator.JWKSFileName), k.KID)
	return nil
}

const printConfigDoc = `Prints the embedded default configuration, a starting point for --config.
${DATA_DIR} in it stands for serve's --data-dir.
`

func runPrintConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("print-config", printConfigDoc, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, err := stdout.Write(emulator.DefaultConfigYAML())
	return err
}
