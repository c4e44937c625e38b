//go:build !cluster

package cluster

import "testing"

// TestCluster only explains how to run the real suite, so that `go test ./...`
// stays fast and says why nothing ran here.
func TestCluster(t *testing.T) {
	t.Skip("the Kubernetes node suite needs the 'cluster' build tag, root and several minutes: run `make e2e-cluster`")
}
