package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/klog/v2"

	"github.com/cosmount/cosmount/pkg/mounterapi"
)

// Metrics are the plugin's RPC metrics.
type Metrics struct {
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// NewMetrics registers the RPC metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cosmount_csi_rpc_total",
			Help: "CSI RPCs handled, by method and gRPC code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cosmount_csi_rpc_duration_seconds",
			Help:    "CSI RPC latency by method.",
			Buckets: []float64{0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 60, 120},
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Server serves the CSI services on a unix socket.
type Server struct {
	identity   *IdentityService
	controller *ControllerService // nil in node mode
	node       *NodeService       // nil in controller mode
	metrics    *Metrics           // may be nil
}

// NewServer wires the services; controller or node may be nil.
func NewServer(identity *IdentityService, controller *ControllerService, node *NodeService, metrics *Metrics) *Server {
	return &Server{identity: identity, controller: controller, node: node, metrics: metrics}
}

// Serve listens on endpoint and serves until ctx ends, then stops gracefully.
func (s *Server) Serve(ctx context.Context, endpoint string) error {
	sock, err := mounterapi.SocketPath(endpoint)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		return err
	}
	// A socket left by a previous run would make Listen fail.
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	csi.RegisterIdentityServer(g, s.identity)
	if s.controller != nil {
		csi.RegisterControllerServer(g, s.controller)
	}
	if s.node != nil {
		csi.RegisterNodeServer(g, s.node)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		g.GracefulStop()
	}()
	klog.InfoS("Serving CSI", "endpoint", sock, "controller", s.controller != nil, "node", s.node != nil)
	err = g.Serve(lis)
	<-stopped
	os.Remove(sock)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// intercept logs every call with secrets and pod tokens stripped, converts
// plain errors to gRPC codes (toStatus) and records metrics.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := path.Base(info.FullMethod)
	start := time.Now()
	// Checked first: sanitizing clones the message, not worth it unlogged.
	if v := klog.V(3); v.Enabled() {
		v.InfoS("CSI call", "method", method, "request", sanitize(req))
	}
	resp, err := handler(ctx, req)
	err = toStatus(err)
	code := status.Code(err)
	elapsed := time.Since(start)
	if s.metrics != nil {
		s.metrics.calls.WithLabelValues(method, code.String()).Inc()
		s.metrics.latency.WithLabelValues(method).Observe(elapsed.Seconds())
	}
	if err != nil {
		klog.ErrorS(err, "CSI call failed", "method", method, "code", code.String(), "duration", elapsed, "request", sanitize(req))
	} else {
		klog.V(2).InfoS("CSI call done", "method", method, "duration", elapsed)
		if v := klog.V(5); v.Enabled() {
			v.InfoS("CSI response", "method", method, "response", sanitize(resp))
		}
	}
	return resp, err
}

const strippedValue = "***stripped***"

// sanitize renders a request or response for logs: csi_secret fields go
// through protosanitizer, and the pod token map that kubelet puts into the
// (not secret-marked) volume context is replaced as well.
func sanitize(msg any) fmt.Stringer {
	if m, ok := msg.(proto.Message); ok && m != nil {
		c := proto.Clone(m)
		stripTokens(c.ProtoReflect())
		msg = c
	}
	return protosanitizer.StripSecrets(msg)
}

// stripTokens replaces the serviceAccount.tokens entry of every
// map<string,string> field in m and its sub-messages.
func stripTokens(m protoreflect.Message) {
	var subs []protoreflect.Message
	var maps []protoreflect.Map
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.StringKind && fd.MapKey().Kind() == protoreflect.StringKind {
				maps = append(maps, v.Map())
			} else if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					subs = append(subs, mv.Message())
					return true
				})
			}
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				subs = append(subs, l.Get(i).Message())
			}
		case fd.Kind() == protoreflect.MessageKind:
			subs = append(subs, v.Message())
		}
		return true
	})
	key := protoreflect.ValueOfString(keyTokens).MapKey()
	for _, mp := range maps {
		if mp.Has(key) {
			mp.Set(key, protoreflect.ValueOfString(strippedValue))
		}
	}
	for _, sub := range subs {
		stripTokens(sub)
	}
}

// ServeMetrics serves reg's metrics at http://addr/metrics until ctx ends.
func ServeMetrics(ctx context.Context, addr string, reg prometheus.Gatherer) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	klog.InfoS("Serving metrics", "address", lis.Addr().String())
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
