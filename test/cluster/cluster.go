//go:build cluster

package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cosmount/cosmount/internal/testproc"
)

// NodeName is the name of the suite's only node.
const NodeName = "cosmount-e2e-node"

// PauseImage is the sandbox image containerd is told to use; the suite
// imports a busybox image under this name.
const PauseImage = "registry.k8s.io/pause:3.10"

// Options say where a cluster lives and what it runs.
type Options struct {
	Work    string // throwaway directory; everything the cluster writes is under it
	Logs    string // daemon logs (kept after teardown)
	KubeBin string // kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
}

// Cluster is a running single-node Kubernetes cluster.
type Cluster struct {
	opts       Options
	procs      *procs
	pki        *pki
	APIServer  string // https://127.0.0.1:PORT, also the service-account issuer
	Admin      string // admin kubeconfig
	Client     kubernetes.Interface
	KubeletDir string
	Containerd string // containerd socket
	etcd       string
	kubelet    *testproc.Process
	apiserver  *testproc.Process
}

// freePort asks the kernel for an unused loopback port. Another process
// could take it before the daemon binds it; on this machine that window
// has not mattered, and every daemon is checked to be alive afterwards.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// Start brings up etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd and kubelet, in that order, each checked
// healthy before the next starts.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c := &Cluster{opts: opts, procs: &procs{work: opts.Work, logs: opts.Logs}}
	for _, d := range []string{opts.Logs, filepath.Join(opts.Work, "etcd"), filepath.Join(opts.Work, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return c, err
		}
	}
	var err error
	if c.pki, err = newPKI(filepath.Join(opts.Work, "pki")); err != nil {
		return c, err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"bootstrap objects", c.bootstrap},
		{"kube-controller-manager and kube-scheduler", c.startControllers},
		{"containerd", c.startContainerd},
		{"kubelet", c.startKubelet},
	}
	for _, s := range steps {
		start := time.Now()
		logStep("starting %s", s.name)
		if err := s.fn(ctx); err != nil {
			return c, fmt.Errorf("%s: %w", s.name, err)
		}
		logStep("%s ready after %.1fs", s.name, time.Since(start).Seconds())
	}
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	p, err := c.procs.start("etcd", "etcd", []string{
		"--name=e2e",
		"--data-dir=" + filepath.Join(c.opts.Work, "etcd"),
		"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=e2e=" + peer,
		// A throwaway cluster needs no durability; fsync is the slowest part of etcd on a busy disk.
		"--unsafe-no-fsync",
	})
	if err != nil {
		return err
	}
	c.etcd = client
	return waitFor(ctx, "etcd health", time.Minute, []*testproc.Process{p}, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, client+"/health")
	})
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	c.APIServer = fmt.Sprintf("https://127.0.0.1:%d", port)
	serving, servingKey, err := c.pki.issue("apiserver", "kube-apiserver", nil,
		[]string{"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		return err
	}
	kubeletClient, kubeletClientKey, err := c.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil)
	if err != nil {
		return err
	}
	saPub, saKey, err := c.pki.serviceAccountKey()
	if err != nil {
		return err
	}
	if c.Admin, err = c.pki.kubeconfig("admin", c.APIServer, "e2e-admin", "system:masters"); err != nil {
		return err
	}
	p, err := c.procs.start("kube-apiserver", filepath.Join(c.opts.KubeBin, "kube-apiserver"), []string{
		"--etcd-servers=" + c.etcd,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.opts.Work, "pki", "apiserver-certs"),
		"--tls-cert-file=" + serving, "--tls-private-key-file=" + servingKey,
		"--client-ca-file=" + c.pki.CAFile(),
		"--kubelet-client-certificate=" + kubeletClient, "--kubelet-client-key=" + kubeletClientKey,
		"--service-account-issuer=" + c.APIServer,
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// No other API server instance will ever appear; without this it
		// keeps trying to publish itself as the "kubernetes" service endpoint.
		"--endpoint-reconciler-type=none",
		// The node never becomes Ready (no CNI, see README): without this
		// admission plugin it is never tainted not-ready, so the scheduler
		// places host-network pods on it.
		"--disable-admission-plugins=TaintNodesByCondition",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	})
	if err != nil {
		return err
	}
	c.apiserver = p
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Admin)
	if err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	hc, err := c.adminHTTPClient()
	if err != nil {
		return err
	}
	return waitFor(ctx, "kube-apiserver /readyz", 3*time.Minute, []*testproc.Process{p}, func(ctx context.Context) error {
		return httpOK(ctx, hc, c.APIServer+"/readyz")
	})
}

// adminHTTPClient is an HTTP client with the admin identity, for the raw
// health endpoints.
func (c *Cluster) adminHTTPClient() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.pki.dir, "admin.crt"), filepath.Join(c.pki.dir, "admin.key"))
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(c.pki.CAFile())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

// bootstrap creates what the suite needs before anything else runs: the
// issuer discovery documents readable without credentials (as on clusters
// whose issuer IAM trusts), so the emulator's IAM can fetch the JWKS.
func (c *Cluster) bootstrap(ctx context.Context) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-service-account-issuer-discovery-public"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:unauthenticated"}},
	}
	return waitFor(ctx, "issuer discovery binding", time.Minute, []*testproc.Process{c.apiserver}, func(ctx context.Context) error {
		_, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

func (c *Cluster) startControllers(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	// With --use-service-account-credentials=false every controller acts as
	// kube-controller-manager itself, which therefore needs full rights.
	kcmConfig, err := c.pki.kubeconfig("kube-controller-manager", c.APIServer, "system:kube-controller-manager", "system:masters")
	if err != nil {
		return err
	}
	schedConfig, err := c.pki.kubeconfig("kube-scheduler", c.APIServer, "system:kube-scheduler")
	if err != nil {
		return err
	}
	kcm, err := c.procs.start("kube-controller-manager", filepath.Join(c.opts.KubeBin, "kube-controller-manager"), []string{
		"--kubeconfig=" + kcmConfig,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[0]),
		"--leader-elect=false",
		// The node-lifecycle controller would mark the CNI-less node
		// unreachable and evict its pods after five minutes.
		"--controllers=*,-node-lifecycle-controller",
		"--root-ca-file=" + c.pki.CAFile(),
		"--service-account-private-key-file=" + filepath.Join(c.pki.dir, "sa.key"),
		"--use-service-account-credentials=false",
	})
	if err != nil {
		return err
	}
	sched, err := c.procs.start("kube-scheduler", filepath.Join(c.opts.KubeBin, "kube-scheduler"), []string{
		"--kubeconfig=" + schedConfig,
		"--authentication-kubeconfig=" + schedConfig, "--authorization-kubeconfig=" + schedConfig,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[1]),
		"--leader-elect=false",
	})
	if err != nil {
		return err
	}
	// The service-account controller making "default" in kube-system shows
	// the controller manager is working.
	return waitFor(ctx, "default service account from kube-controller-manager", 3*time.Minute, []*testproc.Process{kcm, sched, c.apiserver}, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts("kube-system").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	dir := filepath.Join(c.opts.Work, "containerd")
	for _, d := range []string{dir, filepath.Join(c.opts.Work, "cni", "bin"), filepath.Join(c.opts.Work, "cni", "net.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := recordPreexistingCgroups(c.opts.Work); err != nil {
		return err
	}
	c.Containerd = filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  # This VM lacks CAP_SYS_RESOURCE: without it every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Containerd, c.Containerd+".ttrpc",
		filepath.Join(dir, "opt"), PauseImage, filepath.Join(c.opts.Work, "cni", "bin"), filepath.Join(c.opts.Work, "cni", "net.d"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return err
	}
	p, err := c.procs.start("containerd", "containerd", []string{"--config=" + cfgPath})
	if err != nil {
		return err
	}
	return waitFor(ctx, "containerd socket", time.Minute, []*testproc.Process{p}, func(ctx context.Context) error {
		_, err := c.ctr(ctx, "version")
		return err
	})
}

// ctr runs Debian's ctr against our containerd, in the CRI namespace.
func (c *Cluster) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.Containerd, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ImportImage imports an OCI archive into containerd.
func (c *Cluster) ImportImage(ctx context.Context, archive string) error {
	_, err := c.ctr(ctx, "image", "import", archive)
	return err
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	c.KubeletDir = filepath.Join(c.opts.Work, "kubelet")
	if err := os.MkdirAll(c.KubeletDir, 0o755); err != nil {
		return err
	}
	// The node plugin mounts under the kubelet directory inside its
	// container (Bidirectional propagation); the mounts reach the host and
	// the workload containers only if that directory is a shared mount.
	if err := syscall.Mount(c.KubeletDir, c.KubeletDir, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount kubelet dir: %w", err)
	}
	if err := syscall.Mount("", c.KubeletDir, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("make kubelet dir rshared: %w", err)
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	kubeconfig, err := c.pki.kubeconfig("kubelet", c.APIServer, "system:node:"+NodeName, "system:nodes")
	if err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
containerRuntimeEndpoint: unix://%s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %s
authorization:
  mode: AlwaysAllow
# cgroups are v1 on this machine; cgroupfs because no systemd manages them.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
# The suite's images are imported, never pulled: garbage collection and
# disk-pressure eviction must never remove them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
podLogsDir: %s
volumePluginDir: %s
# requiresRepublish: kubelet calls NodePublishVolume again on every pod
# sync; a short period gives scenario 6 several rounds in a minute.
syncFrequency: 10s
fileCheckFrequency: 10s
serializeImagePulls: false
`, ports[0], ports[1], c.Containerd, c.pki.CAFile(), filepath.Join(c.opts.Work, "pod-logs"), filepath.Join(c.opts.Work, "volume-plugins"))
	cfgPath := filepath.Join(c.opts.Work, "kubelet-config.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return err
	}
	p, err := c.procs.start("kubelet", filepath.Join(c.opts.KubeBin, "kubelet"), []string{
		"--config=" + cfgPath,
		"--kubeconfig=" + kubeconfig,
		"--root-dir=" + c.KubeletDir,
		"--cert-dir=" + filepath.Join(c.opts.Work, "pki", "kubelet-serving"),
		"--hostname-override=" + NodeName,
		"--node-ip=127.0.0.1",
		"--v=2",
	})
	if err != nil {
		return err
	}
	c.kubelet = p
	return waitFor(ctx, "node registered by kubelet", 3*time.Minute, []*testproc.Process{p, c.apiserver}, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		return err
	})
}

// PodLogsDir is where kubelet writes container logs.
func (c *Cluster) PodLogsDir() string { return filepath.Join(c.opts.Work, "pod-logs") }

// Stop deletes every pod so the node plugin unpublishes its volumes, then
// stops the daemons; teardown (run by the caller) removes what is left.
func (c *Cluster) Stop(ctx context.Context) {
	if c.Client != nil && c.kubelet != nil {
		if !c.kubelet.Exited() {
			c.drainPods(ctx)
		}
	}
	c.procs.stopAll(20 * time.Second)
}

// drainPods deletes workload pods first and the plugin last (its pods
// must unpublish the workloads' volumes), waiting for each group to go.
func (c *Cluster) drainPods(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		logStep("teardown: listing pods: %v", err)
		return
	}
	var workloads, system []corev1.Pod
	for _, p := range pods.Items {
		if p.Namespace == "kube-system" {
			system = append(system, p)
		} else {
			workloads = append(workloads, p)
		}
	}
	// Controllers would recreate the plugin's pods; remove them first.
	dsets, _ := c.Client.AppsV1().DaemonSets("kube-system").List(ctx, metav1.ListOptions{})
	for _, d := range dsets.Items {
		_ = c.Client.AppsV1().DaemonSets(d.Namespace).Delete(ctx, d.Name, metav1.DeleteOptions{})
	}
	deps, _ := c.Client.AppsV1().Deployments("kube-system").List(ctx, metav1.ListOptions{})
	for _, d := range deps.Items {
		_ = c.Client.AppsV1().Deployments(d.Namespace).Delete(ctx, d.Name, metav1.DeleteOptions{})
	}
	for _, group := range [][]corev1.Pod{workloads, system} {
		for _, p := range group {
			_ = c.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{})
		}
		for _, p := range group {
			err := waitFor(ctx, "pod "+p.Namespace+"/"+p.Name+" gone", 2*time.Minute, nil, func(ctx context.Context) error {
				_, err := c.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("still there")
			})
			if err != nil {
				logStep("teardown: %v", err)
			}
		}
	}
	logStep("teardown: all pods deleted")
}

func httpOK(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
