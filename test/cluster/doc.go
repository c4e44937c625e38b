// Package cluster is cosmount's end-to-end suite on a real Kubernetes node:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
// containerd run on 127.0.0.1 in a throwaway directory, the plugin runs as
// pods from deploy/kubernetes, and the emulator stands in for IBM IAM and COS
// on the host, trusting the real API server's service-account issuer.
//
// Everything but this comment and the skip test is behind the "cluster"
// build tag: run it with `make e2e-cluster` (root, Debian, a few GB of disk
// and about ten minutes cold). See README.md next to this file.
package cluster
