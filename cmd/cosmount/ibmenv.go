package main

import (
	"os"
	"strings"
)

// envIBMCloudAPIKey is the API key variable of IBM's own tools (the ibmcloud
// CLI, Terraform's provider); COSMOUNT_API_KEY wins when both are set.
const envIBMCloudAPIKey = "IBMCLOUD_API_KEY"

// defaultCRTokenFiles are where IBM's SDKs look for a compute-resource token
// when none is named, in their order: the projected service-account token
// IKS and ROKS documentation mounts as "vault-token", the newer "sa-token",
// and Code Engine's. The first one that can be read is used.
var defaultCRTokenFiles = []string{
	"/var/run/secrets/tokens/vault-token",
	"/var/run/secrets/tokens/sa-token",
	"/var/run/secrets/codeengine.cloud.ibm.com/compute-resource-token/token",
}

// defaultCRTokenFile returns the first readable file of files, or "".
func defaultCRTokenFile(files []string) string {
	for _, f := range files {
		if fh, err := os.Open(f); err == nil {
			fh.Close()
			return f
		}
	}
	return ""
}

// apiKeyFromEnv returns the API key from the environment and the variable
// it came from; empty when neither variable is set.
func apiKeyFromEnv() (key, variable string) {
	for _, v := range []string{envAPIKey, envIBMCloudAPIKey} {
		if k := strings.TrimSpace(os.Getenv(v)); k != "" {
			return k, v
		}
	}
	return "", ""
}
