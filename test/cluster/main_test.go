//go:build cluster

package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// env is the cluster every scenario shares: bringing one up takes a
// minute or more, so it is started once in TestMain.
var env struct {
	c   *Cluster
	emu *Emulator
	ep  Endpoints
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runSuite(m))
}

// repoRoot is the module root, two levels above this package.
func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

func runSuite(m *testing.M) (code int) {
	work := os.Getenv("COSMOUNT_E2E_WORKDIR")
	if os.Getenv("COSMOUNT_E2E_TEARDOWN_ONLY") == "1" {
		// run.sh's trap: clean up after a run that may have died.
		if err := teardown(work, true); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
			return 1
		}
		return 0
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the cluster suite runs kubelet and containerd: it must run as root")
		return 1
	}
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("/var/tmp", "cosmount-e2e."); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	logs := os.Getenv("COSMOUNT_E2E_LOGS")
	if logs == "" {
		logs = work + "-logs"
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	logStep("work directory %s, daemon logs in %s", work, logs)
	c, err := setUp(ctx, work, logs)
	defer func() {
		defer printTimings()
		err := timed("teardown", func() (string, error) {
			if c != nil {
				c.Stop(context.Background())
			}
			return "", teardown(work, true)
		})
		if err != nil {
			logStep("teardown failed: %v", err)
			code = 1
			return
		}
		logStep("teardown: no process, mount or cgroup of this run is left; logs kept in %s", logs)
	}()
	if err != nil {
		logStep("setup failed: %v", err)
		if c != nil && c.Client != nil {
			logStep("kube-system pods: %s", c.podSummary(context.Background(), "kube-system"))
			if n, err := c.Client.CoreV1().Nodes().Get(context.Background(), NodeName, metav1.GetOptions{}); err == nil {
				logStep("node taints: %v, allocatable: %v", n.Spec.Taints, n.Status.Allocatable)
			}
		}
		return 1
	}
	logStep("cluster ready; running scenarios")
	// Tests do not watch ctx: on SIGINT or SIGTERM tear down right away and
	// exit, rather than let the scenarios run on.
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			logStep("interrupted: tearing down")
			c.Stop(context.Background())
			if err := teardown(work, true); err != nil {
				logStep("teardown failed: %v", err)
			}
			os.Exit(130)
		case <-finished:
		}
	}()
	_ = timed("scenarios", func() (string, error) {
		code = m.Run()
		if code != 0 {
			return "some failed", nil
		}
		return "", nil
	})
	return code
}

func setUp(ctx context.Context, work, logs string) (c *Cluster, err error) {
	if err := timed("Debian packages (containerd, runc, etcd, busybox, fuse3)", func() (string, error) { return ensurePackages(ctx) }); err != nil {
		return nil, err
	}
	kubeBin := os.Getenv("COSMOUNT_E2E_KUBE_BIN")
	if kubeBin == "" {
		err := timed("Kubernetes binaries and csi-provisioner (build-binaries.sh)", func() (string, error) {
			cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(), "test", "cluster", "build-binaries.sh"))
			cmd.Stderr = os.Stderr // it says what it builds while it builds
			out, err := cmd.Output()
			if err != nil {
				return "", fmt.Errorf("build-binaries.sh: %w", err)
			}
			kubeBin = strings.TrimSpace(string(out))
			return kubeBin, nil
		})
		if err != nil {
			return nil, err
		}
	}
	productBin := os.Getenv("COSMOUNT_E2E_PRODUCT_BIN")
	if productBin == "" {
		productBin = filepath.Join(work, "bin")
		err := timed("cosmount, cosmount-csi, cosmount-emulator and the sidecar stand-in (go build)", func() (string, error) {
			return "", buildProduct(ctx, productBin)
		})
		if err != nil {
			return nil, err
		}
	}

	err = timed("cluster: etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet", func() (string, error) {
		c, err = Start(ctx, Options{Work: work, Logs: logs, KubeBin: kubeBin})
		return "", err
	})
	if err != nil {
		return c, err
	}
	manifests := os.Getenv("COSMOUNT_E2E_MANIFESTS") // e.g. a chart rendered with other values
	if manifests == "" {
		manifests = filepath.Join(repoRoot(), "deploy", "kubernetes")
	}
	man, err := LoadManifests(manifests, c.KubeletDir)
	if err != nil {
		return c, err
	}
	ep := Endpoints{APIServer: c.APIServer, StateDir: filepath.Join(work, "hostpath")}
	emu, err := c.StartEmulator(ctx, filepath.Join(productBin, "cosmount-emulator"), man.ControllerSA)
	if err != nil {
		return c, err
	}
	ep.IAM, ep.COS = emu.IAM, emu.COS
	if err := man.Adapt(ep); err != nil {
		return c, err
	}
	for _, d := range man.Deviations {
		logStep("deviation from deploy/kubernetes: %s", d)
	}
	err = timed("OCI images (busybox, plugin, sidecars, csi-provisioner) into containerd", func() (string, error) {
		return "", c.BuildAndImportImages(ctx, work, ImageSources{
			Busybox:     "/bin/busybox",
			Fusermount:  "/usr/bin/fusermount3",
			ProductBin:  productBin,
			Sidecars:    filepath.Join(productBin, "sidecars"),
			Provisioner: filepath.Join(kubeBin, "csi-provisioner"),
		}, man.Images)
	})
	if err != nil {
		return c, err
	}
	err = timed("deploy/kubernetes applied; plugin registered, controller and mounter ready", func() (string, error) {
		if err := c.Apply(ctx, man.Objects); err != nil {
			return "", err
		}
		return "", c.WaitPluginReady(ctx)
	})
	if err != nil {
		return c, err
	}
	env.c = c
	logMounterSetup(ctx, c)
	if err := createWorkloadNamespace(ctx, c); err != nil {
		return c, err
	}
	env.c, env.emu, env.ep = c, emu, ep
	return c, nil
}

// ensurePackages installs the Debian packages the suite runs, if missing,
// and says which it installed.
func ensurePackages(ctx context.Context) (string, error) {
	need := map[string]string{
		"containerd": "containerd", "runc": "runc", "etcd": "etcd-server",
		"/bin/busybox": "busybox-static", "fusermount3": "fuse3", "ctr": "containerd",
	}
	var missing []string
	for cmd, pkg := range need {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = appendUnique(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return "all installed", nil
	}
	logStep("apt-get installing %s", strings.Join(missing, " "))
	if out, err := exec.CommandContext(ctx, "apt-get", "update", "-q").CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get update: %w: %s", err, out)
	}
	args := append([]string{"install", "-y", "-q", "--no-install-recommends"}, missing...)
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get install: %w: %s", err, out)
	}
	return "installed " + strings.Join(missing, " "), nil
}

// buildProduct builds the plugin, the FUSE server, the emulator and the
// sidecar stand-in as static binaries into dir.
func buildProduct(ctx context.Context, dir string) error {
	start := time.Now()
	root := repoRoot()
	builds := []struct{ dir, out string }{
		{root, ""},
		{filepath.Join(root, "test", "cluster", "tools", "sidecars"), filepath.Join(dir, "sidecars")},
	}
	for _, b := range builds {
		args := []string{"build", "-trimpath", "-o"}
		if b.out == "" {
			args = append(args, dir+"/", "./cmd/cosmount", "./cmd/cosmount-csi", "./cmd/cosmount-emulator")
		} else {
			args = append(args, b.out, ".")
		}
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = b.dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s in %s: %w: %s", strings.Join(args, " "), b.dir, err, out)
		}
	}
	logStep("built cosmount, cosmount-csi, cosmount-emulator and the sidecar stand-in in %.1fs", time.Since(start).Seconds())
	return nil
}

func createWorkloadNamespace(ctx context.Context, c *Cluster) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: WorkloadNS}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, sa := range []string{WriterSA, IntruderSA} {
		obj := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: WorkloadNS}}
		if _, err := c.Client.CoreV1().ServiceAccounts(WorkloadNS).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	logStep("namespace %s with service accounts %s (trusted) and %s (trusted by no profile)", WorkloadNS, WriterSA, IntruderSA)
	return nil
}

// logMounterSetup shows how the mounter confines its servers on this node
// (a memory cgroup each, or only the Go runtime's limit).
func logMounterSetup(ctx context.Context, c *Cluster) {
	pods, err := c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=mounter"})
	if err != nil || len(pods.Items) == 0 {
		return
	}
	for _, line := range strings.Split(containerLogs("kube-system", pods.Items[0].Name, "mounter"), "\n") {
		if strings.Contains(line, "cgroup") || strings.Contains(line, "mounter serving") {
			logStep("mounter: %s", strings.TrimSpace(line))
		}
	}
}
