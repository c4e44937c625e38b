package mounterapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// codecName is the gRPC content-subtype of this API: application/grpc+cosmount-json.
const codecName = "cosmount-json"

// jsonCodec encodes messages as JSON.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return codecName }

func init() { encoding.RegisterCodec(jsonCodec{}) }

// Service is what a mounter implements; *Client implements it too, so the
// node plugin is written against this interface and tested with the real
// mounter in process or over a socket alike.
type Service interface {
	Publish(ctx context.Context, req *PublishRequest) (*PublishResponse, error)
	Unpublish(ctx context.Context, req *UnpublishRequest) (*UnpublishResponse, error)
	Status(ctx context.Context, req *StatusRequest) (*VolumeStatus, error)
	List(ctx context.Context, req *ListRequest) (*ListResponse, error)
	Version(ctx context.Context, req *VersionRequest) (*VersionResponse, error)
}

// handler adapts one Service method to grpc.MethodDesc.
func handler[Req any, Resp any](call func(Service, context.Context, *Req) (*Resp, error), name string) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			req := new(Req)
			if err := dec(req); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "decoding %s request: %v", name, err)
			}
			if icpt == nil {
				return call(srv.(Service), ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + ServiceName + "/" + name}
			return icpt(ctx, req, info, func(ctx context.Context, r any) (any, error) {
				return call(srv.(Service), ctx, r.(*Req))
			})
		},
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*Service)(nil),
	Methods: []grpc.MethodDesc{
		handler(Service.Publish, "Publish"),
		handler(Service.Unpublish, "Unpublish"),
		handler(Service.Status, "Status"),
		handler(Service.List, "List"),
		handler(Service.Version, "Version"),
	},
	Metadata: "pkg/mounterapi",
}

// Register adds svc to s.
func Register(s *grpc.Server, svc Service) { s.RegisterService(&serviceDesc, svc) }

// SocketPath extracts the path of a unix endpoint: unix:///p, unix:/p or /p.
func SocketPath(endpoint string) (string, error) {
	p := endpoint
	switch {
	case strings.HasPrefix(p, "unix://"):
		p = strings.TrimPrefix(p, "unix://")
	case strings.HasPrefix(p, "unix:"):
		p = strings.TrimPrefix(p, "unix:")
	case strings.Contains(p, "://"):
		return "", fmt.Errorf("endpoint %q: only unix sockets are supported", endpoint)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("endpoint %q: need an absolute socket path", endpoint)
	}
	return p, nil
}

// Listen creates the unix socket at path, mode 0600 (only root, that is
// the node plugin, may call the mounter), replacing a stale socket file.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Client calls a mounter over its unix socket.
type Client struct {
	conn *grpc.ClientConn
	path string
}

var _ Service = (*Client)(nil)

// Dial returns a client of the mounter at endpoint. It does not connect
// yet: the mounter may start after the node plugin, and every call connects
// (or fails with Unavailable naming the socket) on its own.
func Dial(endpoint string) (*Client, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///mounter",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(codecName)),
		// A mounter that restarts comes back within seconds; do not let a
		// long connection backoff outlast it.
		grpc.WithConnectParams(connectParams()),
	)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, path: path}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func call[Resp any](ctx context.Context, c *Client, method string, req any) (*Resp, error) {
	resp := new(Resp)
	err := c.conn.Invoke(ctx, "/"+ServiceName+"/"+method, req, resp)
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && !strings.Contains(st.Message(), "mounter") {
			// Say which process is missing: "connection refused" alone
			// sends people looking at the wrong pod.
			return nil, status.Errorf(codes.Unavailable, "the node's cosmount mounter at %s is not reachable: %s", c.path, st.Message())
		}
		return nil, err
	}
	return resp, nil
}

// Publish implements Service.
func (c *Client) Publish(ctx context.Context, req *PublishRequest) (*PublishResponse, error) {
	return call[PublishResponse](ctx, c, "Publish", req)
}

// Unpublish implements Service.
func (c *Client) Unpublish(ctx context.Context, req *UnpublishRequest) (*UnpublishResponse, error) {
	return call[UnpublishResponse](ctx, c, "Unpublish", req)
}

// Status implements Service.
func (c *Client) Status(ctx context.Context, req *StatusRequest) (*VolumeStatus, error) {
	return call[VolumeStatus](ctx, c, "Status", req)
}

// List implements Service.
func (c *Client) List(ctx context.Context, req *ListRequest) (*ListResponse, error) {
	return call[ListResponse](ctx, c, "List", req)
}

// Version implements Service.
func (c *Client) Version(ctx context.Context, req *VersionRequest) (*VersionResponse, error) {
	return call[VersionResponse](ctx, c, "Version", req)
}

// WaitReady calls Version until it answers or ctx ends, and checks the API
// version.
func (c *Client) WaitReady(ctx context.Context) (*VersionResponse, error) {
	for {
		v, err := c.Version(ctx, &VersionRequest{})
		if err == nil {
			if v.API != APIVersion {
				return v, fmt.Errorf("the mounter speaks API %s, this plugin %s", v.API, APIVersion)
			}
			return v, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func connectParams() grpc.ConnectParams {
	p := grpc.ConnectParams{MinConnectTimeout: 5 * time.Second}
	p.Backoff.BaseDelay = 200 * time.Millisecond
	p.Backoff.Multiplier = 1.6
	p.Backoff.Jitter = 0.2
	p.Backoff.MaxDelay = 3 * time.Second
	return p
}
